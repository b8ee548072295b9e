"""No input makes a 500 (issue 9, point 5): each input below crashed the broker once.

Over real sockets, against a broker and the sandbox provider on loopback. Each bad
input gets the error shape (API) or a clear page (browser routes), and the server keeps
the client's connection after an unexpected error.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi import Request
from sqlmodel import Session, select

from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector
from broker.flows.keys import create_api_key
from broker.runtime import build_runtime
from broker.store.models import Connection, ConnectionToken
from broker.web.app import create_app
from tests.conftest import LiveServer, free_socket
from tests.integration.conftest import Browser, Stack, connect, form_action, form_fields
from tests.integration.test_audit_console import sign_in

INT32 = str(2**31)  # one past PostgreSQL's INTEGER (the type of seq and checkpoint ids)
INT64 = str(2**63)  # one past SQLite's INTEGER
PAST_9999 = "9999-12-31T23:59:59-23:59"  # year 10000 once in UTC
BEFORE_1 = "0001-01-01T00:00:00+23:59"  # year 0 once in UTC


def _cursor(created: object, tid: object = "trf_x") -> str:
    raw = json.dumps([created, tid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def assert_error_shape(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


QUERIES = [
    # integers past what SQLite (and PostgreSQL BIGINT) can hold: OverflowError before
    ("/v1/audit/log", {"after": INT64}),
    ("/v1/audit/log", {"after": INT32}),
    ("/v1/audit/checkpoints", {"after_id": INT64}),
    ("/v1/audit/checkpoints", {"after_id": INT32}),
    # aware datetimes that leave datetime's range once in UTC: OverflowError before
    ("/v1/transfers", {"since": PAST_9999}),
    ("/v1/transfers", {"until": BEFORE_1}),
    ("/v1/transfers/export", {"since": PAST_9999}),
    # cursors naming such a time, or a time without a zone: 500 before
    ("/v1/transfers", {"cursor": _cursor(PAST_9999)}),
    ("/v1/transfers", {"cursor": _cursor("2026-01-01T00:00:00")}),
]


@pytest.mark.parametrize(("path", "params"), QUERIES, ids=[f"{p}?{q}" for p, q in QUERIES])
def test_bad_query_is_422_in_the_error_shape(stack: Stack, path: str, params: dict) -> None:
    with stack.api(stack.auditor_key) as api:
        resp = api.get(path, params=params)
    error = assert_error_shape(resp, 422, "invalid_input")
    assert "internal" not in error["message"]


@pytest.mark.parametrize(
    "path",
    ["/v1/connections/%00", "/v1/consents/%00/receipt", "/v1/transfers?user=%00"],
)
def test_nul_in_path_or_query_is_422(stack: Stack, path: str) -> None:
    """PostgreSQL text columns refuse U+0000: a 500 there before (fuzzing found it)."""
    with stack.api() as api:
        resp = api.get(path)
    assert "U+0000" in assert_error_shape(resp, 422, "invalid_input")["message"]


def test_naive_datetime_filter_is_refused_not_read_as_utc(stack: Stack) -> None:
    """The API refuses a time without a zone rather than guess one (docs/api.md)."""
    with stack.api(stack.auditor_key) as api:
        resp = api.get("/v1/transfers", params={"since": "2026-01-01T00:00:00"})
    error = assert_error_shape(resp, 422, "invalid_input")
    assert error["details"] == {"field": "since"}
    assert "time zone" in error["message"]


def test_console_shows_out_of_range_times_as_a_message(stack: Stack, browser: Browser) -> None:
    sign_in(browser, stack)
    page = browser.client.get(f"{stack.url}/audit", params={"since": PAST_9999})
    assert page.status_code == 200, page.text
    assert "out of range" in page.text
    export = browser.client.get(
        f"{stack.url}/audit/export", params={"format": "csv", "until": BEFORE_1}
    )
    assert export.status_code == 422
    assert "out of range" in export.text


BODIES = [
    # 1e400 parses to inf; the payload could not be encoded for sending: 500 before
    (b'{"action":"post_message","data":{"work_item":{"id":1e400}}}', "out of range"),
    # a lone surrogate parses, and cannot be encoded as UTF-8: 500 before
    (b'{"action":"post_message","data":{"work_item":{"title":"\\ud800"}}}', "surrogate"),
    (b'{"action":"post_message","data":{"work_item":{"\\udfff":"x"}}}', "surrogate"),
    # deep nesting parses, then the recursive scope check overflows the stack: 500 before
    (
        b'{"action":"post_message","data":{"work_item":' + b'{"a":' * 900 + b"1" + b"}" * 902,
        "deeper than",
    ),
]


@pytest.mark.parametrize(("body", "says"), BODIES, ids=["inf", "surrogate", "key", "deep"])
def test_bad_transfer_body_is_422(stack: Stack, browser: Browser, body: bytes, says: str) -> None:
    connection_id = connect(stack, browser, optional=[])
    with stack.api() as api:
        resp = api.post(
            f"/v1/connections/{connection_id}/transfers",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert says in assert_error_shape(resp, 422, "invalid_input")["message"]
        listed = api.get("/v1/transfers").json()["transfers"]
    assert listed == []  # nothing recorded, nothing sent
    assert stack.provider.received == []


def test_nul_in_a_transfer_body_is_422(stack: Stack, browser: Browser) -> None:
    """PostgreSQL text and JSON columns refuse U+0000 (a 500 there before)."""
    connection_id = connect(stack, browser, optional=[])
    with stack.api() as api:
        resp = api.post(
            f"/v1/connections/{connection_id}/transfers",
            json={"action": "post\u0000message", "data": {"work_item": {"id": "W-1"}}},
        )
    assert "U+0000" in assert_error_shape(resp, 422, "invalid_input")["message"]


def test_unauthenticated_deeply_nested_settings_are_refused(stack: Stack, browser: Browser) -> None:
    """A forged session token whose settings part is 100 000 ``[``: RecursionError before,
    while parsing it ahead of any session check."""
    session = stack.connect_session()
    page = browser.get(session["url"])
    fields = form_fields(page.text)
    action = form_action(page.text, session["url"])
    nested = base64.urlsafe_b64encode(b"[" * 100_000).decode().rstrip("=")
    for forged in (f"nosuchsession.{nested}", f"nosuchsession.{nested[:3000]}"):
        resp = browser.post(action, data={**fields, "session": forged, "decision": "approve"})
        assert resp.status_code == 400, resp.text[:300]
        assert "session link is not valid" in resp.text
    # the real session is still usable afterwards
    resp = browser.post(action, data={**fields, "decision": "approve"})
    assert resp.status_code == 303


ABSURD_EXPIRES_IN = [10**12, -1, "soon", 1e300, True, "9" * 40]


@pytest.mark.parametrize("expires_in", ABSURD_EXPIRES_IN, ids=str)
def test_absurd_expires_in_is_a_provider_error_page(
    stack: Stack, browser: Browser, expires_in: object
) -> None:
    """``expires_in=10**12`` overflowed the datetime in the callback (a 500) before."""
    session = stack.connect_session(return_url=None)  # the broker's own page, not a redirect
    to_provider = browser.approve(session["url"], [])
    stack.provider.fail_token_endpoint(
        200, body={"access_token": "at-1", "token_type": "Bearer", "expires_in": expires_in}
    )
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    done = browser.get(back.headers["location"])
    assert done.status_code == 400, done.text
    assert "Not connected" in done.text
    assert "The provider could not complete the connection" in done.text
    assert "expires_in" in done.text
    with Session(stack.rt.engine) as db:
        assert db.exec(select(ConnectionToken)).all() == []
        assert all(c.status != "active" for c in db.exec(select(Connection)).all())


class _Boom(RuntimeError):
    pass


@pytest.fixture
def crashing_broker(make_settings) -> Iterator[str]:
    """A broker with two extra routes: one that fails unexpectedly, one that names the
    client's port (so a test sees whether a request came on the same connection)."""
    sock = free_socket()
    settings = make_settings(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    rt = build_runtime(
        settings, builtins=[sandbox_connector(default_catalog(), "http://127.0.0.1:9")],
        plugins=[], upgrade=True,
    )  # fmt: skip
    create_api_key(rt.engine, role="admin")
    app = create_app(rt)

    def boom(token: str | None = None) -> dict:
        raise _Boom(f"the request carried {token}")  # the message may hold a secret

    def peer(request: Request) -> dict:
        return {"port": request.client.port if request.client else None}

    app.add_api_route("/v1/test/boom", boom, methods=["GET"])
    app.add_api_route("/test/boom", boom, methods=["GET"])
    app.add_api_route("/v1/test/peer", peer, methods=["GET"])
    server = LiveServer(app, sock).start()
    try:
        yield server.url
    finally:
        server.stop()
        rt.close()


def test_unexpected_error_keeps_the_connection(
    crashing_broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    with httpx.Client(base_url=crashing_broker, timeout=10) as client:
        first = client.get("/v1/test/peer").json()["port"]
        resp = client.get("/v1/test/boom", params={"token": "tok-123"})
        again = client.get("/v1/test/peer").json()["port"]
        assert again == first, "the 500 closed the keep-alive connection"
        assert resp.headers.get("connection", "").lower() != "close"
        error = assert_error_shape(resp, 500, "internal_error")
        assert "carried" not in resp.text and "tok-123" not in resp.text
        assert "Traceback" not in resp.text
        assert resp.headers["x-content-type-options"] == "nosniff"  # security headers too
        page = client.get("/test/boom")  # a browser route: a page, same connection
        assert page.status_code == 500 and "text/html" in page.headers["content-type"]
        assert client.get("/v1/test/peer").json()["port"] == first
    assert error["message"] == "the broker hit an internal error; it was logged"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "broker.web")
    assert "_Boom" in logged and "/v1/test/boom" in logged
    assert "tok-123" not in logged  # neither the message nor the query string


def test_a_client_that_leaves_mid_body_is_logged_as_a_line_and_records_nothing(
    stack: Stack, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that hangs up before its declared body is complete: one info line for
    the operator (no traceback from the server), and no transfer decided or recorded."""
    import logging
    import socket
    import threading
    from urllib.parse import urlsplit

    from sqlmodel import Session, func, select

    from broker.store.models import Transfer

    connection_id = connect(stack, browser, optional=[], user_id="user-1")
    left = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "left before its request body ended" in record.getMessage():
                left.set()

    seen = Seen()
    logging.getLogger("broker.web").addHandler(seen)
    url = urlsplit(stack.url)
    caplog.set_level(logging.INFO)
    try:
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(
                f"POST /v1/connections/{connection_id}/transfers HTTP/1.1\r\n"
                f"Host: {url.netloc}\r\nAuthorization: Bearer {stack.admin_key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                '{"action": "post_message", "da'.encode()
            )  # and hangs up
        assert left.wait(10), "the server did not see the client leave"
    finally:
        logging.getLogger("broker.web").removeHandler(seen)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text and stack.admin_key not in caplog.text
    with Session(stack.rt.engine) as db:
        assert db.exec(select(func.count()).select_from(Transfer)).one() == 0
    assert stack.provider.received == []
