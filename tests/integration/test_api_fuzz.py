"""Property-based fuzzing of the whole /v1 API with schemathesis, from /openapi.json.

Every operation gets generated requests (valid and invalid: wrong types, huge numbers,
odd strings, missing fields), each sent three times: with an admin key, an auditor key
and no key. No answer may be a 5xx, and every non-2xx JSON answer must have the
broker's error shape ``{"error": {"code", "message", "details"}}``.

The database holds a real connection with delivered and blocked transfers (made over
real sockets with the sandbox provider), so list, cursor and export paths run on data;
the requests themselves go to the app in process (ASGI).

Bounded and reproducible: few examples per operation, derandomized, no deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector, sandbox_setup
from broker.flows.keys import create_api_key
from broker.settings import Settings
from broker.web.app import create_app
from tests.conftest import LiveServer, free_socket, fresh_database
from tests.integration.conftest import Browser, Stack, connect

# Examples per operation and per key; about 30 operations x 3 keys: well under
# three minutes on two cores.
MAX_EXAMPLES = 60

UPDATE = {"work_item": {"id": "W-1", "title": "Ship it"}, "author": {"name": "Ann"}}


@dataclass
class FuzzTarget:
    app: object
    keys: dict[str, str | None]


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    from broker.runtime import build_runtime

    tmp = tmp_path_factory.mktemp("fuzz")
    mp = pytest.MonkeyPatch()
    mp.setenv("BROKER_SANDBOX_CLIENT_SECRET", "sandbox-test-secret")
    db = fresh_database(tmp)
    broker_sock, sandbox_sock = free_socket(), free_socket()
    broker_url = f"http://127.0.0.1:{broker_sock.getsockname()[1]}"
    sandbox_url = f"http://127.0.0.1:{sandbox_sock.getsockname()[1]}"
    settings_ = Settings(
        home=tmp / "home",
        database_url=next(db),
        base_url=broker_url,
        return_url_allowlist="https://app.example.com/integrations",
    )
    provider, sandbox_app = sandbox_setup(settings_.callback_url)
    rt = build_runtime(
        settings_,
        builtins=[sandbox_connector(default_catalog(), sandbox_url)],
        plugins=[],
        upgrade=True,
    )
    rt.sleep = lambda _s: None
    _, admin = create_api_key(rt.engine, role="admin")
    _, auditor = create_api_key(rt.engine, role="auditor")
    app = create_app(rt)
    sandbox = LiveServer(sandbox_app, sandbox_sock).start()
    broker = LiveServer(app, broker_sock).start()
    try:
        stack = Stack(rt, broker, sandbox, provider, admin, auditor, [])
        browser = Browser()
        try:
            connection_id = connect(stack, browser, optional=["user.name"])
        finally:
            browser.close()
        with stack.api() as api:
            for mode in ("drop", "reject"):
                api.post(
                    f"/v1/connections/{connection_id}/transfers",
                    json={"action": "post_message", "data": UPDATE, "mode": mode},
                )
        yield FuzzTarget(app, {"admin": admin, "auditor": auditor, "none": None})
    finally:
        broker.stop()
        sandbox.stop()
        rt.close()
        db.close()
        mp.undo()


# Values that crashed the broker once, mixed into what schemathesis generates for every
# string and integer (query, path and body): U+0000 (PostgreSQL refuses it), integers past
# 32 and 64 bits, times that leave datetime's range once in UTC, a naive time, a forged
# cursor, a number past float range. (Lone surrogates cannot be sent as schemathesis
# strings: test_bad_input.py sends them in raw bodies.)
NASTY_STRINGS = [
    "\x00",
    "conn_\x00",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "2026-01-01T00:00:00",
    str(2**31),
    str(2**63),
    "WyI5OTk5LTEyLTMxVDIzOjU5OjU5LTIzOjU5IiwieCJd",
    "1e400",
]
NASTY_INTEGERS = [2**31, 2**63, -(2**63) - 1, 10**30]
NASTY_TIMES = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-01-01T00:00:00"]
NASTY_CURSORS = [
    "WyI5OTk5LTEyLTMxVDIzOjU5OjU5LTIzOjU5IiwieCJd",  # ["9999-12-31T23:59:59-23:59","x"]
    "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwieCJd",  # ["2026-01-01T00:00:00","x"]: no zone
    "WzEsMl0",  # [1,2]
]
# Nullable parameters (``anyOf``) do not take the type-wide dictionaries: bind by name.
_BY_NAME = {
    **{f"query.{n}": "nasty-times" for n in ("since", "until")},
    "query.cursor": "nasty-cursors",
    **{f"query.{n}": "nasty-strings" for n in ("user", "connector", "category", "status")},
    **{
        f"path.{n}": "nasty-strings"
        for n in ("connection_id", "consent_id", "transfer_id", "user_id", "connector_id")
    },
}
FUZZ_CONFIG = {
    "dictionaries": {
        "nasty-strings": {"values": NASTY_STRINGS},
        "nasty-integers": {"values": NASTY_INTEGERS},
        "nasty-times": {"values": NASTY_TIMES},
        "nasty-cursors": {"values": NASTY_CURSORS},
    },
    "parameters": {key: {"dictionary": d, "probability": 0.3} for key, d in _BY_NAME.items()},
    "generation": {
        "dictionaries": {
            "string": {"dictionary": "nasty-strings", "probability": 0.2},
            "integer": {"dictionary": "nasty-integers", "probability": 0.2},
        }
    },
}


@pytest.fixture(scope="module")
def api_schema(fuzz_target: FuzzTarget) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(FUZZ_CONFIG)
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_target.app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


def _check(case: schemathesis.Case, who: str, response: schemathesis.Response) -> None:
    where = f"{case.method} {case.formatted_path} as {who}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    if response.status_code < 400:
        return
    if "json" not in (response.headers.get("content-type") or [""])[0]:
        return
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"{where}: {response.text[:500]}"
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, f"{where}: {response.text[:500]}"
    assert isinstance(error["code"], str) and isinstance(error["message"], str), where
    assert isinstance(error["details"], dict), where


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_every_error_in_shape(
    case: schemathesis.Case, fuzz_target: FuzzTarget
) -> None:
    for who, key in fuzz_target.keys.items():
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        _check(case, who, case.call(headers=headers))
