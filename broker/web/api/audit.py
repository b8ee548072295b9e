"""The audit log: integrity, per-recipient summary, raw entries, checkpoints and proofs."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import PlainTextResponse, Response

from broker.core.errors import InvalidInput
from broker.flows.audit import recipients_report
from broker.flows.checkpoints import checkpoint_dict, public_keys
from broker.flows.integrity import (
    find_verification,
    integrity_status,
    start_full,
    verification_dict,
)
from broker.flows.receipts import receipt_jwks, receipt_public_keys
from broker.flows.reports import processing_records, records_yaml
from broker.store.audit import iter_entries, latest_head
from broker.store.tree import checkpoints, consistency_proof, inclusion_proof, latest_checkpoint
from broker.web.deps import SQL_INT_MAX, AuditorKey, RuntimeDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/verify")
def verify(rt: RuntimeDep, key: AuditorKey) -> dict[str, Any]:
    """The last completed verification, after verifying (incrementally) what was
    appended since; never a whole-log pass in the request (see docs/api.md)."""
    status = integrity_status(rt, actor=key.id)
    last = status["last"]
    fields = ("ok", "checked", "head", "first_bad_seq", "problem", "message")
    if last is None:
        body: dict[str, Any] = dict.fromkeys(fields)
        body["message"] = "not verified yet: the first full verification is running"
    else:
        body = {name: last[name] for name in fields}
    head = latest_head(rt.engine)
    body["chain_head"] = {"seq": head.seq, "hash": head.hash} if head else None
    body["verification"] = _run_json(last)
    body["running"] = _run_json(status["running"])
    body["unverified"] = status["unverified"]
    return body


def _run_json(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """A verification run as JSON, times as RFC 3339 UTC with ``Z``."""
    if run is None:
        return None
    out = dict(run)
    for name in ("started_at", "finished_at"):
        if out[name] is not None:
            out[name] = out[name].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out


@router.post("/verifications", status_code=202)
def start_verification(rt: RuntimeDep, key: AuditorKey, response: Response) -> dict[str, Any]:
    """Start a full re-verification in the background (``409`` while one runs); follow
    it at ``Location``; its result is also kept as an ``audit.verified`` event."""
    run = start_full(rt, actor=key.id)
    response.headers["Location"] = f"/v1/audit/verifications/{run.id}"
    return _run_json(verification_dict(run)) or {}


@router.get("/verifications/{verification_id}")
def get_verification(
    rt: RuntimeDep, _key: AuditorKey, verification_id: Annotated[int, Path(ge=1, le=SQL_INT_MAX)]
) -> dict[str, Any]:
    """One verification run: its status and progress, then its result."""
    return _run_json(verification_dict(find_verification(rt, verification_id))) or {}


@router.get("/recipients")
def recipients(rt: RuntimeDep, _key: AuditorKey) -> dict[str, Any]:
    return {"recipients": jsonable_encoder(recipients_report(rt))}


@router.get("/log")
def log(
    rt: RuntimeDep,
    _key: AuditorKey,
    after: Annotated[int, Query(ge=0, le=SQL_INT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    entries = []
    for entry in iter_entries(rt.engine, after=after, batch=limit):
        entries.append(entry.to_dict())
        if len(entries) >= limit:
            break
    next_after = entries[-1]["seq"] if len(entries) == limit else None
    return {"entries": entries, "next_after": next_after}


@router.get("/checkpoint", response_model=None)
def checkpoint(
    rt: RuntimeDep,
    _key: AuditorKey,
    format: Annotated[str, Query(pattern="^(json|note)$")] = "json",
) -> dict[str, Any] | Response:
    """The latest signed checkpoint; ``format=note`` gives the bare C2SP signed note of
    the latest *published* one (with witnesses: cosigned by the quorum, cosignatures
    included)."""
    if format == "note":
        from broker.flows.witnesses import published_checkpoint

        return PlainTextResponse(published_checkpoint(rt).note)
    return checkpoint_dict(latest_checkpoint(rt.engine))


@router.get("/checkpoints")
def checkpoint_list(
    rt: RuntimeDep,
    _key: AuditorKey,
    after_id: Annotated[int, Query(ge=0, le=SQL_INT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Every checkpoint in signing order (``id`` pages: pass the last ``id`` as after_id)."""
    rows = checkpoints(rt.engine, after_id=after_id, limit=limit)
    items = [{"id": r.id, **checkpoint_dict(r)} for r in rows]
    return {"checkpoints": items, "next_after_id": items[-1]["id"] if len(items) == limit else None}


@router.get("/proof/inclusion")
def proof_inclusion(
    rt: RuntimeDep,
    _key: AuditorKey,
    seq: Annotated[int, Query(ge=1, le=SQL_INT_MAX)],
    size: Annotated[int | None, Query(ge=1, le=SQL_INT_MAX)] = None,
) -> dict[str, Any]:
    """RFC 9162 inclusion proof of entry ``seq`` (leaf ``seq - 1``) in the tree of ``size``."""
    return inclusion_proof(rt.engine, seq=seq, size=size)


@router.get("/proof/consistency")
def proof_consistency(
    rt: RuntimeDep,
    _key: AuditorKey,
    old: Annotated[int, Query(alias="from", ge=0, le=SQL_INT_MAX)],
    new: Annotated[int | None, Query(alias="to", ge=0, le=SQL_INT_MAX)] = None,
) -> dict[str, Any]:
    """RFC 9162 consistency proof from the tree of ``from`` entries to the one of ``to``."""
    return consistency_proof(rt.engine, old=old, new=new)


@router.get("/public-key", response_model=None)
def public_key(
    rt: RuntimeDep,
    _key: AuditorKey,
    format: Annotated[str, Query(pattern="^(json|text|jwks)$")] = "json",
    keys_of: Annotated[str, Query(alias="keys", pattern="^(checkpoints|receipts)$")] = (
        "checkpoints"
    ),
) -> dict[str, Any] | Response:
    """The checkpoint verifier keys (C2SP vkeys), retired ones with ``retired_at``;
    ``format=text`` is the key file ``verify-export --public-key`` reads.
    ``keys=receipts``: the consent-receipt keys, then the checkpoint keys that signed
    receipts before (``legacy``); ``format=jwks`` (receipts only): the receipt keys as
    a JWK Set, for checking JWS receipts with JOSE tools."""
    if format == "jwks":
        if keys_of != "receipts":
            raise InvalidInput("format=jwks is for keys=receipts (the JWS receipt keys)")
        return receipt_jwks(rt)
    keys = receipt_public_keys(rt) if keys_of == "receipts" else public_keys(rt)
    if format == "text":
        lines = [
            k["vkey"] + (f" retired={k['retired_at']}" if k["retired_at"] else "")
            for k in keys["keys"]
        ]
        return PlainTextResponse("\n".join(lines) + "\n")
    return keys


@router.get("/processing", response_model=None)
def processing(
    rt: RuntimeDep,
    _key: AuditorKey,
    format: Annotated[str, Query(pattern="^(json|fides)$")] = "json",
) -> dict[str, Any] | Response:
    """Records of processing (GDPR Art. 30) per recipient; ``format=fides``: fideslang
    ``System`` resources (YAML) for a Fides data map."""
    records = processing_records(rt)
    if format == "fides":
        return Response(records_yaml(records), media_type="application/yaml")
    return {"recipients": jsonable_encoder(records)}
