"""The webhook delivery row is the job: claiming, leasing and finishing deliveries.

The same machinery as transfers (:mod:`broker.store.jobs`): a pending delivery is
*due* when ``next_attempt_at`` has passed and nobody holds it, or when its holder's
lease ran out (the holder stopped mid-send: the message goes again under the same
``webhook-id``, which receivers deduplicate on). A sender claims due rows by setting
its lease and counting the attempt; on PostgreSQL the candidates are picked
``FOR UPDATE SKIP LOCKED``, on SQLite the write lock makes the update atomic.

Only deliveries of enabled endpoints are claimed, and of one endpoint and
connection only the oldest pending delivery (by ``position``): the host receives a
connection's events in the order they happened. Every change after the claim is
conditional on the row still being pending and held by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    exists,
    false,
    or_,
    select,
    true,
    update,
)

from broker.store.db import write_lock
from broker.store.webhook_models import WebhookDelivery, WebhookEndpoint

__all__ = [
    "DeliveryJob",
    "any_due",
    "claim_due",
    "record_delivered",
    "record_failed",
    "record_retry",
]

_D = WebhookDelivery.__table__  # type: ignore[attr-defined]
_E = WebhookEndpoint.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DeliveryJob:
    """A claimed delivery with what sending it needs."""

    id: str
    endpoint_id: str
    event_type: str
    payload: dict[str, Any]
    occurred_at: datetime
    attempts: int
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None


def _first_in_line() -> Any:
    earlier = _D.alias("earlier")
    ahead = (
        select(earlier.c.id)
        .where(
            earlier.c.endpoint_id == _D.c.endpoint_id,
            earlier.c.connection_id == _D.c.connection_id,
            earlier.c.status == "pending",
            earlier.c.position < _D.c.position,
        )
        .exists()
    )
    return or_(_D.c.connection_id.is_(None), _D.c.position.is_(None), ~ahead)


_DUE = or_(
    and_(_D.c.lease_owner.is_(None), _D.c.next_attempt_at <= bindparam("now")),
    and_(_D.c.lease_owner.is_not(None), _D.c.lease_until < bindparam("now")),
)
_ENABLED = _D.c.endpoint_id.in_(select(_E.c.id).where(_E.c.enabled == true()))
_CLAIMS: dict[str, Any] = {}


def _claim_statement(dialect: str) -> Any:
    stmt = _CLAIMS.get(dialect)
    if stmt is not None:
        return stmt
    pick = (
        select(_D.c.id)
        .where(_D.c.status == "pending", _DUE, _ENABLED, _first_in_line())
        .order_by(_D.c.next_attempt_at, _D.c.position)
        .limit(bindparam("limit", type_=Integer))
    )
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True, of=_D)
    stmt = _CLAIMS[dialect] = (
        update(_D)
        .where(_D.c.id.in_(pick.scalar_subquery()), _D.c.status == "pending")
        .values(
            lease_owner=bindparam("owner"),
            lease_until=bindparam("until", type_=_D.c.lease_until.type),
            attempts=_D.c.attempts + 1,
        )
        .returning(_D.c.id)
    )
    return stmt


_JOB = select(
    _D.c.id,
    _D.c.endpoint_id,
    _D.c.event_type,
    _D.c.payload,
    _D.c.occurred_at,
    _D.c.attempts,
    _E.c.url,
    _E.c.secret,
    _E.c.previous_secret,
    _E.c.previous_secret_expires_at,
).join(_E, _E.c.id == _D.c.endpoint_id)


def any_due(conn: Connection, *, now: datetime) -> bool:
    """Whether any pending delivery is due or its lease lapsed at ``now`` (whatever its
    endpoint): one cheap read, to skip a claim (a write) when there is nothing to do."""
    return bool(
        conn.execute(
            select(
                exists().where(
                    _D.c.status == "pending",
                    ((_D.c.lease_owner.is_(None)) & (_D.c.next_attempt_at <= now))
                    | (_D.c.lease_until < now),
                )
            )
        ).scalar()
    )


def claim_due(
    engine: Engine, *, owner: str, now: datetime, until: datetime, limit: int
) -> list[DeliveryJob]:
    """Lease up to ``limit`` due deliveries to ``owner`` until ``until``, counting an
    attempt on each; returns them with their endpoint's URL and sealed secrets."""
    if limit <= 0:
        return []
    params = {"now": now, "owner": owner, "until": until, "limit": limit}
    with write_lock(engine), engine.begin() as conn:
        ids = [r[0] for r in conn.execute(_claim_statement(engine.dialect.name), params)]
        if not ids:
            return []
        rows = conn.execute(_JOB.where(_D.c.id.in_(ids))).all()
    # SQLAlchemy's stubs type a ten-column row with an open tail of Any: it has ten values
    return [DeliveryJob(*row) for row in rows]  # type: ignore[call-arg]


def _held(delivery_id: str, owner: str) -> Any:
    return and_(_D.c.id == delivery_id, _D.c.status == "pending", _D.c.lease_owner == owner)


def record_delivered(
    engine: Engine, *, delivery_id: str, endpoint_id: str, owner: str, now: datetime, code: int
) -> bool:
    """The receiver accepted the message: final; the endpoint's failure run ends."""
    with write_lock(engine), engine.begin() as conn:
        done = conn.execute(
            update(_D)
            .where(_held(delivery_id, owner))
            .values(
                status="delivered",
                completed_at=now,
                last_status_code=code,
                last_error=None,
                lease_owner=None,
                lease_until=None,
            )
        ).rowcount
        if done:
            conn.execute(
                update(_E)
                .where(_E.c.id == endpoint_id, _E.c.failure_run != 0)
                .values(failure_run=0, updated_at=now)
            )
    return done == 1


def record_retry(
    engine: Engine,
    *,
    delivery_id: str,
    owner: str,
    at: datetime,
    code: int | None,
    error: str,
) -> bool:
    """The attempt failed: back to the queue, due at ``at``."""
    with write_lock(engine), engine.begin() as conn:
        done = conn.execute(
            update(_D)
            .where(_held(delivery_id, owner))
            .values(
                next_attempt_at=at,
                last_status_code=code,
                last_error=error[:1000],
                lease_owner=None,
                lease_until=None,
            )
        ).rowcount
    return done == 1


def record_failed(
    engine: Engine,
    *,
    delivery_id: str,
    endpoint_id: str,
    owner: str,
    now: datetime,
    code: int | None,
    error: str,
    max_failures: int,
) -> bool | None:
    """The last attempt failed: the delivery fails for good, the endpoint's failure
    run grows, and at ``max_failures`` the endpoint is disabled. Returns True when
    this disabled it, False when not, None when the delivery was no longer held."""
    with write_lock(engine), engine.begin() as conn:
        done = conn.execute(
            update(_D)
            .where(_held(delivery_id, owner))
            .values(
                status="failed",
                completed_at=now,
                last_status_code=code,
                last_error=error[:1000],
                lease_owner=None,
                lease_until=None,
            )
        ).rowcount
        if not done:
            return None
        run = conn.execute(
            update(_E)
            .where(_E.c.id == endpoint_id)
            .values(failure_run=_E.c.failure_run + 1, updated_at=now)
            .returning(_E.c.failure_run)
        ).scalar()
        if run is None or run < max_failures:
            return False
        reason = (
            f"disabled after {run} deliveries in a row failed for good; the last: {error[:300]}"
        )
        disabled = conn.execute(
            update(_E)
            .where(_E.c.id == endpoint_id, _E.c.enabled == true())
            .values(enabled=false(), disabled_reason=reason, updated_at=now)
        ).rowcount
    return disabled == 1
