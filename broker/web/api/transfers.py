"""Transfers: share data over a connection; list what was shared."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from broker.core.errors import (
    ConnectionNotActive,
    DeliveryFailed,
    ForbiddenUse,
    IdempotencyConflict,
    InvalidInput,
    NotCancellable,
    NotFound,
    OutcomeNotRecorded,
    OutcomeUnknown,
    OutsideGrant,
    PayloadTooLarge,
    PurposeNotDeclared,
    UserObjected,
)
from broker.core.gateway import TransferRequest
from broker.core.statuses import TransferStatus
from broker.flows.audit import TransferFilter, export_transfers, list_transfers
from broker.flows.cancel import cancel_transfer, find_transfer
from broker.flows.keys import authenticate, require_role
from broker.flows.share import transfer_dict
from broker.flows.submit import raise_for_outcome, submit_transfer
from broker.web.api.error_responses import errors
from broker.web.api.schemas import Transfer, TransferCreate, TransferPage
from broker.web.deps import AdminKey, AuditorKey, Bearer, RuntimeDep
from broker.web.openapi import request_body

if TYPE_CHECKING:
    from broker.runtime import Runtime
    from broker.store.models import Transfer as TransferRow

log = logging.getLogger("broker.web")

router = APIRouter(prefix="/v1", tags=["transfers"])

# Accepts run in a pool of their own: asyncio's executor hop costs a fraction of
# anyio's threadpool hop (its cancel scope and capacity limiter showed as ~9% of the
# process's GIL time under 16 clients), and a synchronous transfer waiting for its
# outcome holds a thread of this pool, not one the other endpoints need. Its size is
# anyio's default limit, which this path had before.
_ACCEPTS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="broker-accept")


# Deeper than any real payload, far below what the recursive scope walk can take.
MAX_JSON_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"request body contains {name}, which is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf: no JSON encoder can send it on
        raise InvalidInput(
            f"request body contains the number {text[:40]}, which is out of range",
            details={"limit": "numbers must be finite IEEE 754 doubles"},
        )
    return value


def _check_strings_and_depth(value: Any) -> None:
    """Refuse what parses but cannot be stored or sent on: nesting deeper than
    ``MAX_JSON_DEPTH``, lone UTF-16 surrogates (``"\\ud800"``, not encodable as UTF-8)
    and U+0000 (refused by PostgreSQL text and JSON columns), in keys and values."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_JSON_DEPTH:
            raise InvalidInput(
                f"the request body nests objects and arrays deeper than {MAX_JSON_DEPTH} levels",
                details={"max_depth": MAX_JSON_DEPTH},
            )
        if isinstance(item, dict):
            for key, child in item.items():
                _check_string(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_string(item)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise InvalidInput("request body contains the character U+0000, which is not accepted")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            "request body contains a lone UTF-16 surrogate (like \\ud800), which is not text"
        ) from None


async def _read_json(request: Request, limit: int) -> Any:
    return _parse_json(await _read_body(request, limit))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge.over(limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge.over(limit)
            chunks.append(chunk)
    except ClientDisconnect:  # nothing was decided: a line for the operator, no traceback
        log.info("%s %s: the client left before its request body ended", request.method,
                 request.url.path)  # fmt: skip
        raise InvalidInput("the request body ended before it was complete") from None
    return b"".join(chunks)


def _parse_json(raw: bytes) -> Any:
    try:
        body = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        raise InvalidInput("the request body is not valid JSON") from None
    _check_strings_and_depth(body)
    return body


def _prefers_async(request: Request) -> bool:
    """RFC 7240 ``Prefer: respond-async`` (among other preferences, any case)."""
    for header in request.headers.getlist("prefer"):
        for pref in header.split(","):
            if pref.split(";")[0].strip().lower() == "respond-async":
                return True
    return False


def _answer(transfer: TransferRow, new: bool) -> JSONResponse:
    """201 with the outcome, 202 while it is pending, 200 for a replay; a failed,
    cancelled or unknown outcome is the error it is, carrying the transfer."""
    body = _json(transfer_dict(transfer))
    location = {"Location": f"/v1/transfers/{transfer.id}"}
    if not new:
        return JSONResponse(body, status_code=200, headers={"Idempotent-Replayed": "true"})
    if transfer.status == TransferStatus.PENDING:
        return JSONResponse(body, status_code=202, headers=location)
    raise_for_outcome(transfer, body)
    return JSONResponse(body, status_code=201, headers=location)


_TRANSFER_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": Transfer, "description": "an idempotent replay (`Idempotent-Replayed: true`)"},
    201: {"model": Transfer, "description": "delivered (`Location: /v1/transfers/{id}`)"},
    202: {"model": Transfer, "description": "accepted, still `pending`; poll `Location`"},
    **errors(
        OutsideGrant,
        PurposeNotDeclared,
        ForbiddenUse,
        UserObjected,
        NotFound,
        ConnectionNotActive,
        IdempotencyConflict,
        PayloadTooLarge,
        InvalidInput,
        DeliveryFailed,
        OutcomeUnknown,
        OutcomeNotRecorded,
    ),
}
_TRANSFER_HEADERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "1-200 characters, unique per connection: a repeat replays the answer",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "`respond-async` (RFC 7240): answer 202 at once, without waiting",
        "schema": {"type": "string"},
        "example": "respond-async",
    },
]


# The body is read and checked by hand (TransferRequest.parse, one threadpool call) and
# the answer is a JSONResponse: TransferCreate and Transfer document them, without a
# pydantic pass over either on the hot path.
@router.post(
    "/connections/{connection_id}/transfers",
    status_code=201,
    operation_id="createTransfer",
    response_model=None,
    responses=_TRANSFER_ANSWERS,
    openapi_extra={
        **request_body(TransferCreate, "what to send, and under which terms"),
        "parameters": _TRANSFER_HEADERS,
        "x-roles": ["admin"],
    },
)
async def create(
    connection_id: str, request: Request, rt: RuntimeDep, bearer: Bearer
) -> JSONResponse:
    return await create_transfer(rt, connection_id, request, bearer)


async def create_transfer(
    rt: Runtime, connection_id: str, request: Request, bearer: str | None
) -> JSONResponse:
    """The route's work; broker.web.fast_route calls it without the framework around.

    The hot path: the key check, the parse and the accept run in one threadpool
    call (each hop costs about as much CPU as the check itself). The key is checked
    before the body is parsed, so an unauthenticated caller learns nothing of it."""
    raw = await _read_body(request, rt.settings.max_payload_bytes)
    header_key = request.headers.get("idempotency-key")
    wait = 0.0 if _prefers_async(request) else rt.settings.transfer_wait

    def accept() -> tuple[TransferRow, bool]:
        key = require_role(authenticate(rt.engine, bearer), "admin")
        parsed = TransferRequest.parse(_parse_json(raw), idempotency_key=header_key)
        return submit_transfer(
            rt, connection_id=connection_id, request=parsed, actor=key.id, wait=wait
        )

    transfer, new = await asyncio.get_running_loop().run_in_executor(_ACCEPTS, accept)
    return _answer(transfer, new)


@router.post(
    "/transfers/{transfer_id}/cancel",
    operation_id="cancelTransfer",
    response_model=Transfer,
    response_model_exclude_unset=True,
    responses=errors(NotFound, NotCancellable),
)
def cancel(transfer_id: str, rt: RuntimeDep, key: AdminKey) -> dict[str, Any]:
    """Cancel a transfer that has not started (queued, or waiting for a retry)."""
    return _json(transfer_dict(cancel_transfer(rt, transfer_id, actor=key.id)))


def _json(data: dict[str, Any]) -> dict[str, Any]:
    """A transfer as JSON values (the schema ``Transfer``): its times RFC 3339 UTC with
    ``Z``, ``connector_id`` beside its old name, without a walk over every value (the
    rest is JSON already)."""
    out: dict[str, Any] = {k: _z(v) if isinstance(v, datetime) else v for k, v in data.items()}
    out["connector_id"] = out["connector"]
    out["attempts"] = [{**a, "at": _z_text(a["at"])} if "at" in a else a for a in out["attempts"]]
    return out


def _z(value: datetime) -> str:
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


def _z_text(text: Any) -> Any:
    """An attempt's time, written by ``datetime.isoformat`` in UTC: ``+00:00`` as ``Z``."""
    return text[:-6] + "Z" if isinstance(text, str) and text.endswith("+00:00") else text


# The filters, bounded like the console's (docs/api.md): longer values match nothing.
User = Annotated[str | None, Query(max_length=200)]
ConnectorId = Annotated[str | None, Query(max_length=63)]
OldConnector = Annotated[
    str | None, Query(max_length=63, deprecated=True, description="old name of connector_id")
]
Category = Annotated[str | None, Query(max_length=200)]
Status = Annotated[str | None, Query(max_length=20)]


def _filter(
    user: str | None,
    connector: str | None,
    category: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
) -> TransferFilter:
    return TransferFilter.parse(
        user=user, connector=connector, category=category, status=status, since=since, until=until
    )


@router.get(
    "/transfers",
    operation_id="listTransfers",
    response_model=TransferPage,
    response_model_exclude_unset=True,
    responses=errors(InvalidInput),
)
def transfers(
    rt: RuntimeDep,
    _key: AuditorKey,
    user: User = None,
    connector_id: ConnectorId = None,
    connector: OldConnector = None,
    category: Category = None,
    status: Status = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    flt = _filter(user, connector_id or connector, category, status, since, until)
    items, next_cursor = list_transfers(rt, flt, cursor=cursor, limit=limit)
    return {"transfers": items, "next_cursor": next_cursor}


_EXPORT_ANSWER = {
    200: {
        "description": "one transfer a line (JSON Lines), or CSV with a header row",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    },
    **errors(InvalidInput),
}


@router.get("/transfers/export", operation_id="exportTransfers", responses=_EXPORT_ANSWER)
def export(
    rt: RuntimeDep,
    _key: AuditorKey,
    format: Annotated[str, Query(pattern="^(jsonl|csv)$")] = "jsonl",
    user: User = None,
    connector_id: ConnectorId = None,
    connector: OldConnector = None,
    category: Category = None,
    status: Status = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    flt = _filter(user, connector_id or connector, category, status, since, until)
    lines = export_transfers(rt, flt, format)
    first = next(lines, "")  # validate before the response starts
    media = "text/csv" if format == "csv" else "application/x-ndjson"

    def stream() -> Iterator[str]:
        yield first
        yield from lines

    return StreamingResponse(
        stream(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="transfers.{format}"'},
    )


# After /transfers/export: a path parameter would take "export" too.
@router.get(
    "/transfers/{transfer_id}",
    operation_id="getTransfer",
    response_model=Transfer,
    responses=errors(NotFound),
    response_model_exclude_unset=True,
)
def get_transfer(transfer_id: str, rt: RuntimeDep, _key: AuditorKey) -> dict[str, Any]:
    """One transfer: its status (``pending`` until final), attempts and outcome."""
    return _json(transfer_dict(find_transfer(rt, transfer_id)))
