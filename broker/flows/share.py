"""Share: decide and record a transfer request; the delivery engine sends it.

Order of events for one transfer request:

1. The connection must exist (404) and the action must be declared (422).
2. The gateway (:func:`broker.core.gateway.decide`) gives its verdict.
3. A repeated idempotency key returns the earlier transfer, never a second
   delivery (a different payload under the same key is a 409). A blocked
   request does not take its key, so a corrected retry can use it.
4. A refusal is recorded as a ``blocked`` transfer with a ``transfer.blocked``
   event, and the request is refused (409 / 403). Nothing is sent.
5. Otherwise the transfer row (``pending``, due now, with the granted payload
   sealed by the vault) and its ``transfer.pending`` event are committed in one
   transaction: the transfer is accepted. From here on the row is the job
   (:mod:`broker.flows.engine`): nothing is sent that this commit does not show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.core.connector import Connector
from broker.core.errors import IdempotencyConflict, InvalidInput, InvalidSetting, NotFound
from broker.core.gateway import Allowed, Refused, TransferRequest, decide
from broker.core.manifest import Action
from broker.core.pseudonyms import new_salt, salted_digest
from broker.core.statuses import TransferStatus
from broker.core.tokens import new_secret
from broker.flows.terms import current_terms_version
from broker.runtime import Runtime
from broker.store.audit_writer import AuditWriter, Event, audit_writer
from broker.store.models import Transfer, from_row
from broker.store.summaries import outcome_of
from broker.store.transfer_rows import insert_transfer, link_and_grant, transfer_by_key

__all__ = [
    "PRIVATE_COLUMNS",
    "TransferRequest",
    "accept_transfer",
    "event_fields",
    "payload_kind",
    "transfer_dict",
    "writer",
]


@dataclass(frozen=True)
class _Link:
    """What a transfer needs of its connection."""

    id: str
    user_id: str
    connector_id: str
    status: str
    consent_id: str | None
    settings: dict[str, str] | None
    last_error: str | None


# Job bookkeeping and the sealed payload never leave through the API.
PRIVATE_COLUMNS = frozenset({"payload_sealed", "payload_salt", "lease_owner", "lease_until"})


def transfer_dict(t: Transfer) -> dict[str, Any]:
    data = t.model_dump(exclude=set(PRIVATE_COLUMNS))
    data["connector"] = data.pop("connector_id")
    return data


def payload_kind(transfer_id: str) -> str:
    """The vault binding of a transfer's sealed payload (one transfer's ciphertext
    cannot be passed off as another's)."""
    return f"payload:{transfer_id}"


def event_fields(t: Transfer | dict[str, Any]) -> dict[str, Any]:
    """What an audit entry about transfer ``t`` (the object, or its row as a dict) says
    of it."""
    get = t.__getitem__ if isinstance(t, dict) else partial(getattr, t)
    fields = {name: get(name) for name in _EVENT_COLUMNS}
    fields["transfer_id"] = get("id")
    fields["categories"] = list(get("categories"))
    fields["field_paths"] = list(get("field_paths"))
    return fields


_EVENT_COLUMNS = (
    "user_id",
    "connector_id",
    "connection_id",
    "consent_id",
    "purpose",
    "legal_basis",
    "payload_sha256",
    "payload_bytes",
    "destination",
)


def _destination(connector: Connector, action: Action, settings: dict[str, str] | None) -> str:
    """Host and path of the action's URL, filled in with the connection's settings."""
    try:
        url = connector.bind(action, settings or {}).url
    except InvalidSetting:
        url = action.url  # delivery will fail and say why
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


def _replay(existing: Transfer, verdict: Allowed | Refused) -> Transfer:
    digest = verdict.payload_sha256
    if existing.payload_salt is not None:  # format 2: salted with the transfer's salt
        digest = salted_digest(existing.payload_salt, verdict.body)
    if existing.payload_sha256 not in (None, digest):
        raise IdempotencyConflict(
            "this idempotency_key was already used for a different payload",
            details={"transfer_id": existing.id},
        )
    return existing


def writer(rt: Runtime) -> AuditWriter:
    """This process's group-commit audit writer, reporting to its metrics."""
    w = audit_writer(rt.engine, head_file=rt.settings.audit_head_file)
    if w.on_batch is None:
        w.on_batch = rt.metrics.observe_batch
    return w


def _defaults() -> dict[str, Any]:
    """Every column of a transfer row with its default (the template of a new row)."""
    blank = Transfer(  # type: ignore[call-arg]  # the lists are each row's own: _block, _pending
        id="",
        connection_id="",
        user_id="",
        connector_id="",
        action="",
        status=TransferStatus.PENDING,
        legal_basis="consent",
        mode="reject",
        destination="",
    )
    return blank.model_dump()


_ROW_DEFAULTS = _defaults()


def _record(rt: Runtime, row: dict[str, Any], event: str, details: dict[str, Any]) -> Transfer:
    """Insert a new transfer row and its event in one (group-committed) transaction;
    returns the transfer as stored."""
    categories = [
        {"transfer_id": row["id"], "category": c, "created_at": row["created_at"]}
        for c in row["categories"]
    ]
    audit = Event(
        time=row["created_at"],
        event=event,
        actor=row["actor"],
        fields={"outcome": row["status"], "details": details, **event_fields(row)},
        # a blocked request is final at once: counted in the recipient summary with it
        summary=outcome_of(row) if row["status"] != TransferStatus.PENDING else None,
    )

    def unit(conn: Connection) -> tuple[list[Event], None]:
        insert_transfer(conn, row=row, categories=categories)
        return [audit], None

    started = time.perf_counter()
    writer(rt).run(unit)
    rt.metrics.record_seconds.labels("accept").observe(time.perf_counter() - started)
    return from_row(Transfer, row)


def _block(rt: Runtime, row: dict[str, Any], verdict: Refused) -> Transfer:
    """Record a refused request. It does not take the idempotency key: the
    caller may fix the request and retry under the same key."""
    row.update(
        status=TransferStatus.BLOCKED,
        reason=verdict.reason,
        categories=list(verdict.categories),
        field_paths=list(verdict.field_paths),
        dropped=list(verdict.dropped),
        completed_at=row["created_at"],
    )
    details = {"reason": verdict.reason, **verdict.record}
    if row["idempotency_key"]:
        details["idempotency_key"] = row["idempotency_key"]
        row["idempotency_key"] = None
    return _record(rt, row, "transfer.blocked", details)


def _pending(
    rt: Runtime, row: dict[str, Any], verdict: Allowed, lease_owner: str | None
) -> Transfer:
    created = row["created_at"]
    salt = new_salt()  # the digest is salted, so a small payload cannot be guessed
    row.update(
        categories=list(verdict.categories),
        field_paths=list(verdict.field_paths),
        dropped=list(verdict.dropped),
        purpose=row["purpose"] if row["purpose"] is not None else verdict.purpose,
        payload_sha256=salted_digest(salt, verdict.body),
        payload_salt=salt,
        payload_bytes=len(verdict.body),
        data_uses=list(verdict.uses),
        payload_sealed=rt.vault.seal(
            verdict.body.decode(), connection_id=row["connection_id"], kind=payload_kind(row["id"])
        ),
        next_attempt_at=created,
    )
    if lease_owner is not None:  # handed straight to a worker of this process
        row.update(lease_owner=lease_owner, lease_until=created + rt.lease_duration(), runs=1)
    return _record(
        rt,
        row,
        "transfer.pending",
        {"dropped": list(verdict.dropped)} if verdict.dropped else {},
    )


def accept_transfer(
    rt: Runtime,
    *,
    connection_id: str,
    request: TransferRequest,
    actor: str | None,
    lease_owner: str | None = None,
) -> tuple[Transfer, bool]:
    """Decide and record one transfer request; returns the transfer and whether it
    is new (False: an idempotent replay of an earlier one).

    Raises the refusal (403/409) after recording a blocked transfer. With
    ``lease_owner`` the new pending row is already leased to that worker.
    """
    with rt.engine.connect() as db:  # one read: the connection and its grant
        found = link_and_grant(db, connection_id=connection_id)
    if found is None:
        raise NotFound(f"no connection {connection_id!r}", details={"connection_id": connection_id})
    conn = _Link(*found[:-2])
    objections = tuple(found[-2] or ())
    granted = found[-1]
    existing = None
    if request.idempotency_key:
        with Session(rt.engine) as session:
            existing = transfer_by_key(
                session, connection_id=connection_id, key=request.idempotency_key
            )
    connector = rt.registry.get(conn.connector_id)
    manifest = connector.manifest
    action = manifest.action(request.action)
    if action is None:
        raise InvalidInput(
            f"{manifest.name} has no action {request.action!r}",
            details={"field": "action", "actions": [a.name for a in manifest.actions]},
        )
    verdict = decide(
        manifest=manifest,
        catalog=rt.catalog,
        policy=rt.policy,
        connection_status=conn.status,
        granted=granted,
        request=request,
        objections=objections,
        paused_for=conn.last_error,
    )
    if existing is not None:
        return _replay(existing, verdict), False
    # The new row as a plain dict: one Transfer object is built, from what is stored.
    row = {
        **_ROW_DEFAULTS,
        "id": "tr_" + new_secret(nbytes=12),
        "connection_id": conn.id,
        "user_id": conn.user_id,
        "connector_id": conn.connector_id,
        "action": action.name,
        "purpose": request.purpose,
        "legal_basis": "consent",
        "consent_id": conn.consent_id,
        "mode": request.mode,
        "status": TransferStatus.PENDING,
        "categories": [],
        "field_paths": [],
        "dropped": [],
        "destination": _destination(connector, action, conn.settings),
        "idempotency_key": request.idempotency_key,
        "attempts": [],
        "actor": actor,
        "created_at": rt.clock(),
        "terms_version": current_terms_version(rt, conn.connector_id),  # from memory
    }
    if isinstance(verdict, Refused):
        raise verdict.exception(_block(rt, row, verdict).id)
    if manifest.delivery.ordered:
        lease_owner = None  # it waits its turn in the queue behind earlier ones
    try:
        transfer = _pending(rt, row, verdict, lease_owner)
    except IntegrityError:
        with Session(rt.engine) as session:
            existing = transfer_by_key(
                session, connection_id=connection_id, key=request.idempotency_key or ""
            )
        if existing is None:
            raise
        return _replay(existing, verdict), False
    return transfer, True
