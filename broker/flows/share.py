"""Share: check a payload against the user's grant, record it, deliver it.

Order of events for one transfer request:

1. The connection must exist (404) and the action must be declared (422).
2. A repeated ``idempotency_key`` returns the earlier transfer, never a
   second delivery (a different payload under the same key is a 409).
   A blocked request does not take its key, so a corrected retry can use it.
3. A connection that is not ``active``, a field outside the grant in
   ``reject`` mode, or a purpose the manifest does not declare: the
   transfer is recorded as ``blocked`` with a ``transfer.blocked`` event,
   and the request is refused (409 / 403). Nothing is sent.
4. Otherwise the transfer row (``pending``) and its ``transfer.pending``
   event are committed *before* the first byte leaves; the outcome
   (``delivered`` / ``failed``) and its event are committed after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from broker.core.connector import Connector
from broker.core.errors import (
    ConnectionNotActive,
    DeliveryFailed,
    ForbiddenUse,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    OutsideGrant,
    PurposeNotDeclared,
)
from broker.core.manifest import Action
from broker.core.policy import is_data_use
from broker.core.scope import canonical_payload, check_scope, drop_fields, payload_digest
from broker.core.tokens import new_secret
from broker.flows.delivery import DeliveryOutcome, deliver
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import Connection, ConsentRecord, Transfer, TransferCategory

__all__ = ["TransferRequest", "create_transfer", "transfer_dict"]

MODES = ("reject", "drop")


@dataclass(frozen=True)
class TransferRequest:
    action: str
    data: dict[str, Any]
    purpose: str | None = None
    mode: str = "reject"
    idempotency_key: str | None = None
    use: str | None = None  # a fideslang data-use key the caller says this transfer serves

    @classmethod
    def parse(cls, body: Any) -> TransferRequest:
        if not isinstance(body, dict):
            raise InvalidInput("the request body must be a JSON object")
        unknown = set(body) - {"action", "data", "purpose", "mode", "idempotency_key", "use"}
        if unknown:
            raise InvalidInput(
                f"unknown field(s): {', '.join(sorted(unknown))}",
                details={"fields": sorted(unknown)},
            )
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise InvalidInput(
                "action is required and must be a string", details={"field": "action"}
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise InvalidInput(
                "data is required and must be a JSON object", details={"field": "data"}
            )
        purpose = body.get("purpose")
        if purpose is not None and (not isinstance(purpose, str) or not 0 < len(purpose) <= 500):
            raise InvalidInput(
                "purpose must be a string of 1-500 characters", details={"field": "purpose"}
            )
        mode = body.get("mode", "reject")
        if mode not in MODES:
            raise InvalidInput("mode must be 'reject' or 'drop'", details={"field": "mode"})
        key = body.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
            raise InvalidInput(
                "idempotency_key must be a string of 1-200 characters",
                details={"field": "idempotency_key"},
            )
        use = body.get("use")
        if use is not None and (not isinstance(use, str) or not is_data_use(use)):
            raise InvalidInput("use must be a known data-use key", details={"field": "use"})
        return cls(
            action=action, data=data, purpose=purpose, mode=mode, idempotency_key=key, use=use
        )


def transfer_dict(t: Transfer) -> dict[str, Any]:
    data = t.model_dump()
    data["connector"] = data.pop("connector_id")
    return data


def _destination(connector: Connector, action: Action, settings: dict[str, str] | None) -> str:
    """Host and path of the action's URL, filled in with the connection's settings."""
    try:
        url = connector.bind(action, settings or {}).url
    except (KeyError, ValueError):
        url = action.url  # delivery will fail and say why
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


def _existing(session: Session, connection_id: str, key: str) -> Transfer | None:
    return session.exec(
        select(Transfer).where(
            Transfer.connection_id == connection_id, Transfer.idempotency_key == key
        )
    ).first()


def _replay(existing: Transfer, digest: str | None) -> Transfer:
    if digest is not None and existing.payload_sha256 not in (None, digest):
        raise IdempotencyConflict(
            "this idempotency_key was already used for a different payload",
            details={"transfer_id": existing.id},
        )
    return existing


def _event_fields(t: Transfer) -> dict[str, Any]:
    return {
        "user_id": t.user_id,
        "connector_id": t.connector_id,
        "connection_id": t.connection_id,
        "transfer_id": t.id,
        "consent_id": t.consent_id,
        "categories": list(t.categories),
        "field_paths": list(t.field_paths),
        "purpose": t.purpose,
        "legal_basis": t.legal_basis,
        "payload_sha256": t.payload_sha256,
        "payload_bytes": t.payload_bytes,
        "destination": t.destination,
    }


def _record(rt: Runtime, transfer: Transfer, event: str, details: dict[str, Any]) -> None:
    """Insert a new transfer row and its event in one transaction."""
    with session_scope(rt.engine) as session:
        session.add(transfer)
        session.flush()
        for category in transfer.categories:
            session.add(TransferCategory(transfer_id=transfer.id, category=category))
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=transfer.created_at,
            event=event,
            actor=transfer.actor,
            outcome=transfer.status,
            details=details,
            **_event_fields(transfer),
        )


def _block(rt: Runtime, transfer: Transfer, reason: str, details: dict[str, Any]) -> Transfer:
    """Record a refused request. It does not take the idempotency key: the
    caller may fix the request and retry under the same key."""
    transfer.status = "blocked"
    transfer.reason = reason
    transfer.completed_at = transfer.created_at
    if transfer.idempotency_key:
        details = {**details, "idempotency_key": transfer.idempotency_key}
        transfer.idempotency_key = None
    _record(rt, transfer, "transfer.blocked", {"reason": reason, **details})
    return transfer


def _finish(rt: Runtime, transfer_id: str, outcome: DeliveryOutcome) -> Transfer:
    with session_scope(rt.engine) as session:
        t = session.get(Transfer, transfer_id)
        assert t is not None
        t.status = "delivered" if outcome.delivered else "failed"
        t.response_status = outcome.status_code
        t.response_id = outcome.response_id
        t.reason = outcome.reason
        t.attempts = outcome.attempts
        t.completed_at = rt.clock()
        session.add(t)
        details: dict[str, Any] = {"attempts": len(outcome.attempts)}
        if outcome.status_code is not None:
            details["status_code"] = outcome.status_code
        if outcome.response_id:
            details["response_id"] = outcome.response_id
        if outcome.reason:
            details["reason"] = outcome.reason
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=t.completed_at,
            event=f"transfer.{t.status}",
            actor="broker",
            outcome=t.status,
            details=details,
            **_event_fields(t),
        )
    return t


def create_transfer(
    rt: Runtime, *, connection_id: str, request: TransferRequest, actor: str | None
) -> tuple[Transfer, bool]:
    """Run one transfer request; returns the transfer and whether it was new.

    Raises the refusal (403/409) after recording a blocked transfer, and
    ``DeliveryFailed`` after recording a failed one.
    """
    with Session(rt.engine) as session:
        conn = session.get(Connection, connection_id)
        if conn is None:
            raise NotFound(
                f"no connection {connection_id!r}", details={"connection_id": connection_id}
            )
        consent = session.get(ConsentRecord, conn.consent_id) if conn.consent_id else None
        existing = (
            _existing(session, connection_id, request.idempotency_key)
            if request.idempotency_key
            else None
        )
    connector = rt.registry.get(conn.connector_id)
    manifest = connector.manifest
    action = manifest.action(request.action)
    if action is None:
        raise InvalidInput(
            f"{manifest.name} has no action {request.action!r}",
            details={"field": "action", "actions": [a.name for a in manifest.actions]},
        )
    now = rt.clock()
    transfer = Transfer(
        id="tr_" + new_secret(nbytes=12),
        connection_id=conn.id,
        user_id=conn.user_id,
        connector_id=conn.connector_id,
        action=action.name,
        purpose=request.purpose,
        legal_basis="consent",
        consent_id=conn.consent_id,
        mode=request.mode,
        status="pending",
        categories=[],
        field_paths=[],
        dropped=[],
        destination=_destination(connector, action, conn.settings),
        idempotency_key=request.idempotency_key,
        attempts=[],
        actor=actor,
        created_at=now,
    )
    granted = set(consent.granted_categories) if consent else set()
    decision = check_scope(rt.catalog, request.data, granted)
    data = request.data
    if decision.outside and request.mode == "drop":
        data = drop_fields(request.data, set(decision.field_paths))
    body = canonical_payload(data)
    if existing is not None:
        return _replay(existing, payload_digest(body)), False
    if conn.status != "active" or consent is None:
        transfer.categories = list(decision.categories)
        transfer.field_paths = [f.path for f in (*decision.allowed, *decision.outside)]
        t = _block(rt, transfer, f"connection is {conn.status}", {"status": conn.status})
        raise ConnectionNotActive(
            f"the connection is {conn.status}; nothing was sent",
            details={"transfer_id": t.id, "status": conn.status},
        )
    outside = [f.to_dict() for f in decision.outside]
    if decision.outside and request.mode == "reject":
        transfer.categories = sorted(
            set(decision.categories) | {f.category for f in decision.outside if f.category}
        )
        transfer.field_paths = [f.path for f in (*decision.allowed, *decision.outside)]
        t = _block(rt, transfer, "fields outside the grant", {"outside": outside})
        raise OutsideGrant(
            "the payload has fields outside what the user granted; nothing was sent",
            details={"transfer_id": t.id, "fields": outside},
        )
    if decision.outside:
        transfer.dropped = outside
    transfer.categories = list(decision.categories)
    transfer.field_paths = list(decision.field_paths)
    if not decision.allowed:
        t = _block(rt, transfer, "nothing within the grant", {"dropped": outside})
        raise OutsideGrant(
            "no field of the payload is within the grant; nothing was sent",
            details={"transfer_id": t.id, "fields": outside},
        )
    declared = {d.category: d.purpose for d in manifest.data if d.category in decision.categories}
    if request.purpose is not None and request.purpose not in declared.values():
        t = _block(rt, transfer, "purpose not declared", {"purpose": request.purpose})
        raise PurposeNotDeclared(
            f"{manifest.name} does not declare that purpose for these categories",
            details={"transfer_id": t.id, "declared": sorted(set(declared.values()))},
        )
    uses = sorted({d.use for d in manifest.data if d.category in decision.categories})
    if forbidden := rt.policy.forbidden_in([request.use] if request.use else uses):
        use, by = next(iter(forbidden.items()))
        t = _block(rt, transfer, "forbidden use", {"use": use, "forbidden_by": by})
        raise ForbiddenUse(
            f"the data-use policy forbids {use!r}; nothing was sent",
            details={"transfer_id": t.id, "use": use, "forbidden_by": by},
        )
    if request.use is not None and request.use not in uses:
        t = _block(rt, transfer, "use not declared", {"use": request.use})
        raise PurposeNotDeclared(
            f"{manifest.name} does not declare that use for these categories",
            details={"transfer_id": t.id, "declared_uses": uses},
        )
    if transfer.purpose is None:
        transfer.purpose = "; ".join(dict.fromkeys(declared[c] for c in decision.categories))
    transfer.payload_sha256 = payload_digest(body)
    transfer.payload_bytes = len(body)
    try:
        _record(
            rt,
            transfer,
            "transfer.pending",
            {"dropped": outside} if transfer.dropped else {},
        )
    except IntegrityError:
        with Session(rt.engine) as session:
            existing = _existing(session, connection_id, request.idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, transfer.payload_sha256), False
    outcome = DeliveryOutcome(delivered=False, reason="interrupted before completion")
    try:
        # The connector gets a deep copy of the granted payload; the digest above is of
        # that payload's canonical JSON (the exact body of a manifest action).
        outcome = deliver(
            rt,
            connection_id=connection_id,
            connector=connector,
            action=action,
            payload=data,
            settings=conn.settings,
        )
    finally:
        finished = _finish(rt, transfer.id, outcome)
    if not outcome.delivered:
        raise DeliveryFailed(
            f"{manifest.name} did not accept the transfer: {outcome.reason}",
            details={"transfer_id": finished.id, "transfer": transfer_dict(finished)},
        )
    return finished, True
