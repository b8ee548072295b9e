"""The pages' Content-Security-Policy: only the broker's own stylesheet and images, the
connectors' logos, no script at all, and form targets limited to where a form must go."""

from __future__ import annotations

from fastapi.testclient import TestClient

from broker.core.catalog import default_catalog
from broker.core.connector import Connector, ConnectorSource
from broker.core.manifest import parse_manifest
from broker.demo import sandbox_manifest
from broker.flows.browser_sessions import create_user_session
from broker.flows.connect import create_connect_session
from broker.runtime import build_runtime
from broker.web.app import create_app

BASE = "https://broker.example.com"
LOGO = "https://cdn.example.net/logos/sandbox.png"


def _directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}


def test_consent_and_me_pages_allow_logos_and_the_provider_only(make_settings, monkeypatch) -> None:
    # the consent page is offered only for a connector whose credentials resolve
    monkeypatch.setenv("BROKER_SANDBOX_CLIENT_ID", "sandbox-client")
    monkeypatch.setenv("BROKER_SANDBOX_CLIENT_SECRET", "sandbox-secret")
    data = {**sandbox_manifest("https://sandbox.example.org"), "logo_url": LOGO}
    manifest = parse_manifest(data, default_catalog(), source="test")
    connector = Connector(manifest, ConnectorSource("builtin", "test"))
    rt = build_runtime(make_settings(base_url=BASE), builtins=[connector], plugins=[], upgrade=True)
    try:
        with TestClient(create_app(rt), base_url=BASE, follow_redirects=False) as client:
            session = create_connect_session(rt, user_id="u1", connector_id="sandbox")
            page = client.get(f"/connect/sandbox?session={session.token}")
            assert page.status_code == 200
            assert f'<img class="logo" src="{LOGO}" alt="Sandbox Co. logo"' in page.text
            csp = _directives(page.headers["content-security-policy"])
            assert csp["default-src"] == ["'none'"]
            assert csp["img-src"] == ["'self'", "https://cdn.example.net"]
            assert csp["style-src"] == ["'self'"]
            assert csp["form-action"] == ["'self'", "https://sandbox.example.org"]
            assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
            assert "script-src" not in csp
            # elsewhere a form may only go back to the broker
            link = create_user_session(rt, user_id="u1", created_by=None)
            me = client.get(f"/me?session={link.token}")
            assert me.status_code == 303
            page = client.get("/me")
            assert _directives(page.headers["content-security-policy"])["form-action"] == ["'self'"]
            assert page.headers["cross-origin-opener-policy"] == "same-origin"
            assert "camera=()" in page.headers["permissions-policy"]
    finally:
        rt.close()
