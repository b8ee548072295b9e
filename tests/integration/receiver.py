"""A third party on loopback for the delivery engine's fault tests.

:class:`Receiver` is a small Starlette app (``POST /items``) served by uvicorn in a
thread. It records every request (body and ``Idempotency-Key``) and stores the item,
and can be told to

- *hold* its answer: the next ``hold_next`` requests set ``arrived`` and block until
  the test sets ``release`` (then the item is stored, ``item_stored`` is set, and
  the answer goes to whoever is still listening);
- *dedupe*: a request whose ``Idempotency-Key`` it already stored is answered with
  the stored item again (200), not stored twice, as a cooperating API does;
- answer a given key with a fixed status and headers (a 429 with ``Retry-After``).

It also writes the manifest-only TOML connectors that point at it.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import LiveServer, free_socket

__all__ = ["ACCESS_TOKEN", "Received", "Receiver", "write_connector"]

ACCESS_TOKEN = "AT-receiver-test-token"
HOLD_LIMIT = 60.0  # a held request never outlives a test that forgot to release it


@dataclass(frozen=True)
class Received:
    key: str | None
    body: Any
    authorization: str | None


@dataclass
class Receiver:
    dedupe: bool = False
    received: list[Received] = field(default_factory=list)
    stored: dict[str | None, list[dict[str, Any]]] = field(default_factory=dict)
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    hold_next: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    item_stored: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    server: LiveServer | None = None

    # -- what the tests read ------------------------------------------------------------

    def keys_received(self) -> list[str | None]:
        with self._lock:
            return [r.key for r in self.received]

    def copies(self, key: str) -> int:
        """How many times the item sent under ``key`` is stored."""
        with self._lock:
            return len(self.stored.get(key, []))

    def snapshot(self) -> tuple[list[Received], dict[str | None, list[dict[str, Any]]]]:
        with self._lock:
            return list(self.received), {k: list(v) for k, v in self.stored.items()}

    # -- the app ------------------------------------------------------------------------

    async def _items(self, request: Request) -> JSONResponse:
        body = await request.json()
        key = request.headers.get("idempotency-key")
        with self._lock:
            self.received.append(Received(key, body, request.headers.get("authorization")))
            forced = self.answers.get(key) if key is not None else None
            hold = forced is None and self.hold_next > 0
            if hold:
                self.hold_next -= 1
        if forced is not None:
            status, headers = forced
            return JSONResponse({"error": "not now"}, status_code=status, headers=headers)
        if hold:
            self.arrived.set()
            await anyio.to_thread.run_sync(self.release.wait, HOLD_LIMIT)
        with self._lock:
            if self.dedupe and key is not None and self.stored.get(key):
                item, status = self.stored[key][0], 200
            else:
                item, status = {"id": f"item-{next(self._ids)}", "body": body}, 201
                self.stored.setdefault(key, []).append(item)
        if hold:
            self.item_stored.set()
        return JSONResponse({"id": item["id"]}, status_code=status)

    def start(self) -> Receiver:
        app = Starlette(routes=[Route("/items", self._items, methods=["POST"])])
        self.server = LiveServer(app, free_socket()).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url


def write_connector(directory: Path, receiver: Receiver, *, id: str, idempotent: bool) -> Path:
    """A manifest-only connector that posts each work item to the receiver's ``/items``."""
    base = receiver.url
    delivery = "[delivery]\nidempotent = true\n" if idempotent else ""
    text = f"""\
id = "{id}"
name = "Receiver {id}"
privacy_policy_url = "{base}/privacy"
terms_url = "{base}/terms"

[oauth]
authorize_url = "{base}/authorize"
token_url = "{base}/token"
client_id = "env:RECEIVER_CLIENT_ID"
client_secret = "env:RECEIVER_CLIENT_SECRET"

[[data]]
category = "user.content.work_items"
purpose = "Store each work item the platform sends"

[[actions]]
name = "push"
url = "{base}/items"

{delivery}"""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{id}.toml"
    path.write_text(text, encoding="utf-8")
    return path
