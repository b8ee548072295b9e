"""Browser tests: `broker demo` served by uvicorn on loopback, driven by Playwright in
Debian's headless Chromium (``/usr/bin/chromium``; Playwright's own browser downloads
are not used).

Chromium missing is a failure, not a skip: ``.ci/run`` installs it with apt-get, and a
developer runs ``apt-get install -y chromium`` (or points ``BROKER_TEST_CHROMIUM`` at
another Chromium). Screenshots go to each test's tmp dir, and also to
``BROKER_TEST_SCREENSHOTS`` when it is set (``BROKER_TEST_SCREENSHOTS=docs/images`` refreshes the
documentation's pictures).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine

from broker.cli import build_parser
from broker.cli.serve import build_app
from broker.flows.keys import create_api_key
from broker.runtime import Runtime
from broker.store.db import upgrade_schema
from tests.conftest import LiveServer, free_socket

CHROMIUM = os.environ.get("BROKER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VENDOR = Path(__file__).parent / "vendor"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 900}
# resolved now: the demo fixture changes the working directory
SHOTS = os.environ.get("BROKER_TEST_SCREENSHOTS")
SHOTS_DIR = Path(SHOTS).resolve() if SHOTS else None


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the browser tests need Debian's chromium "
            "(`apt-get install -y chromium`; .ci/run installs it) or BROKER_TEST_CHROMIUM "
            "pointing at a Chromium binary",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Demo:
    """A running `broker demo` and what the tests need to drive and inspect it."""

    server: LiveServer
    rt: Runtime
    admin_key: str
    tmp: Path
    shots: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=10
        )

    def auditor_key(self) -> str:
        _, raw = create_api_key(self.rt.engine, role="auditor", label="browser test")
        return raw


@pytest.fixture
def demo(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Demo]:
    """`broker demo` as the CLI builds it, on the suite's database (SQLite or PostgreSQL)."""
    for name in list(os.environ):
        if name.startswith("BROKER_") and not name.startswith("BROKER_TEST"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BROKER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BROKER_DATABASE_URL", database_url)
    engine = create_engine(database_url)
    upgrade_schema(engine)
    engine.dispose()
    sock = free_socket()
    port = sock.getsockname()[1]
    app, _ = build_app(build_parser().parse_args(["demo", "--port", str(port)]), demo=True)
    rt: Runtime = app.state.runtime
    _, admin = create_api_key(rt.engine, role="admin", label="browser test")
    server = LiveServer(app, sock).start()
    try:
        yield Demo(server, rt, admin, tmp_path)
    finally:
        server.stop()
        rt.close()


class Contexts:
    """Makes browser contexts allowed to reach nothing but the broker on loopback; any
    other request (a CDN, a font, a tracker) is refused and fails the test."""

    def __init__(self, browser: object) -> None:
        self.browser = browser
        self.made: list[object] = []
        self.outside: list[str] = []

    def _guard(self, route: object) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def new(self, *, javascript: bool, viewport: dict[str, int] = DESKTOP) -> object:
        ctx = self.browser.new_context(
            java_script_enabled=javascript, viewport=viewport, accept_downloads=True
        )
        ctx.route("**/*", self._guard)
        ctx.set_default_timeout(10_000)
        self.made.append(ctx)
        return ctx


@pytest.fixture
def contexts(browser: object) -> Iterator[Contexts]:
    made = Contexts(browser)
    try:
        yield made
    finally:
        for ctx in made.made:
            ctx.close()
    assert made.outside == [], f"pages asked for something other than the broker: {made.outside}"


@pytest.fixture
def page(contexts: Contexts) -> object:
    """A page with JavaScript off: every page must work without it."""
    return contexts.new(javascript=False).new_page()


def screenshot(page: object, demo: Demo, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot in the test's tmp dir, and in BROKER_TEST_SCREENSHOTS when set."""
    path = demo.tmp / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 1000
    if SHOTS_DIR is not None:
        SHOTS_DIR.mkdir(parents=True, exist_ok=True)
        (SHOTS_DIR / f"{name}.png").write_bytes(path.read_bytes())
    demo.shots.append(path)
    return path


def axe_source() -> str:
    source = (VENDOR / "axe.min.js").read_bytes()
    assert hashlib.sha256(source).hexdigest() == AXE_SHA256, "vendored axe.min.js was changed"
    return source.decode()


_RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {runOnly: {type: 'tag', values: tags},
                                          resultTypes: ['violations']});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
}"""


def axe_violations(page: object) -> list[dict]:
    """axe-core's WCAG 2.x A/AA and best-practice violations on the page as it is now.

    Injected through the DevTools protocol, so the pages' CSP (no script at all) stays on."""
    page.evaluate(axe_source())
    return page.evaluate(_RUN_AXE, AXE_TAGS)


def horizontal_overflow(page: object) -> int:
    """How many CSS pixels the page is wider than the window (0: no sideways scrolling)."""
    return page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
