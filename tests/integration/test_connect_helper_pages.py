"""What the connect helper needs from the broker, over real sockets: the script served
as a static file loadable from another origin, the finished page's outcome element and
script only with BROKER_CONNECT_ORIGINS set, and popups keeping their opener then."""

from __future__ import annotations

import httpx

from broker.web.connect_popup import SCRIPT
from tests.integration.conftest import Browser, Stack

HOST = "http://127.0.0.1:9"


def _finished_page(stack: Stack, browser: Browser) -> httpx.Response:
    session = stack.connect_session("user-js", return_url=None)
    to_provider = browser.approve(session["url"], [])
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    return browser.get(back.headers["location"])


def test_the_script_is_served_static_cacheable_and_cross_origin(stack: Stack) -> None:
    resp = httpx.get(f"{stack.url}/broker-connect.js")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/javascript")
    assert resp.headers["cross-origin-resource-policy"] == "cross-origin"
    assert "max-age" in resp.headers["cache-control"]
    assert resp.text == SCRIPT.read_text()
    assert "BrokerConnect" in resp.text and "postMessage" in resp.text
    assert "http" not in resp.text.split("*/", 1)[1]  # loads nothing from anywhere


def test_without_connect_origins_the_pages_stay_script_free(stack: Stack, browser: Browser) -> None:
    assert stack.rt.settings.connect_origin_list == ()
    consent = browser.get(stack.connect_session("user-a")["url"])
    assert consent.headers["cross-origin-opener-policy"] == "same-origin"
    done = _finished_page(stack, browser)
    assert done.status_code == 200 and "is connected" in done.text
    assert "script-src" not in done.headers["content-security-policy"]
    assert "<script" not in done.text and "broker-connect-outcome" not in done.text


def test_with_connect_origins_the_finished_page_posts_its_outcome(
    stack: Stack, browser: Browser
) -> None:
    stack.rt.settings.connect_origins = f"{HOST},https://app.example.com"
    consent = browser.get(stack.connect_session("user-b")["url"])
    assert consent.headers["cross-origin-opener-policy"] == "unsafe-none"  # keeps the opener
    assert "frame-ancestors 'none'" in consent.headers["content-security-policy"]
    done = _finished_page(stack, browser)
    assert done.headers["cross-origin-opener-policy"] == "unsafe-none"
    policy = done.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert f'<script src="{stack.url}/broker-connect.js" defer></script>' in done.text
    assert 'data-status="connected"' in done.text
    assert f'data-origins="{HOST} https://app.example.com"' in done.text
    with httpx.Client(base_url=stack.url) as api:  # other pages keep the strict default
        assert api.get("/healthz").headers["cross-origin-opener-policy"] == "same-origin"
