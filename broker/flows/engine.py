"""The delivery engine: run one claimed transfer and record its outcome, once.

A worker that holds a transfer's lease (:mod:`broker.store.jobs`) calls
:func:`run_claim`. It

- ends a taken-over transfer (its previous worker stopped mid-run) as
  ``outcome_unknown``, unless the manifest declares the third party idempotent,
  in which case it is sent again under the same ``Idempotency-Key``;
- cancels a transfer whose connection is no longer active (nothing is sent);
- otherwise opens the sealed payload and delivers it (:mod:`broker.flows.delivery`),
  every request carrying ``Idempotency-Key: <transfer id>``;
- reschedules it when the third party asked for a wait longer than the worker
  holds (``Retry-After``), or ends it ``delivered`` / ``failed``.

The outcome is written by :func:`finish` with a conditional update (still
pending, still this worker's lease) together with its audit event; a transient
database error is retried on a fresh connection. An outcome for a transfer that
someone else ended meanwhile changes nothing and is recorded as
``transfer.late_outcome``. A final outcome erases the sealed payload.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Collection
from datetime import timedelta
from functools import partial
from typing import Any, NamedTuple

from limits import parse
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Connection as DbConnection
from sqlalchemy.exc import DBAPIError, OperationalError

from broker.core.connector import Connector
from broker.core.dispatch import DeliveryOutcome
from broker.core.errors import BrokerError, OutcomeNotRecorded
from broker.core.manifest import Action
from broker.core.statuses import ConnectionStatus, TransferStatus
from broker.flows.delivery import deliver
from broker.flows.share import event_fields, payload_kind, writer
from broker.runtime import Runtime
from broker.store.audit_writer import Event
from broker.store.jobs import Claim, release
from broker.store.models import Transfer
from broker.store.rate_limits import DatabaseStorage
from broker.store.summaries import outcome_of
from broker.store.transfer_rows import (
    ConnectionRow,
    connection_row,
    connection_rows,
    record_outcome,
    transfer_with_connection,
)

__all__ = [
    "LAPSED",
    "finish",
    "load",
    "load_connection",
    "load_connections",
    "run_claim",
]

log = logging.getLogger("broker.delivery")

LAPSED = (
    "the worker delivering this transfer stopped before recording the outcome; "
    "the third party may or may not have received it"
)
_RESCHEDULE_MAX = 86400.0  # a Retry-After beyond a day is taken as a day
_DB_RETRIES = (0.05, 0.2, 0.5, 1.0, 2.0, 4.0)


def _transient(exc: DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


def _numbered(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**a, "n": i} for i, a in enumerate(attempts, start=1)]


def _outcome_details(
    attempts: list[dict[str, Any]],
    reason: str | None,
    status_code: int | None,
    response_id: str | None,
) -> dict[str, Any]:
    """The ``details`` of an outcome's audit event."""
    details: dict[str, Any] = {"attempts": len(attempts)}
    if status_code is not None:
        details["status_code"] = status_code
    if response_id:
        details["response_id"] = response_id
    if reason:
        details["reason"] = reason[:1000]
    return details


def _outcome_unit(
    conn: DbConnection,
    *,
    transfer_id: str,
    owner: str | None,
    values: dict[str, Any],
    details: dict[str, Any],
    actor: str,
) -> tuple[list[Event], tuple[Transfer, bool]]:
    """The group writer's unit for an outcome: the conditional write and its event
    (``transfer.<status>``, or ``transfer.late_outcome`` when someone else ended it)."""
    stored, won = record_outcome(conn, transfer_id=transfer_id, owner=owner, values=values)
    status = values["status"]
    if won:
        event, extra = f"transfer.{status}", {}
    else:
        event, extra = "transfer.late_outcome", {"recorded_status": stored.status}
    audit = Event(
        time=values["completed_at"],
        event=event,
        actor=actor,
        fields={"outcome": status, "details": {**details, **extra}, **event_fields(stored)},
        summary=outcome_of(stored) if won else None,  # counted with its outcome
    )
    return [audit], (stored, won)


def finish(
    rt: Runtime,
    transfer: Transfer,
    *,
    owner: str | None,
    status: str,
    attempts: list[dict[str, Any]],
    reason: str | None = None,
    status_code: int | None = None,
    response_id: str | None = None,
    actor: str = "broker",
) -> tuple[Transfer, bool]:
    """Write the final outcome if the transfer is still pending (and, with ``owner``,
    still leased to it); returns the stored transfer and whether this call won.

    Raises ``OutcomeNotRecorded`` when the database stays unreachable."""
    values: dict[str, Any] = {
        "status": status,
        "reason": reason[:1000] if reason else None,
        "attempts": _numbered(attempts),
        "response_status": status_code,
        "response_id": response_id,
        "payload_sealed": None,
        "lease_owner": None,
        "lease_until": None,
        "next_attempt_at": None,
    }
    details = _outcome_details(attempts, reason, status_code, response_id)
    group = writer(rt)
    for pause in (*_DB_RETRIES, None):
        now = rt.clock()

        unit = partial(
            _outcome_unit,
            transfer_id=transfer.id,
            owner=owner,
            values={**values, "completed_at": now},
            details=details,
            actor=actor,
        )
        try:
            started = time.perf_counter()
            stored, won = group.run(unit)
            rt.metrics.record_seconds.labels("outcome").observe(time.perf_counter() - started)
            if won:
                rt.metrics.deliveries.labels(stored.connector_id, status).inc()
            rt.signal_outcome(transfer.id, transfer=stored)
            return stored, won
        except DBAPIError as exc:
            if not _transient(exc):
                raise
            if pause is None:
                break
            log.warning(
                "recording the outcome of %s failed (%s); retrying on a new connection",
                transfer.id,
                type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__,
            )
            time.sleep(pause)
    log.error(
        "the outcome %s of transfer %s could not be recorded; it stays pending under its "
        "lease and is resolved when the lease runs out",
        status,
        transfer.id,
    )
    rt.signal_outcome(transfer.id, unrecorded=status)
    raise OutcomeNotRecorded(
        "the delivery ran, but the broker could not record its outcome; the transfer "
        "stays pending and is resolved automatically",
        details={"transfer_id": transfer.id, "outcome": status},
    )


def load_connections(rt: Runtime, connection_ids: Collection[str]) -> dict[str, ConnectionRow]:
    """The connections of a batch of claimed transfers, in one read (one absent from
    the answer no longer exists)."""
    with rt.engine.connect() as db:
        rows = connection_rows(db, connection_ids=connection_ids)
    return rows


def load_connection(rt: Runtime, connection_id: str) -> ConnectionRow | None:
    with rt.engine.connect() as db:
        return connection_row(db, connection_id=connection_id)


def load(rt: Runtime, transfer_id: str) -> tuple[Transfer | None, ConnectionRow | None]:
    """The transfer and its connection, in one read."""
    with rt.engine.connect() as db:
        return transfer_with_connection(db, transfer_id=transfer_id)


_LIMITERS: weakref.WeakKeyDictionary[Any, FixedWindowRateLimiter] = weakref.WeakKeyDictionary()
_LIMITERS_GUARD = threading.Lock()


def _rate_wait(rt: Runtime, connector_id: str, rate: str | None) -> float | None:
    """None if a delivery to ``connector_id`` may start now under the manifest's
    ``rate_limit``; else the seconds until its window ends. Counted in the database
    (``rate_limit_counters``), so every broker and worker process shares the limit."""
    if rate is None:
        return None
    with _LIMITERS_GUARD:
        limiter = _LIMITERS.get(rt.engine)
        if limiter is None:
            limiter = _LIMITERS[rt.engine] = FixedWindowRateLimiter(DatabaseStorage(rt.engine))
    item = parse(rate)
    if limiter.hit(item, "delivery", connector_id):
        return None
    reset = limiter.get_window_stats(item, "delivery", connector_id).reset_time
    return max(0.05, reset - time.time())


class _Ready(NamedTuple):
    """What sending a claimed transfer needs, once nothing stands in its way."""

    connector: Connector
    conn: ConnectionRow
    action: Action
    payload: Any


def _unsent_ending(
    rt: Runtime,
    claim: Claim,
    t: Transfer,
    conn: ConnectionRow | None,
    connector: Connector | None,
    attempts: list[dict[str, Any]],
) -> tuple[str, str] | _Ready:
    """How a claimed transfer ends without being sent (status, reason), or what sending
    it needs. ``attempts`` gets the lapsed run's entry when the claim took one over."""
    if connector is None:
        return (
            TransferStatus.FAILED,
            f"the connector {t.connector_id!r} is not installed; nothing was sent",
        )
    if claim.lapsed:
        attempts.append({"at": rt.clock().isoformat(), "error": LAPSED})
        if not connector.manifest.delivery.idempotent:
            return TransferStatus.OUTCOME_UNKNOWN, LAPSED
    if conn is None or conn.status != ConnectionStatus.ACTIVE:
        if claim.lapsed:  # the stopped run may have sent it: not "nothing was sent"
            return TransferStatus.OUTCOME_UNKNOWN, LAPSED
        state = conn.status if conn is not None else "gone"
        return TransferStatus.CANCELLED, f"the connection is {state}; nothing was sent"
    action = connector.manifest.action(t.action)
    if action is None:
        return TransferStatus.FAILED, "the action is gone"
    if t.payload_sealed is None or _attempts_left(rt, attempts) <= 0:
        return TransferStatus.FAILED, "no attempts are left"
    try:
        opened = rt.vault.open(
            t.payload_sealed, connection_id=t.connection_id, kind=payload_kind(t.id)
        )
    except BrokerError as exc:
        return (
            TransferStatus.FAILED,
            f"the stored payload could not be opened ({exc.code}); nothing was sent",
        )
    return _Ready(connector, conn, action, json.loads(opened))


def _attempts_left(rt: Runtime, attempts: list[dict[str, Any]]) -> int:
    return rt.settings.delivery_max_attempts - sum(1 for a in attempts if "request" in a)


def _retry_delay(
    rt: Runtime, connector: Connector, outcome: DeliveryOutcome, tries: int
) -> float | None:
    """Seconds until a failed delivery is tried again, or None to end it now."""
    if outcome.delivered:
        return None
    if outcome.unknown:
        # The request went out and no answer came: it may have arrived. Send it
        # again under the same key only if the third party deduplicates by it.
        if connector.manifest.delivery.idempotent and tries < rt.settings.delivery_max_attempts:
            return float(
                min(rt.settings.delivery_backoff_max, rt.settings.delivery_backoff_base * 2**tries)
            )
        return None
    if outcome.retry_in is not None:
        return min(outcome.retry_in, _RESCHEDULE_MAX)
    return None


def run_claim(
    rt: Runtime,
    claim: Claim,
    *,
    owner: str,
    loaded: tuple[Transfer | None, ConnectionRow | None] | None = None,
) -> Transfer | None:
    """Deliver (or resolve) one transfer leased to ``owner``; None if it was not ours.
    ``loaded``: the transfer and its connection, if the caller has just read them."""
    t, conn = loaded if loaded is not None else load(rt, claim.transfer_id)
    if t is None or t.status != TransferStatus.PENDING or t.lease_owner != owner:
        return None
    attempts = list(t.attempts)
    try:
        connector: Connector | None = rt.registry.get(t.connector_id)
    except BrokerError:
        connector = None
    ready = _unsent_ending(rt, claim, t, conn, connector, attempts)
    if not isinstance(ready, _Ready):
        status, reason = ready
        return finish(rt, t, owner=owner, status=status, attempts=attempts, reason=reason)[0]
    connector = ready.connector
    wait = _rate_wait(rt, connector.id, connector.manifest.delivery.rate_limit)
    if wait is not None and _retry_later(rt, t, owner=owner, delay=wait, attempts=attempts):
        return None
    started = time.perf_counter()
    outcome = deliver(
        rt,
        connection_id=t.connection_id,
        connector=connector,
        action=ready.action,
        payload=ready.payload,
        settings=ready.conn.settings,
        idempotency_key=t.id,
        max_attempts=_attempts_left(rt, attempts),
        token=ready.conn.token,
    )
    rt.metrics.delivery_seconds.labels(t.connector_id).observe(time.perf_counter() - started)
    attempts = _numbered(attempts + outcome.attempts)
    delay = _retry_delay(rt, connector, outcome, len(attempts))
    if delay is not None and _retry_later(rt, t, owner=owner, delay=delay, attempts=attempts):
        return None
    status = TransferStatus.DELIVERED if outcome.delivered else TransferStatus.FAILED
    if not outcome.delivered and outcome.unknown:
        status = TransferStatus.OUTCOME_UNKNOWN
    return finish(
        rt,
        t,
        owner=owner,
        status=status,
        attempts=attempts,
        reason=outcome.reason,
        status_code=outcome.status_code,
        response_id=outcome.response_id,
    )[0]


def _retry_later(
    rt: Runtime, t: Transfer, *, owner: str, delay: float, attempts: list[dict[str, Any]]
) -> bool:
    """Give the transfer back to the queue, due in ``delay`` seconds (False: not ours)."""
    at = rt.clock() + timedelta(seconds=delay)
    if release(rt.engine, transfer_id=t.id, owner=owner, at=at, attempts=attempts):
        rt.signal_outcome(t.id)
        return True
    return False
