"""`broker demo` in one process: the sandbox mounted at /sandbox, one-click connect."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from broker.cli import build_parser
from broker.cli.serve import build_app
from tests.conftest import LiveServer, free_socket
from tests.integration.conftest import Browser


def test_demo_connect_share_and_see_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    sock = free_socket()
    port = sock.getsockname()[1]
    app, _settings = build_app(build_parser().parse_args(["demo", "--port", str(port)]), demo=True)
    out = capsys.readouterr().out
    key = re.search(r"demo admin API key \(shown once\): (\S+)", out).group(1)
    assert f"demo page: http://127.0.0.1:{port}/demo" in out
    server = LiveServer(app, sock).start()
    browser = Browser()
    try:
        base = server.url
        start = browser.post(f"{base}/demo/connect", data={})
        assert start.status_code == 303
        to_provider = browser.approve(start.headers["location"], optional=["user.name"])
        assert to_provider.headers["location"].startswith(f"{base}/sandbox/oauth/authorize")
        back = browser.provider_decides(to_provider.headers["location"], allow=True)
        done = browser.get(back.headers["location"])
        assert done.status_code == 303  # back to the demo page, which plays the host app
        assert done.headers["location"].startswith(f"{base}/demo?status=connected&connection_id=")
        assert "Sandbox Co. is connected." in browser.get(done.headers["location"]).text
        api = browser.client
        headers = {"Authorization": f"Bearer {key}"}
        conns = api.get(f"{base}/v1/users/demo-user/connections", headers=headers).json()
        (conn,) = conns["connections"]
        resp = api.post(
            f"{base}/v1/connections/{conn['id']}/transfers",
            headers=headers,
            json={
                "action": "post_message",
                "data": {"work_item": {"id": "W-7", "title": "Demo"}, "author": {"name": "Ann"}},
            },
        )
        assert resp.status_code == 201, resp.text
        page = browser.get(f"{base}/demo").text
        assert "W-7" in page and "Ann" in page
        assert browser.get(f"{base}/sandbox/privacy").status_code == 200

        # the demo's own buttons: share a sample, open /me, get an auditor key
        shared = browser.post(f"{base}/demo/share", data={"mode": "reject"})
        assert shared.headers["location"] == "/demo?shared=outside_grant"  # email not granted
        shared = browser.post(f"{base}/demo/share", data={"mode": "drop"})
        assert shared.headers["location"] == "/demo?shared=delivered"
        me = browser.post(f"{base}/demo/me", data={})
        assert me.headers["location"].startswith(f"{base}/me?session=cs_")
        mine = browser.get(me.headers["location"])
        assert mine.headers["location"] == "/me"
        assert "Sandbox Co." in browser.get(f"{base}/me").text
        issued = browser.post(f"{base}/demo/auditor-key", data={})
        auditor = re.search(r'id="auditor-key">(brk_[^<]+)<', issued.text).group(1)
        listed = api.get(f"{base}/v1/transfers", headers={"Authorization": f"Bearer {auditor}"})
        assert len(listed.json()["transfers"]) == 3
        refused = api.delete(
            f"{base}/v1/connections/{conn['id']}", headers={"Authorization": f"Bearer {auditor}"}
        )
        assert refused.status_code == 403  # read-only
    finally:
        browser.close()
        server.stop()
        app.state.runtime.close()
