"""The hot route straight to its handler: ``POST /v1/connections/{id}/transfers``.

Profiled under load (bench/transfers.py async16, py-spy on the broker process),
FastAPI's route matching across the included routers and its per-request dependency
solving took about a sixth of the process's GIL time per transfer, more than the
transfer's own accept. This pure-ASGI layer sits innermost among the app's middlewares,
so the security headers, the NUL guard and the unexpected-error answer still wrap it,
and hands that one route to the handler FastAPI would call (``create_transfer``) with
the same errors (``broker_error_response``). The route stays declared in its router,
for the OpenAPI document and ``url_path_for``; tests drive both ways to one answer.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.core.errors import BrokerError
from broker.web.api.transfers import create_transfer
from broker.web.deps import bearer_of
from broker.web.errors import broker_error_response

__all__ = ["TransferFastPath"]

# The route's own pattern: a path parameter is one segment (no "/"), not empty.
_PATH = re.compile(r"/v1/connections/(?P<id>[^/]+)/transfers")


class TransferFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope.get("root_path")
            or not (match := _PATH.fullmatch(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response: Response
        try:
            rt = scope["app"].state.runtime
            response = await create_transfer(rt, match["id"], request, bearer_of(request))
        except BrokerError as exc:
            response = broker_error_response(request, exc)
        await response(scope, receive, send)
