"""A broker and a sandbox OAuth provider, each served by uvicorn on its own
loopback port, wired together the way an operator would wire a third party."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector, sandbox_setup
from broker.flows.keys import create_api_key
from broker.runtime import Runtime, build_runtime
from broker.sandbox import SandboxProvider
from broker.web.app import create_app
from tests.conftest import LiveServer, free_socket

RETURN_URL = "https://app.example.com/integrations/done"


@dataclass
class Stack:
    rt: Runtime
    broker: LiveServer
    sandbox: LiveServer
    provider: SandboxProvider
    admin_key: str
    auditor_key: str
    waits: list[float]

    @property
    def url(self) -> str:
        return self.broker.url

    def api(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def connect_session(self, user_id: str = "user-1", **extra: object) -> dict:
        body = {"user_id": user_id, "connector": "sandbox", "return_url": RETURN_URL, **extra}
        with self.api() as api:
            resp = api.post("/v1/connect-sessions", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()


@pytest.fixture
def stack(make_settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    yield from build_stack(make_settings, monkeypatch, sandbox_connector)


def build_stack(make_settings, monkeypatch: pytest.MonkeyPatch, make_connector) -> Iterator[Stack]:
    """The ``stack`` fixture's body; ``make_connector(catalog, sandbox_url)`` gives the
    connector installed for the sandbox (the sandbox's own, or a variant of it)."""
    broker_sock, sandbox_sock = free_socket(), free_socket()
    broker_url = f"http://127.0.0.1:{broker_sock.getsockname()[1]}"
    sandbox_url = f"http://127.0.0.1:{sandbox_sock.getsockname()[1]}"
    settings = make_settings(base_url=broker_url)
    monkeypatch.setenv("BROKER_SANDBOX_CLIENT_SECRET", "sandbox-test-secret")
    provider, sandbox_app = sandbox_setup(settings.callback_url)
    connector = make_connector(default_catalog(), sandbox_url)
    rt = build_runtime(settings, builtins=[connector], plugins=[], upgrade=True)
    waits: list[float] = []
    rt.sleep = waits.append  # backoff is recorded, not slept: tests assert the delays
    _, admin = create_api_key(rt.engine, role="admin")
    _, auditor = create_api_key(rt.engine, role="auditor")
    sandbox = LiveServer(sandbox_app, sandbox_sock).start()
    broker = LiveServer(create_app(rt), broker_sock).start()
    try:
        yield Stack(rt, broker, sandbox, provider, admin, auditor, waits)
    finally:
        broker.stop()
        sandbox.stop()
        rt.close()


_INPUT = re.compile(r"<input[^>]*>", re.I)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def form_fields(page: str) -> dict[str, str]:
    """Hidden inputs of the first form on a page, as a browser would submit them."""
    fields = {}
    for tag in _INPUT.findall(page):
        attrs = {k.lower(): html.unescape(v) for k, v in _ATTR.findall(tag)}
        if attrs.get("type") == "hidden" and "name" in attrs:
            fields[attrs["name"]] = attrs.get("value", "")
    return fields


def form_action(page: str, page_url: str) -> str:
    match = re.search(r'<form[^>]*action="([^"]*)"', page)
    assert match, "page has no form"
    return urljoin(page_url, html.unescape(match.group(1)))


class Browser:
    """httpx as a browser: keeps cookies, follows redirects by hand so tests see each hop."""

    def __init__(self) -> None:
        self.client = httpx.Client(timeout=10, follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def get(self, url: str) -> httpx.Response:
        return self.client.get(url)

    def post(self, url: str, data: dict) -> httpx.Response:
        return self.client.post(url, data=data)

    def open_consent(self, url: str) -> tuple[httpx.Response, dict[str, str]]:
        page = self.get(url)
        return page, form_fields(page.text)

    def approve(
        self, consent_url: str, optional: list[str], decision: str = "approve"
    ) -> httpx.Response:
        page, fields = self.open_consent(consent_url)
        assert page.status_code == 200, page.text
        data: dict[str, str | list[str]] = {**fields, "decision": decision}
        data["categories"] = list(optional)
        return self.post(form_action(page.text, consent_url), data=data)

    def provider_decides(self, authorize_url: str, allow: bool) -> httpx.Response:
        """At the sandbox: open the authorize page and press Approve or Deny."""
        page = self.get(authorize_url)
        assert page.status_code == 200, page.text
        data = form_fields(page.text)
        data["confirm"] = "yes" if allow else "no"
        return self.post(form_action(page.text, str(page.url)), data=data)


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def connect(
    stack: Stack, browser: Browser, optional: list[str], user_id: str = "user-1", **extra: object
) -> str:
    """Drive the whole connect flow (``extra``: more connect-session fields); returns
    the connection id."""
    session = stack.connect_session(user_id, **extra)
    return approve_link(browser, session["url"], optional)


def approve_link(browser: Browser, url: str, optional: list[str]) -> str:
    """The user's side of connecting: consent at ``url`` (a connect-session link), allow
    at the provider, back to the return URL; returns the connection id."""
    to_provider = browser.approve(url, optional)
    assert to_provider.status_code == 303, to_provider.text
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    assert back.status_code in (302, 303)
    done = browser.get(back.headers["location"])
    assert done.status_code == 303, done.text
    location = done.headers["location"]
    assert location.startswith(RETURN_URL)
    params = query(location)
    assert params["status"] == "connected"
    return params["connection_id"]
