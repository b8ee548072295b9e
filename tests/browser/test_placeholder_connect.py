"""A connect whose provider host is a per-connection setting, as Zendesk's is
(``https://{subdomain}.zendesk.com/oauth/...``), in headless Chromium with JavaScript off.

The consent form's approval redirects to the provider's authorize URL, and Chromium
applies the page's CSP ``form-action`` to that redirect: the consent page must name the
*rendered* origin of this session (``http://acme.localhost:PORT``), not the template's
``http://{tenant}.localhost:PORT``, which a browser cannot match and ignores. The
sandbox provider plays the tenant's host: Chromium resolves names under ``localhost``
to loopback by itself (RFC 6761), so no DNS is involved (issue 9, point 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from broker.core.catalog import default_catalog
from broker.core.connector import Connector, ConnectorSource
from broker.core.manifest import parse_manifest
from broker.demo import sandbox_manifest
from broker.flows.keys import create_api_key
from broker.runtime import Runtime, build_runtime
from broker.sandbox import SandboxClient, SandboxProvider, create_sandbox_app
from broker.store.models import Connection
from broker.web.app import create_app
from tests.browser.conftest import DESKTOP
from tests.conftest import LiveServer, free_socket

CLIENT_ID, CLIENT_SECRET = "tenantco-client", "tenantco-secret"


@dataclass
class TenantStack:
    rt: Runtime
    broker: LiveServer
    sandbox: LiveServer
    admin_key: str


def tenant_connector(sandbox_port: int) -> Connector:
    """The sandbox connector, but its authorize URL's host is the tenant's own."""
    raw = sandbox_manifest(f"http://127.0.0.1:{sandbox_port}")
    raw.update(id="tenantco", name="Tenant Co.")
    raw["oauth"].update(
        authorize_url=f"http://{{tenant}}.localhost:{sandbox_port}/oauth/authorize",
        client_id="env:TENANTCO_CLIENT_ID",
        client_secret="env:TENANTCO_CLIENT_SECRET",
    )
    raw["settings"] = [
        {"name": "tenant", "label": "Tenant Co. account", "pattern": "^[a-z0-9-]{1,63}$"}
    ]
    manifest = parse_manifest(raw, default_catalog(), source="test:tenantco")
    return Connector(manifest, ConnectorSource("builtin", "test"))


@pytest.fixture
def tenant_stack(make_settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TenantStack]:
    broker_sock, sandbox_sock = free_socket(), free_socket()
    broker_url = f"http://127.0.0.1:{broker_sock.getsockname()[1]}"
    monkeypatch.setenv("TENANTCO_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("TENANTCO_CLIENT_SECRET", CLIENT_SECRET)
    # authlib (in the sandbox) takes plain http only from "localhost" and loopback IP
    # literals, not from names under localhost; the broker's own rules are unchanged
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    settings = make_settings(base_url=broker_url)
    provider = SandboxProvider(
        clients=[
            SandboxClient(
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                # the shared callback and the connector's own (whichever the broker sends)
                redirect_uris=[settings.callback_url, f"{settings.callback_url}/tenantco"],
            )
        ]
    )
    connector = tenant_connector(sandbox_sock.getsockname()[1])
    rt = build_runtime(settings, builtins=[connector], plugins=[], upgrade=True)
    _, admin = create_api_key(rt.engine, role="admin")
    sandbox = LiveServer(create_sandbox_app(provider), sandbox_sock).start()
    broker = LiveServer(create_app(rt), broker_sock).start()
    try:
        yield TenantStack(rt, broker, sandbox, admin)
    finally:
        broker.stop()
        sandbox.stop()
        rt.close()


@pytest.fixture
def loopback_page(browser: object) -> Iterator[object]:
    """JavaScript off; only loopback (127.0.0.1 and names under localhost) is reachable."""
    outside: list[str] = []

    def guard(route: object) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host == "127.0.0.1" or host.endswith(".localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    ctx = browser.new_context(java_script_enabled=False, viewport=DESKTOP)
    ctx.route("**/*", guard)
    ctx.set_default_timeout(10_000)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()
    assert outside == [], f"pages asked for something other than loopback: {outside}"


def test_a_connect_to_a_tenant_host_reaches_the_provider_and_back(
    loopback_page: object, tenant_stack: TenantStack
) -> None:
    page = loopback_page
    sandbox_port = tenant_stack.sandbox.port
    with httpx.Client(
        base_url=tenant_stack.broker.url,
        headers={"Authorization": f"Bearer {tenant_stack.admin_key}"},
    ) as api:
        made = api.post(
            "/v1/connect-sessions",
            json={"user_id": "user-7", "connector": "tenantco", "settings": {"tenant": "acme"}},
        )
        assert made.status_code == 201, made.text

        consent = page.goto(made.json()["url"])
        assert consent is not None and consent.status == 200
        form_action = next(
            d.split()[1:]
            for d in consent.headers["content-security-policy"].split(";")
            if d.split() and d.split()[0] == "form-action"
        )
        assert form_action == ["'self'", f"http://acme.localhost:{sandbox_port}"]
        page.get_by_role("button", name="Approve and continue to Tenant Co.").click()

        # the browser followed the approval's redirect to the tenant's own host
        expect(page.get_by_text("Signed in as")).to_be_visible()
        assert page.url.startswith(f"http://acme.localhost:{sandbox_port}/oauth/authorize?")
        page.get_by_role("button", name="Approve").click()

        expect(page.get_by_role("heading", level=1)).to_have_text("Connected")
        assert urlsplit(page.url).hostname == "127.0.0.1"
    with Session(tenant_stack.rt.engine) as db:
        (conn,) = db.exec(select(Connection).where(Connection.user_id == "user-7")).all()
    assert (conn.connector_id, conn.status, conn.settings) == (
        "tenantco",
        "active",
        {"tenant": "acme"},
    )
