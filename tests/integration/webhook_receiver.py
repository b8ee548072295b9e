"""The host's webhook endpoint on loopback: records every message, answers as told.

:class:`HookReceiver` is a Starlette app (``POST /hooks``) served by uvicorn in a
thread. Each request is kept with its headers and raw body; the answer is the next
status of ``statuses`` (then ``default``). :meth:`wait_for` blocks until a number of
requests arrived (no sleeping: a condition variable the app notifies).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import LiveServer, free_socket

__all__ = ["Hook", "HookReceiver"]


@dataclass(frozen=True)
class Hook:
    headers: dict[str, str]
    body: str
    answered: int

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> Any:
        """The parsed body, if its signature verifies with ``secret`` (else raises)."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class HookReceiver:
    default: int = 200
    statuses: deque[int] = field(default_factory=deque)
    hooks: list[Hook] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    server: LiveServer | None = None

    async def _hook(self, request: Request) -> Response:
        body = (await request.body()).decode()
        with self._cond:
            status = self.statuses.popleft() if self.statuses else self.default
            self.hooks.append(Hook(dict(request.headers), body, status))
            self._cond.notify_all()
        return Response(b"{}", status_code=status, media_type="application/json")

    def start(self) -> HookReceiver:
        app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])
        self.server = LiveServer(app, free_socket()).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.server.url}/hooks"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Hook]:
        """The requests received once there are at least ``count`` (fails on timeout)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.hooks) >= count, timeout)
            got = list(self.hooks)
        assert ok, f"expected {count} webhook requests, got {len(got)}"
        return got

    def received(self) -> list[Hook]:
        with self._cond:
            return list(self.hooks)
