"""The hot route's fast path (broker.web.fast_route) answers exactly as the framework's
route does: the same requests, sent to the broker with and without it, get the same
statuses, error bodies and headers; and the fast path is the one that ran."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import broker.web.app as web_app
import broker.web.fast_route as fast_route
from broker.web.app import create_app
from tests.conftest import LiveServer, free_socket
from tests.integration.conftest import Browser, Stack, connect

_PAYLOAD = {"work_item": {"id": "W-1", "title": "Ship it"}, "author": {"name": "Ann"}}
_STABLE = ("status", "categories", "field_paths", "dropped", "payload_bytes", "mode")


class _Passthrough:
    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await self.app(scope, receive, send)


@pytest.fixture
def plain(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The same runtime served by an app without the fast path."""
    with monkeypatch.context() as m:
        m.setattr(web_app, "TransferFastPath", _Passthrough)
        app = create_app(stack.rt)
    server = LiveServer(app, free_socket()).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = fast_route.create_transfer

    async def counted(rt, connection_id, request, bearer):  # type: ignore[no-untyped-def]
        calls.append(connection_id)
        return await real(rt, connection_id, request, bearer)

    monkeypatch.setattr(fast_route, "create_transfer", counted)
    return calls


def _requests(stack: Stack, conn: str, tag: str) -> list[tuple[str, dict, bytes]]:
    admin = {"Authorization": f"Bearer {stack.admin_key}", "Content-Type": "application/json"}
    body = httpx.Request(
        "POST", "/", json={"action": "post_message", "mode": "drop", "data": _PAYLOAD}
    ).content
    return [
        (f"/v1/connections/{conn}/transfers", {"Content-Type": "application/json"}, body),
        (f"/v1/connections/{conn}/transfers", {**admin, "Authorization": "Basic eA=="}, body),
        (f"/v1/connections/{conn}/transfers", {**admin, "Authorization": "Bearer brk_no"}, body),
        (
            f"/v1/connections/{conn}/transfers",
            {**admin, "Authorization": f"Bearer {stack.auditor_key}"},
            body,
        ),
        (f"/v1/connections/{conn}/transfers", admin, b'{"action": '),
        (f"/v1/connections/{conn}/transfers", admin, b'{"action": "post_message"}'),
        ("/v1/connections/conn_nope/transfers", admin, body),
        (f"/v1/connections/{conn}/transfers", admin, b"[" * 5000 + b"]" * 5000),
        (f"/v1/connections/{conn}/transfers", admin, body),
        (f"/v1/connections/{conn}/transfers", {**admin, "Prefer": "respond-async"}, body),
        (f"/v1/connections/{conn}/transfers", {**admin, "Idempotency-Key": f"k-{tag}"}, body),
        (f"/v1/connections/{conn}/transfers", {**admin, "Idempotency-Key": f"k-{tag}"}, body),
        (f"/v1/connections/{conn}/transfers/", admin, body),
    ]


def _shape(resp: httpx.Response) -> tuple:
    try:
        data = resp.json()
    except ValueError:
        data = resp.text
    if isinstance(data, dict) and "error" not in data:
        data = (sorted(data), [data[k] for k in _STABLE])
    headers = {
        k: v for k, v in resp.headers.items() if k not in {"date", "content-length", "location"}
    }
    return resp.status_code, data, headers, "location" in resp.headers


def test_the_fast_path_answers_as_the_route_does(
    stack: Stack, browser: Browser, plain: str, fast_calls: list[str]
) -> None:
    conn = connect(stack, browser, optional=["user.name"])
    cases = list(zip(_requests(stack, conn, "fast"), _requests(stack, conn, "plain"), strict=True))
    with (
        httpx.Client(base_url=stack.url, timeout=10) as fast,
        httpx.Client(base_url=plain, timeout=10) as slow,
    ):
        for (path, headers, content), (_, plain_headers, _) in cases:
            a = fast.post(path, headers=headers, content=content)
            b = slow.post(path, headers=plain_headers, content=content)
            assert _shape(a) == _shape(b), (path, headers, content[:40])
            assert a.status_code != 500 and "Traceback" not in a.text
    # Every case on the route's exact path went through the fast path (but the one whose
    # Authorization header is refused before the handler); the trailing "/" did not.
    on_route = [h for (p, h, _), _ in cases if p.endswith("/transfers")]
    assert len(fast_calls) == sum(
        1 for h in on_route if not h.get("Authorization", "").startswith("Basic")
    )


def test_security_headers_and_error_shape_on_the_fast_path(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        resp = http.post("/v1/connections/c/transfers", content=b"{}")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src" in resp.headers["Content-Security-Policy"]
    assert resp.json()["error"]["code"] == "unauthenticated"
