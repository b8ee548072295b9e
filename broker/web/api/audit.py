"""The audit log: integrity, per-recipient summary, raw entries, checkpoints and proofs."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import PlainTextResponse, Response

from broker.core.errors import Conflict, InvalidInput, NotFound
from broker.flows.audit import recipients_report
from broker.flows.checkpoints import checkpoint_dict, public_keys
from broker.flows.integrity import (
    find_verification,
    integrity_status,
    start_full,
    verification_dict,
)
from broker.flows.processing_records import processing_records, records_yaml
from broker.flows.receipts import receipt_jwks, receipt_public_keys
from broker.flows.report_meta import report_meta
from broker.store.audit import iter_entries, latest_head
from broker.store.tree import checkpoints, consistency_proof, inclusion_proof, latest_checkpoint
from broker.web.api.error_responses import errors
from broker.web.api.paging import Cursor, position
from broker.web.api.schemas_audit import (
    Checkpoint,
    CheckpointPage,
    ConsistencyProof,
    InclusionProof,
    Integrity,
    JsonWebKeySet,
    LogPage,
    ProcessingRecords,
    PublicKeySet,
    RecipientPage,
    VerificationRun,
)
from broker.web.deps import SQL_INT_MAX, AuditorKey, RuntimeDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/verify", operation_id="verifyAuditLog", response_model=Integrity)
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


@router.post(
    "/verifications",
    status_code=202,
    operation_id="startVerification",
    response_model=VerificationRun,
    responses=errors(Conflict),
)
def start_verification(rt: RuntimeDep, key: AuditorKey, response: Response) -> dict[str, Any]:
    """Start a full re-verification in the background (``409`` while one runs); follow
    it at ``Location``; its result is also kept as an ``audit.verified`` event."""
    run = start_full(rt, actor=key.id)
    response.headers["Location"] = f"/v1/audit/verifications/{run.id}"
    return _run_json(verification_dict(run)) or {}


@router.get(
    "/verifications/{verification_id}",
    operation_id="getVerification",
    response_model=VerificationRun,
    responses=errors(NotFound),
)
def get_verification(
    rt: RuntimeDep, _key: AuditorKey, verification_id: Annotated[int, Path(ge=1, le=SQL_INT_MAX)]
) -> dict[str, Any]:
    """One verification run: its status and progress, then its result."""
    return _run_json(verification_dict(find_verification(rt, verification_id))) or {}


@router.get(
    "/recipients",
    operation_id="listRecipients",
    response_model=RecipientPage,
    response_model_exclude_unset=True,
)
def recipients(rt: RuntimeDep, _key: AuditorKey) -> dict[str, Any]:
    return {"recipients": jsonable_encoder(recipients_report(rt)), "report": report_meta(rt)}


@router.get(
    "/log", operation_id="listAuditEntries", response_model=LogPage, responses=errors(InvalidInput)
)
def log(
    rt: RuntimeDep,
    _key: AuditorKey,
    cursor: Cursor = None,
    after: Annotated[
        int, Query(ge=0, le=SQL_INT_MAX, deprecated=True, description="old form of cursor")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    after = position(cursor, after, "after")
    entries = []
    for entry in iter_entries(rt.engine, after=after, batch=limit):
        entries.append(entry.to_dict())
        if len(entries) >= limit:
            break
    next_after = entries[-1]["seq"] if len(entries) == limit else None
    nxt = None if next_after is None else str(next_after)
    return {"entries": entries, "next_cursor": nxt, "next_after": next_after}


_CHECKPOINT_ANSWER = {
    200: {
        "description": "the checkpoint (format=json), or its signed note (format=note)",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Checkpoint"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    **errors(NotFound),
}


@router.get(
    "/checkpoint",
    operation_id="getLatestCheckpoint",
    response_model=Checkpoint,
    response_model_exclude_unset=True,
    responses=_CHECKPOINT_ANSWER,
)
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


@router.get(
    "/checkpoints",
    operation_id="listCheckpoints",
    response_model=CheckpointPage,
    response_model_exclude_unset=True,
    responses=errors(InvalidInput),
)
def checkpoint_list(
    rt: RuntimeDep,
    _key: AuditorKey,
    cursor: Cursor = None,
    after_id: Annotated[
        int, Query(ge=0, le=SQL_INT_MAX, deprecated=True, description="old form of cursor")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Every checkpoint in signing order."""
    after_id = position(cursor, after_id, "after_id")
    rows = checkpoints(rt.engine, after_id=after_id, limit=limit)
    items = [{"id": r.id, **checkpoint_dict(r)} for r in rows]
    last = items[-1]["id"] if len(items) == limit else None
    nxt = None if last is None else str(last)
    return {"checkpoints": items, "next_cursor": nxt, "next_after_id": last}


@router.get(
    "/proof/inclusion",
    operation_id="getInclusionProof",
    response_model=InclusionProof,
    responses=errors(NotFound, InvalidInput),
)
def proof_inclusion(
    rt: RuntimeDep,
    _key: AuditorKey,
    seq: Annotated[int, Query(ge=1, le=SQL_INT_MAX)],
    size: Annotated[int | None, Query(ge=1, le=SQL_INT_MAX)] = None,
) -> dict[str, Any]:
    """RFC 9162 inclusion proof of entry ``seq`` (leaf ``seq - 1``) in the tree of ``size``."""
    return inclusion_proof(rt.engine, seq=seq, size=size)


@router.get(
    "/proof/consistency",
    operation_id="getConsistencyProof",
    response_model=ConsistencyProof,
    responses=errors(NotFound, InvalidInput),
)
def proof_consistency(
    rt: RuntimeDep,
    _key: AuditorKey,
    old: Annotated[int, Query(alias="from", ge=0, le=SQL_INT_MAX)],
    new: Annotated[int | None, Query(alias="to", ge=0, le=SQL_INT_MAX)] = None,
) -> dict[str, Any]:
    """RFC 9162 consistency proof from the tree of ``from`` entries to the one of ``to``."""
    return consistency_proof(rt.engine, old=old, new=new)


_KEYS_ANSWER = {
    200: {
        "description": "the keys (json), a JWK Set (jwks) or the key file (text)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    **errors(InvalidInput),
}


@router.get(
    "/public-key",
    operation_id="getPublicKeys",
    response_model=PublicKeySet | JsonWebKeySet,
    response_model_exclude_unset=True,
    responses=_KEYS_ANSWER,
)
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


_PROCESSING_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "records of processing (json), or fideslang System resources (fides)",
        "content": {"application/yaml": {"schema": {"type": "string"}}},
    },
}


@router.get(
    "/processing",
    operation_id="getProcessingRecords",
    response_model=ProcessingRecords,
    response_model_exclude_unset=True,
    responses=_PROCESSING_ANSWER,
)
def processing(
    rt: RuntimeDep,
    _key: AuditorKey,
    format: Annotated[str, Query(pattern="^(json|fides)$")] = "json",
) -> dict[str, Any] | Response:
    """Records of processing (GDPR Art. 30) per recipient; ``format=fides``: fideslang
    ``System`` resources (YAML) for a Fides data map."""
    records, meta = processing_records(rt), report_meta(rt)
    if format == "fides":
        return Response(records_yaml(records, meta), media_type="application/yaml")
    return {"recipients": jsonable_encoder(records), "report": meta}
