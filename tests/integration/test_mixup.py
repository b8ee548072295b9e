"""Issue 9, point 2: the mix-up defence (RFC 9700 §4.4, RFC 9207), with two OAuth
providers on loopback.

The honest one is the sandbox ("sandbox", Sandbox Co.); the malicious one
("evil", Evil Co.) is a tiny authorization server that, when a user starts a
connection with it, sends the user on to the honest provider's authorize endpoint
with the honest client id and redirect URI but its own ``state``, hoping the
broker will then redeem the honest provider's code at the malicious token
endpoint. Each connector has its own redirect URI, so that answer reaches
``/oauth/callback/sandbox`` for an ``evil`` attempt and is refused. A second
variant checks ``iss`` where the honest provider says it always sends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from sqlmodel import Session, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.core.catalog import default_catalog
from broker.core.connector import Connector, ConnectorSource
from broker.core.errors import InvalidSetting, MissingSetting
from broker.core.manifest import parse_manifest
from broker.demo import SANDBOX_CLIENT_ID, sandbox_manifest, sandbox_setup
from broker.flows.callback import MIX_UP
from broker.runtime import Runtime, build_runtime
from broker.sandbox import SandboxProvider
from broker.store.models import Connection, ConnectionToken, ConsentRecord, OAuthAttempt
from broker.web.app import create_app
from tests.conftest import LiveServer, free_socket
from tests.integration.conftest import RETURN_URL, Browser, query


@dataclass
class Evil:
    """The malicious authorization server's view of the world."""

    honest_authorize: str = ""
    honest_redirect: str = ""
    token_requests: list[dict[str, str]] = field(default_factory=list)


def evil_app(evil: Evil) -> Starlette:
    def authorize(request: Request) -> RedirectResponse:
        # Mix-up: keep the broker's state and PKCE challenge, swap in the honest
        # provider's client id and the broker's redirect URI for the honest provider.
        params = dict(request.query_params)
        params.update(client_id=SANDBOX_CLIENT_ID, redirect_uri=evil.honest_redirect)
        return RedirectResponse(f"{evil.honest_authorize}?{urlencode(params)}", 302)

    async def token(request: Request) -> JSONResponse:
        evil.token_requests.append(dict(await request.form()))
        return JSONResponse({"access_token": "stolen", "token_type": "Bearer"})

    return Starlette(
        routes=[
            Route("/oauth/authorize", authorize),
            Route("/oauth/token", token, methods=["POST"]),
        ]
    )


class AddIss:
    """Wraps the sandbox: its authorization responses carry ``iss`` (RFC 9207)."""

    def __init__(self, app: ASGIApp, issuer: str) -> None:
        self.app, self.issuer = app, issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/oauth/authorize":
            await self.app(scope, receive, send)
            return

        async def send_with_iss(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message["headers"]:
                    if name.lower() == b"location":
                        parts = urlsplit(value.decode())
                        q = [*parse_qsl(parts.query), ("iss", self.issuer)]
                        value = urlunsplit(parts._replace(query=urlencode(q))).encode()
                    headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_iss)


@dataclass
class TwoProviders:
    rt: Runtime
    broker: LiveServer
    honest_url: str
    evil_url: str
    provider: SandboxProvider
    evil: Evil
    admin_key: str

    @property
    def url(self) -> str:
        return self.broker.url

    def connect_session(self, connector: str) -> dict[str, Any]:
        import httpx

        headers = {"Authorization": f"Bearer {self.admin_key}"}
        body = {"user_id": "user-1", "connector": connector, "return_url": RETURN_URL}
        with httpx.Client(base_url=self.url, headers=headers) as api:
            resp = api.post("/v1/connect-sessions", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()


def _connector(raw: dict[str, Any], source: str) -> Connector:
    return Connector(
        parse_manifest(raw, default_catalog(), source=source), ConnectorSource("builtin", source)
    )


def _two_providers(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, *, honest_iss: bool
) -> Iterator[TwoProviders]:
    from broker.flows.keys import create_api_key

    broker_sock, honest_sock, evil_sock = free_socket(), free_socket(), free_socket()
    broker_url = f"http://127.0.0.1:{broker_sock.getsockname()[1]}"
    honest_url = f"http://127.0.0.1:{honest_sock.getsockname()[1]}"
    evil_url = f"http://127.0.0.1:{evil_sock.getsockname()[1]}"
    settings = make_settings(base_url=broker_url)
    monkeypatch.setenv("BROKER_SANDBOX_CLIENT_SECRET", "sandbox-test-secret")
    monkeypatch.setenv("EVIL_CLIENT_ID", "broker-at-evil")
    monkeypatch.setenv("EVIL_CLIENT_SECRET", "evil-secret")
    provider, honest_app = sandbox_setup(settings.callback_url)
    honest_raw = sandbox_manifest(honest_url)
    if honest_iss:
        honest_raw["oauth"]["issuer"] = honest_url
        honest_raw["oauth"]["authorization_response_iss_parameter_supported"] = True
        honest_app = AddIss(honest_app, honest_url)
    evil_raw = sandbox_manifest(evil_url)
    evil_raw.update(id="evil", name="Evil Co.")
    evil_raw["oauth"] = {
        **evil_raw["oauth"],
        "client_id": "env:EVIL_CLIENT_ID",
        "client_secret": "env:EVIL_CLIENT_SECRET",
    }
    evil_raw["oauth"].pop("revoke_url")
    evil = Evil(
        honest_authorize=f"{honest_url}/oauth/authorize",
        honest_redirect=settings.connector_callback_url("sandbox"),
    )
    rt = build_runtime(
        settings,
        builtins=[_connector(honest_raw, "honest"), _connector(evil_raw, "evil")],
        plugins=[],
        upgrade=True,
    )
    _, admin = create_api_key(rt.engine, role="admin")
    honest_server = LiveServer(honest_app, honest_sock).start()
    evil_server = LiveServer(evil_app(evil), evil_sock).start()
    broker = LiveServer(create_app(rt), broker_sock).start()
    try:
        yield TwoProviders(rt, broker, honest_url, evil_url, provider, evil, admin)
    finally:
        broker.stop()
        evil_server.stop()
        honest_server.stop()
        rt.close()


@pytest.fixture
def two(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoProviders]:
    yield from _two_providers(make_settings, monkeypatch, honest_iss=False)


@pytest.fixture
def two_iss(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoProviders]:
    yield from _two_providers(make_settings, monkeypatch, honest_iss=True)


def _nothing_stored(rt: Runtime) -> Connection:
    with Session(rt.engine) as db:
        (conn,) = db.exec(select(Connection)).all()
        assert db.exec(select(ConnectionToken)).all() == []
        assert db.exec(select(ConsentRecord)).all() == []
        (attempt,) = db.exec(select(OAuthAttempt)).all()
    assert conn.status == "pending"
    assert attempt.used_at is not None and attempt.code_verifier is None  # spent
    return conn


def test_each_connector_has_its_own_redirect_uri(two: TwoProviders, browser: Browser) -> None:
    for connector in ("sandbox", "evil"):
        to_provider = browser.approve(two.connect_session(connector)["url"], optional=[])
        redirect = query(to_provider.headers["location"])["redirect_uri"]
        assert redirect == f"{two.url}/oauth/callback/{connector}"


def test_mix_up_attack_is_refused(two: TwoProviders, browser: Browser) -> None:
    """The user connects Evil Co.; Evil sends them to the honest provider, whose code
    comes back to the honest connector's callback with Evil's state: refused, and the
    honest code never reaches Evil's token endpoint."""
    to_evil = browser.approve(two.connect_session("evil")["url"], optional=[])
    assert to_evil.headers["location"].startswith(two.evil_url)
    to_honest = browser.get(to_evil.headers["location"])
    assert to_honest.status_code == 302
    assert to_honest.headers["location"].startswith(two.honest_url)
    back = browser.provider_decides(to_honest.headers["location"], allow=True)
    answer = back.headers["location"]
    assert answer.startswith(f"{two.url}/oauth/callback/sandbox?")
    assert "code" in query(answer)

    done = browser.get(answer)
    assert done.status_code == 400
    assert MIX_UP in done.text
    assert two.evil.token_requests == []  # the honest code was not handed to Evil
    assert two.provider.token_requests == []
    conn = _nothing_stored(two.rt)
    assert conn.connector_id == "evil"
    assert "mix-up" in (conn.last_error or "")


def test_answer_for_one_connector_at_the_shared_callback_is_refused(
    two: TwoProviders, browser: Browser
) -> None:
    to_provider = browser.approve(two.connect_session("sandbox")["url"], optional=[])
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    answer = urlsplit(back.headers["location"])
    elsewhere = f"{two.url}/oauth/callback?{answer.query}"
    done = browser.get(elsewhere)
    assert done.status_code == 400
    assert MIX_UP in done.text
    assert two.provider.token_requests == []
    _nothing_stored(two.rt)


def test_shared_redirect_is_kept_for_existing_registrations(
    two: TwoProviders, browser: Browser
) -> None:
    two.rt.settings.shared_callback_connectors = "sandbox"
    to_provider = browser.approve(two.connect_session("sandbox")["url"], optional=[])
    assert query(to_provider.headers["location"])["redirect_uri"] == f"{two.url}/oauth/callback"
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    done = browser.get(back.headers["location"])
    assert done.status_code == 303, done.text
    assert query(done.headers["location"])["status"] == "connected"


def test_honest_iss_connects(two_iss: TwoProviders, browser: Browser) -> None:
    to_provider = browser.approve(two_iss.connect_session("sandbox")["url"], optional=[])
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    assert query(back.headers["location"])["iss"] == two_iss.honest_url
    done = browser.get(back.headers["location"])
    assert done.status_code == 303, done.text
    assert query(done.headers["location"])["status"] == "connected"


@pytest.mark.parametrize("iss", ["evil", None])
def test_wrong_or_missing_iss_is_refused(
    two_iss: TwoProviders, browser: Browser, iss: str | None
) -> None:
    """An answer for the honest connector's attempt, at its own callback, but issued by
    Evil (its iss) or without the iss the honest provider always sends: refused before
    any code is redeemed."""
    to_provider = browser.approve(two_iss.connect_session("sandbox")["url"], optional=[])
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    params = query(back.headers["location"])
    params.pop("iss")
    if iss == "evil":
        params["iss"] = two_iss.evil_url
    done = browser.get(f"{two_iss.url}/oauth/callback/sandbox?{urlencode(params)}")
    assert done.status_code == 400
    assert MIX_UP in done.text
    assert two_iss.provider.token_requests == []
    conn = _nothing_stored(two_iss.rt)
    assert "iss" in (conn.last_error or "")


@pytest.mark.parametrize(
    ("raised", "recorded"),
    [
        (
            InvalidSetting.host_label("tenant", "not one DNS label"),
            "invalid_setting (InvalidSetting): setting 'tenant' is not a valid host name "
            "label (not one DNS label)",
        ),
        (
            MissingSetting.named("tenant"),
            "missing_setting (MissingSetting): the connection has no setting 'tenant'",
        ),
    ],
)
def test_an_issuer_the_settings_cannot_fill_is_recorded_by_its_code(
    two_iss: TwoProviders,
    browser: Browser,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    raised: Exception,
    recorded: str,
) -> None:
    """``last_error`` (shown to users) names the failure's code and the setting, never
    its value; the operator log says where (issue 15, point 4)."""
    to_provider = browser.approve(two_iss.connect_session("sandbox")["url"], optional=[])
    back = browser.provider_decides(to_provider.headers["location"], allow=True)

    def refuse(template: str, values: Any) -> str:
        raise raised

    monkeypatch.setattr("broker.flows.callback.render_url", refuse)
    with caplog.at_level("WARNING", logger="broker.connectors"):
        done = browser.get(back.headers["location"])
    assert done.status_code == 400
    assert MIX_UP in done.text
    conn = _nothing_stored(two_iss.rt)
    assert conn.last_error == (
        f"refused: the manifest's issuer cannot be filled in for this connection: {recorded}"
    )
    assert "issuer of connection" in caplog.text  # the operator learns where
