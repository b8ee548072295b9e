"""Quick set-up over HTTP (no browser): a demo-user connection and some transfers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from tests.browser.conftest import Demo
from tests.integration.conftest import Browser, query

UPDATE = {
    "work_item": {"id": "W-1", "title": "Ship it", "assignee": {"email": "ann@example.com"}},
    "author": {"name": "Ann"},
}


def connect_demo_user(demo: Demo, optional: list[str]) -> str:
    """Connect Sandbox Co. for demo-user through the consent page and the provider."""
    http = Browser()
    try:
        start = http.post(f"{demo.url}/demo/connect", data={})
        to_provider = http.approve(start.headers["location"], optional)
        back = http.provider_decides(to_provider.headers["location"], allow=True)
        done = http.get(back.headers["location"])
        assert done.status_code == 303, done.text
        params = query(done.headers["location"])
        assert params["status"] == "connected", params
        return params["connection_id"]
    finally:
        http.close()


def share(demo: Demo, connection_id: str, mode: str = "drop") -> None:
    """Send UPDATE as the host's backend would: ``drop`` delivers it without the email,
    ``reject`` is refused (and recorded as blocked) for carrying it."""
    with demo.api() as api:
        resp = api.post(
            f"/v1/connections/{connection_id}/transfers",
            json={"action": "post_message", "data": UPDATE, "mode": mode},
        )
    assert resp.status_code == (201 if mode == "drop" else 403), resp.text


@contextmanager
def backdated(demo: Demo, days: int) -> Iterator[None]:
    """Let the broker's clock run ``days`` behind, to record transfers on earlier days."""
    real = demo.rt.clock
    demo.rt.clock = lambda: real() - timedelta(days=days)
    try:
        yield
    finally:
        demo.rt.clock = real


def seed_transfers(demo: Demo) -> str:
    """demo-user connected with Name granted and Email declined; two updates delivered
    (the email removed) and one refused for carrying the email."""
    connection_id = connect_demo_user(demo, ["user.name"])
    for mode in ("drop", "drop", "reject"):
        share(demo, connection_id, mode)
    return connection_id
