"""broker-connect.js in Chromium: a host's page on another loopback origin opens the
connect link in a popup and learns the outcome through postMessage, only when its
origin is on BROKER_CONNECT_ORIGINS; with JavaScript off the same link still connects
in the window itself. The finished page passes axe."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.browser.conftest import Contexts, Demo, axe_violations
from tests.conftest import LiveServer, free_socket

LINK = "Connect Sandbox Co."
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host app</title>
<script src="{script}"></script></head>
<body><main><h1>Host app</h1>
<p><a id="connect" href="{connect}">{link}</a></p>
<p id="outcome" role="status"></p>
<script>
BrokerConnect.attach(document.getElementById("connect"), {{
  onOutcome: function (o) {{
    document.getElementById("outcome").textContent = o.status + " " + (o.connection_id || "");
  }}
}});
</script></main></body></html>"""


@dataclass
class HostPage:
    """The host's own page, served from a loopback origin that is not the broker's."""

    server: LiveServer
    body: str = ""

    @property
    def url(self) -> str:
        return self.server.url + "/"

    def show(self, demo: Demo, connect_url: str) -> None:
        self.body = _PAGE.format(
            script=html.escape(f"{demo.url}/broker-connect.js"),
            connect=html.escape(connect_url),
            link=LINK,
        )


@pytest.fixture
def host() -> Iterator[HostPage]:
    page = HostPage(server=None)  # type: ignore[arg-type]

    async def index(_request: object) -> HTMLResponse:
        return HTMLResponse(page.body)

    page.server = LiveServer(Starlette(routes=[Route("/", index)]), free_socket()).start()
    yield page
    page.server.stop()


def _session(demo: Demo, user_id: str) -> str:
    with demo.api() as api:  # no return_url: the broker's finished page ends the flow
        body = {"user_id": user_id, "connector_id": "sandbox"}
        resp = api.post("/v1/connect-sessions", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["url"]


def _approve_in(window: object) -> None:
    expect(window.get_by_role("heading", level=1)).to_have_text("Connect Sandbox Co.")
    window.get_by_role("button", name="Approve and continue to Sandbox Co.").click()
    expect(window.get_by_text("Signed in as")).to_be_visible()
    window.get_by_role("button", name="Approve").click()


def test_a_popup_tells_an_allowed_host_page_how_the_connect_ended(
    demo: Demo, host: HostPage, contexts: Contexts
) -> None:
    demo.rt.settings.connect_origins = host.server.url
    host.show(demo, _session(demo, "popup-user"))
    page = contexts.new(javascript=True).new_page()
    page.goto(host.url)
    with page.expect_popup() as opened:
        page.get_by_role("link", name=LINK).click()
    popup = opened.value
    with popup.expect_event("close"):  # the helper closes it once it has the outcome
        _approve_in(popup)
        expect(page.get_by_role("status")).to_have_text(re.compile(r"^connected conn_[\w-]+$"))
    conn_id = page.get_by_role("status").inner_text().split(" ")[1]
    assert page.url == host.url  # the host's page never left
    with demo.api() as api:
        shown = api.get(f"/v1/connections/{conn_id}").json()
    assert shown["user_id"] == "popup-user" and shown["status"] == "active"


def test_a_host_page_not_on_the_allow_list_learns_nothing(
    demo: Demo, host: HostPage, contexts: Contexts
) -> None:
    demo.rt.settings.connect_origins = "https://app.example.com"
    host.show(demo, _session(demo, "other-user"))
    page = contexts.new(javascript=True).new_page()
    page.goto(host.url)
    with page.expect_popup() as opened:
        page.get_by_role("link", name=LINK).click()
    popup = opened.value
    _approve_in(popup)
    expect(popup.get_by_role("status")).to_have_text("Sandbox Co. is connected.")
    expect(page.get_by_role("status")).to_have_text("")  # the message went nowhere
    assert axe_violations(popup) == []  # the finished page, with its script
    popup.close()
    expect(page.get_by_role("status")).to_have_text("closed")


def test_without_javascript_the_link_connects_in_the_window_itself(
    demo: Demo, host: HostPage, page: object
) -> None:
    demo.rt.settings.connect_origins = host.server.url
    host.show(demo, _session(demo, "plain-user"))
    page.goto(host.url)
    page.get_by_role("link", name=LINK).click()
    _approve_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Connected")
    expect(page.get_by_role("status")).to_have_text("Sandbox Co. is connected.")
    outcome = page.locator("#broker-connect-outcome")
    expect(outcome).to_have_attribute("data-status", "connected")
    expect(outcome).to_be_hidden()
