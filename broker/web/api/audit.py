"""The audit log: integrity, per-recipient summary, raw entries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder

from broker.flows.audit import recipients_report, verify_log
from broker.store.audit import iter_entries, latest_head
from broker.web.deps import AuditorKey, RuntimeDep

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/verify")
def verify(rt: RuntimeDep, _key: AuditorKey) -> dict[str, Any]:
    result = verify_log(rt)
    body = result.to_dict()
    head = latest_head(rt.engine)
    body["chain_head"] = {"seq": head.seq, "hash": head.hash} if head else None
    return body


@router.get("/recipients")
def recipients(rt: RuntimeDep, _key: AuditorKey) -> dict[str, Any]:
    return {"recipients": jsonable_encoder(recipients_report(rt))}


@router.get("/log")
def log(
    rt: RuntimeDep,
    _key: AuditorKey,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    entries = []
    for entry in iter_entries(rt.engine, after=after, batch=limit):
        entries.append(entry.to_dict())
        if len(entries) >= limit:
            break
    next_after = entries[-1]["seq"] if len(entries) == limit else None
    return {"entries": entries, "next_after": next_after}
