"""``Idempotency-Key`` on every ``POST`` under /v1, as Stripe has it: the first answer
under a key is kept (status, body, ``Location``) and a retry with the same key and
body gets it again, with ``Idempotent-Replayed: true``, without the work being done
twice. The transfer route keeps its own per-connection keys (with the transfer, in
broker.flows.engine) and is left alone here. Answers that say nothing about the
request (``401``, ``403``, ``429``, any ``5xx``) are not kept: a retry runs again."""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.core.errors import BrokerError, InvalidInput, PayloadTooLarge
from broker.flows.idempotency import Claim, Stored, claim, finish, release

if TYPE_CHECKING:
    from broker.runtime import Runtime

__all__ = ["IdempotencyKeys", "request_digest"]

_OWN_KEYS = re.compile(r"^/v1/connections/[^/]+/transfers$")  # the transfer's own store
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")  # visible ASCII, as a header carries it
_NOT_KEPT = {401, 403, 429}


def request_digest(body: bytes) -> str:
    """SHA-256 of the request: of its JSON in canonical form (key order and spacing do
    not make another request), or of its bytes when it is not JSON."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
        body = canonical.encode()
    except (ValueError, RecursionError):
        pass
    return hashlib.sha256(body).hexdigest()


def _error(exc: BrokerError) -> Response:
    return JSONResponse(exc.to_dict(), status_code=exc.status)


class IdempotencyKeys:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        # The cheap checks first: every other request (the hot transfer POST among
        # them) passes without its headers being parsed.
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith("/v1/")
            or _OWN_KEYS.match(path)
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get("idempotency-key")
        if key is None or "authorization" not in headers:  # no key; or the route answers 401
            await self.app(scope, receive, send)
            return
        if not _KEY.match(key):
            bad = InvalidInput(
                "Idempotency-Key must be 1-200 visible ASCII characters",
                details={"field": "Idempotency-Key"},
            )
            await _error(bad)(scope, receive, send)
            return
        rt = scope["app"].state.runtime
        try:
            body = await _read(receive, rt.settings.max_payload_bytes)
        except PayloadTooLarge as exc:
            await _error(exc)(scope, receive, send)
            return
        c = Claim(
            principal=hashlib.sha256(headers["authorization"].encode()).hexdigest(),
            route=f"POST {path}",
            key=key,
            request_sha256=request_digest(body),
        )
        try:
            stored = await run_in_threadpool(claim, rt, c)
        except BrokerError as exc:
            await _error(exc)(scope, receive, send)
            return
        if stored is not None:
            await _replay(stored)(scope, receive, send)
            return
        await self._run(scope, body, receive, send, rt, c)

    async def _run(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, rt: Runtime, c: Claim
    ) -> None:
        sent = False
        start: Message = {}
        chunks: list[bytes] = []
        held: list[Message] = []  # sent on once the answer is kept: a retry then finds it

        async def replay_body() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            held.append(message)

        try:
            await self.app(scope, replay_body, keep)
        except BaseException:
            await run_in_threadpool(release, rt, c)
            raise
        status = start.get("status", 500)
        if status >= 500 or status in _NOT_KEPT:
            await run_in_threadpool(release, rt, c)
        else:
            answer = Headers(raw=start.get("headers", []))
            stored = Stored(
                status=status,
                media_type=answer.get("content-type"),
                location=answer.get("location"),
                body=b"".join(chunks).decode("utf-8", "replace"),
            )
            await run_in_threadpool(finish, rt, c, stored)
        for message in held:
            await send(message)


async def _read(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge.over(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(stored: Stored) -> Response:
    headers = {"Idempotent-Replayed": "true"}
    if stored.location:
        headers["Location"] = stored.location
    response = Response(stored.body, status_code=stored.status, headers=headers)
    if stored.media_type:
        response.headers["content-type"] = stored.media_type
    return response
