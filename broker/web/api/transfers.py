"""Transfers: share data over a connection; list what was shared."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from broker.core.errors import InvalidInput, PayloadTooLarge
from broker.flows.audit import TransferFilter, export_transfers, list_transfers
from broker.flows.share import TransferRequest, create_transfer, transfer_dict
from broker.web.deps import AdminKey, AuditorKey, RuntimeDep

router = APIRouter(prefix="/v1", tags=["transfers"])


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"request body contains {name}, which is not JSON")


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"the request body is larger than the limit of {limit} bytes",
            details={"limit_bytes": limit},
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the request body is larger than the limit of {limit} bytes",
                details={"limit_bytes": limit},
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidInput("the request body is not valid JSON") from None


@router.post("/connections/{connection_id}/transfers", status_code=201)
async def create(
    connection_id: str, request: Request, rt: RuntimeDep, key: AdminKey
) -> JSONResponse:
    body = await _read_json(request, rt.settings.max_payload_bytes)
    parsed = TransferRequest.parse(body)
    transfer, new = await run_in_threadpool(
        create_transfer, rt, connection_id=connection_id, request=parsed, actor=key.id
    )
    return JSONResponse(
        _json(transfer_dict(transfer)),
        status_code=201 if new else 200,
        headers=None if new else {"Idempotent-Replayed": "true"},
    )


def _json(data: dict[str, Any]) -> dict[str, Any]:
    return jsonable_encoder(data)


def _filter(
    user: str | None,
    connector: str | None,
    category: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
) -> TransferFilter:
    return TransferFilter(
        user_id=user,
        connector_id=connector,
        category=category,
        status=status,
        since=since,
        until=until,
    )


@router.get("/transfers")
def transfers(
    rt: RuntimeDep,
    _key: AuditorKey,
    user: str | None = None,
    connector: str | None = None,
    category: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    items, next_cursor = list_transfers(
        rt, _filter(user, connector, category, status, since, until), cursor=cursor, limit=limit
    )
    return {"transfers": items, "next_cursor": next_cursor}


@router.get("/transfers/export")
def export(
    rt: RuntimeDep,
    _key: AuditorKey,
    format: str = "jsonl",
    user: str | None = None,
    connector: str | None = None,
    category: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    flt = _filter(user, connector, category, status, since, until)
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
