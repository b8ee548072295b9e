"""The host's webhook endpoints: register, list, change, rotate the secret, delete,
read the delivery log, send a ping.

A new endpoint's signing secret (``whsec_…``) is returned once and stored sealed by
the vault. Rotating it returns a new one; the previous secret stays valid for
:data:`ROTATION_GRACE` (messages are signed with both meanwhile), so the host can
switch without losing a message. A second rotation within that time replaces the
previous secret with the current one. Nothing here ever returns a stored secret.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from broker.core.errors import Conflict, InvalidInput, InvariantBroken, NotFound
from broker.core.tokens import new_secret
from broker.core.webhooks import EVENT_TYPES, PING, endpoint_url_problem, new_endpoint_secret
from broker.flows.paging import cursor_for, decode_cursor
from broker.flows.webhooks import SECRET_KIND, wake_sender
from broker.runtime import Runtime
from broker.store.db import session_scope
from broker.store.webhook_endpoints import delete_deliveries, deliveries_page, endpoints_page
from broker.store.webhook_models import WebhookDelivery, WebhookEndpoint
from broker.store.webhook_outbox import enqueue_event

__all__ = [
    "DELIVERY_STATUSES",
    "ROTATION_GRACE",
    "create_endpoint",
    "delete_endpoint",
    "delivery_dict",
    "endpoint_dict",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "rotate_secret",
    "send_ping",
    "update_endpoint",
]

ROTATION_GRACE = timedelta(hours=24)
DELIVERY_STATUSES = ("pending", "delivered", "failed")
_MAX_DESCRIPTION = 500


def _z(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def endpoint_dict(row: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the API shows it: never its secret."""
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events or []),
        "description": row.description,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "failure_run": row.failure_run,
        "previous_secret_expires_at": _z(row.previous_secret_expires_at),
        "created_at": _z(row.created_at),
        "updated_at": _z(row.updated_at),
    }


def delivery_dict(row: WebhookDelivery) -> dict[str, Any]:
    """A delivery as the log shows it: status, attempts, last response; no secret."""
    return {
        "id": row.id,
        "endpoint_id": row.endpoint_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": _z(row.next_attempt_at) if row.status == "pending" else None,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "data": row.payload,
        "created_at": _z(row.created_at),
        "completed_at": _z(row.completed_at),
    }


# -- validation -------------------------------------------------------------------------


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("url must be a string", details={"field": "url"})
    if problem := endpoint_url_problem(value):
        raise InvalidInput(problem, details={"field": "url"})
    return value


def _events(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(
            "events must be a non-empty list of event types",
            details={"field": "events", "allowed": list(EVENT_TYPES)},
        )
    unknown = [e for e in value if e not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            "unknown event types: " + ", ".join(sorted(str(e) for e in unknown))[:300],
            details={"field": "events", "allowed": list(EVENT_TYPES)},
        )
    return list(dict.fromkeys(value))


def _description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_DESCRIPTION:
        raise InvalidInput(
            f"description must be a string of at most {_MAX_DESCRIPTION} characters",
            details={"field": "description"},
        )
    return value


def _found(session: Session, endpoint_id: str) -> WebhookEndpoint:
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}", details={"endpoint_id": endpoint_id})
    return row


def _page(rows: list, limit: int) -> tuple[list, str | None]:
    """The first ``limit`` of ``rows`` (read with one more) and the next page's cursor."""
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (cursor_for(rows[-1].created_at, rows[-1].id) if more else None)


# -- operations -------------------------------------------------------------------------


def create_endpoint(
    rt: Runtime, *, url: Any, events: Any, description: Any = None
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its signing secret (shown this once)."""
    now = rt.clock()
    endpoint_id = "whe_" + new_secret(nbytes=12)
    secret = new_endpoint_secret()
    row = WebhookEndpoint(
        id=endpoint_id,
        url=_url(url),
        events=_events(events),
        description=_description(description),
        secret=rt.vault.seal(secret, connection_id=endpoint_id, kind=SECRET_KIND),
        enabled=True,
        failure_run=0,
        created_at=now,
        updated_at=now,
    )
    with session_scope(rt.engine) as session:
        session.add(row)
    return row, secret


def list_endpoints(
    rt: Runtime, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    before = decode_cursor(cursor) if cursor else None
    with Session(rt.engine) as session:
        found = endpoints_page(session, before=before, limit=limit + 1)
    rows, nxt = _page(found, limit)
    return [endpoint_dict(r) for r in rows], nxt


def get_endpoint(rt: Runtime, endpoint_id: str) -> WebhookEndpoint:
    with Session(rt.engine) as session:
        return _found(session, endpoint_id)


def update_endpoint(rt: Runtime, endpoint_id: str, changes: dict[str, Any]) -> WebhookEndpoint:
    """Change ``url``, ``events``, ``description`` or ``enabled`` (enabling again ends
    the failure run and clears the reason; pending deliveries resume)."""
    with session_scope(rt.engine) as session:
        row = _found(session, endpoint_id)
        if "url" in changes:
            row.url = _url(changes["url"])
        if "events" in changes:
            row.events = _events(changes["events"])
        if "description" in changes:
            row.description = _description(changes["description"])
        if "enabled" in changes:
            enabled = changes["enabled"]
            if not isinstance(enabled, bool):
                raise InvalidInput("enabled must be true or false", details={"field": "enabled"})
            if enabled and not row.enabled:
                row.failure_run = 0
                row.disabled_reason = None
            elif not enabled and row.enabled:
                row.disabled_reason = "disabled by an administrator"
            row.enabled = enabled
        row.updated_at = rt.clock()
        session.add(row)
    if row.enabled:
        wake_sender(rt)
    return row


def rotate_secret(rt: Runtime, endpoint_id: str) -> tuple[WebhookEndpoint, str]:
    """A new signing secret (returned once); the current one stays valid for 24 h."""
    now = rt.clock()
    secret = new_endpoint_secret()
    with session_scope(rt.engine) as session:
        row = _found(session, endpoint_id)
        row.previous_secret = row.secret
        row.previous_secret_expires_at = now + ROTATION_GRACE
        row.secret = rt.vault.seal(secret, connection_id=endpoint_id, kind=SECRET_KIND)
        row.updated_at = now
        session.add(row)
    return row, secret


def delete_endpoint(rt: Runtime, endpoint_id: str) -> None:
    """Remove the endpoint and its delivery log; nothing more is sent to it."""
    with session_scope(rt.engine) as session:
        row = _found(session, endpoint_id)
        delete_deliveries(session, endpoint_id=endpoint_id)
        session.delete(row)


def list_deliveries(
    rt: Runtime, endpoint_id: str, *, limit: int, cursor: str | None, status: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    get_endpoint(rt, endpoint_id)
    before = decode_cursor(cursor) if cursor else None
    with Session(rt.engine) as session:
        found = deliveries_page(
            session, endpoint_id=endpoint_id, status=status, before=before, limit=limit + 1
        )
    rows, nxt = _page(found, limit)
    return [delivery_dict(r) for r in rows], nxt


def send_ping(rt: Runtime, endpoint_id: str) -> WebhookDelivery:
    """Queue a ``webhook.ping`` to this endpoint (whatever it subscribes to)."""
    now = rt.clock()
    with session_scope(rt.engine) as session:
        row = _found(session, endpoint_id)
        if not row.enabled:
            raise Conflict(
                "this webhook endpoint is disabled; enable it first",
                details={"endpoint_id": endpoint_id, "disabled_reason": row.disabled_reason},
            )
        ids = enqueue_event(
            session.connection(),
            PING,
            at=now,
            ids={},
            status="ping",
            endpoint_ids=[endpoint_id],
        )
    wake_sender(rt)
    with Session(rt.engine) as session:
        delivery = session.get(WebhookDelivery, ids[0])
    if delivery is None:
        raise InvariantBroken("the ping just queued is gone", details={"endpoint_id": endpoint_id})
    return delivery
