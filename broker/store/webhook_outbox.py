"""The webhook outbox: deliveries written in the transaction of the event causing them.

:func:`enqueue` is called by both audit append paths (``append_event`` and the group
writer) with the entries they just inserted, on the same connection, so a webhook
delivery commits or rolls back with its audit entry: the host hears of an event
exactly when the log records it. It is on the hot delivery path, so it costs

- nothing when no entry causes a webhook (``transfer.pending``, ``token.refreshed``…);
- one query (the enabled endpoints, a small indexed table) otherwise, however many
  entries the call carries, and nothing more when no endpoint is subscribed;
- one multi-row insert for all deliveries of the call.

Which audit events cause which webhook types: :mod:`broker.core.webhooks`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, true

from broker.core.audit_chain import AuditEntry
from broker.core.tokens import new_secret
from broker.core.webhooks import event_data, webhook_events
from broker.store.webhook_models import WebhookDelivery, WebhookEndpoint

__all__ = ["enqueue", "enqueue_event", "new_delivery_id", "take_hint"]

_E = WebhookEndpoint.__table__  # type: ignore[attr-defined]
_D = WebhookDelivery.__table__  # type: ignore[attr-defined]

# Built once: a reused statement keeps its compiled form.
_ENABLED = select(_E.c.id, _E.c.events).where(_E.c.enabled == true())
_INSERT = insert(_D)
# Engines on which this process enqueued deliveries since the sender last looked: the
# sender's append listener (after the commit) wakes it only then.
_HINTS: weakref.WeakSet[Engine] = weakref.WeakSet()
_PER_ENTRY = 16  # position = audit seq * 16 + index of the webhook type from that entry


def new_delivery_id() -> str:
    return "msg_" + new_secret(nbytes=15)


def take_hint(engine: Engine) -> bool:
    """Whether deliveries were enqueued on ``engine`` since the last call."""
    if engine in _HINTS:
        _HINTS.discard(engine)
        return True
    return False


def _hint(conn: Connection) -> None:
    engine = conn.engine
    if isinstance(engine, Engine):
        _HINTS.add(engine)


def _row(
    endpoint_id: str,
    event_type: str,
    *,
    payload: dict[str, Any],
    connection_id: str | None,
    position: int | None,
    at: datetime,
) -> dict[str, Any]:
    return {
        "id": new_delivery_id(),
        "endpoint_id": endpoint_id,
        "event_type": event_type,
        "payload": payload,
        "connection_id": connection_id,
        "position": position,
        "occurred_at": at,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": at,
        "lease_owner": None,
        "lease_until": None,
        "last_status_code": None,
        "last_error": None,
        "created_at": at,
        "completed_at": None,
    }


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def enqueue(
    conn: Connection, entries: Iterable[AuditEntry], *, names: Mapping[str, str] | None = None
) -> int:
    """Record a delivery per enabled endpoint subscribed to each webhook type the
    ``entries`` (being appended in ``conn``'s transaction) cause; returns how many.
    ``names``: pseudonym -> user id of the users the entries name (the host gets the id)."""
    caused = [
        (e, types) for e in entries if (types := webhook_events(e.event, e.outcome, e.details))
    ]
    if not caused:
        return 0
    endpoints = conn.execute(_ENABLED).all()
    if not endpoints:
        return 0
    rows: list[dict[str, Any]] = []
    for entry, types in caused:
        at = _parse_time(entry.time)
        ids = {
            "user_id": (names or {}).get(entry.user_id or "", entry.user_id),
            "connector_id": entry.connector_id,
            "connection_id": entry.connection_id,
            "transfer_id": entry.transfer_id,
            "consent_id": entry.consent_id,
        }
        for index, event_type in enumerate(types):
            subscribed = [eid for eid, events in endpoints if event_type in (events or ())]
            if not subscribed:
                continue
            payload = event_data(
                audit_seq=entry.seq, ids=ids, categories=entry.categories, status=entry.outcome
            )
            for endpoint_id in subscribed:
                rows.append(
                    _row(
                        endpoint_id,
                        event_type,
                        payload=payload,
                        connection_id=entry.connection_id,
                        position=entry.seq * _PER_ENTRY + index,
                        at=at,
                    )
                )
    if rows:
        conn.execute(_INSERT, rows)
        _hint(conn)
    return len(rows)


def enqueue_event(
    conn: Connection,
    event_type: str,
    *,
    at: datetime,
    ids: Mapping[str, Any],
    categories: Sequence[str] = (),
    status: str | None = None,
    endpoint_ids: Sequence[str] | None = None,
) -> list[str]:
    """Record a delivery of an event that has no audit entry of its own (a connection
    that needs re-consent, a signed checkpoint, a ping) to every enabled endpoint
    subscribed to it, or to ``endpoint_ids`` whatever they subscribe to; in ``conn``'s
    transaction. Returns the delivery ids. Unordered: no position."""
    endpoints = conn.execute(_ENABLED).all()
    if endpoint_ids is not None:
        wanted = [eid for eid, _ in endpoints if eid in endpoint_ids]
    else:
        wanted = [eid for eid, events in endpoints if event_type in (events or ())]
    if not wanted:
        return []
    payload = event_data(audit_seq=None, ids=ids, categories=categories, status=status)
    rows = [
        _row(
            eid,
            event_type,
            payload=payload,
            connection_id=ids.get("connection_id"),
            position=None,
            at=at,
        )
        for eid in wanted
    ]
    conn.execute(_INSERT, rows)
    _hint(conn)
    return [r["id"] for r in rows]
