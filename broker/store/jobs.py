"""The transfer row is the job: claiming, leasing and rescheduling pending transfers.

A pending transfer is *due* when ``next_attempt_at`` has passed and nobody holds
it (``lease_owner`` is null). A worker claims due rows by setting its lease
(``lease_owner``, ``lease_until``) and counting the run (``runs``); on PostgreSQL
the candidates are picked ``FOR UPDATE SKIP LOCKED`` so concurrent workers never
wait on or take each other's rows; on SQLite the single write lock makes the
conditional update atomic. The owner keeps its leases alive (``extend_leases``);
a lease that ran out means its worker stopped mid-run: another worker takes the
row over (``claim_lapsed``) and decides from the manifest whether it may send again.

Every change is conditional on the row still being pending and (where it says
so) still held by the caller, so two workers, a worker and ``broker transfers
reconcile``, or a worker and a cancel can never both win.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Integer, and_, bindparam, func, or_, select, update

from broker.core.statuses import TransferStatus
from broker.store.db import write_lock
from broker.store.models import Transfer, from_row

__all__ = [
    "Claim",
    "QueueStats",
    "claim_due",
    "claim_lapsed",
    "extend_leases",
    "queue_stats",
    "release",
]

_T = Transfer.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Claim:
    transfer_id: str
    runs: int
    lapsed: bool = False  # the previous holder's lease ran out: its run's outcome is unknown
    #: the row as its claimer already holds it (as the claim returned it, or a
    #: transfer handed over as it was accepted), so the worker need not read it again
    transfer: Any = field(default=None, compare=False, repr=False)
    #: what the claimer read of the transfer's connection with its batch (see
    #: ``broker.flows.engine.load_connections``); None: not read yet
    connection: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class QueueStats:
    pending: int
    due: int
    in_flight: int
    lapsed: int
    oldest_pending: datetime | None


def _first_in_line(ordered: Collection[str]) -> Any:
    """For connectors that deliver in order: no earlier pending transfer of the same
    connection (the oldest goes first; the next waits until it is final)."""
    earlier = _T.alias("earlier")
    ahead = (
        select(earlier.c.id)
        .where(
            earlier.c.connection_id == _T.c.connection_id,
            earlier.c.status == TransferStatus.PENDING,
            or_(
                earlier.c.created_at < _T.c.created_at,
                and_(earlier.c.created_at == _T.c.created_at, earlier.c.id < _T.c.id),
            ),
        )
        .exists()
    )
    return or_(_T.c.connector_id.not_in(list(ordered)), ~ahead)


_DUE = and_(_T.c.lease_owner.is_(None), _T.c.next_attempt_at <= bindparam("now"))
_LAPSED = and_(_T.c.lease_owner.is_not(None), _T.c.lease_until < bindparam("now"))
# Claim statements by (dialect, lapsed, ordered connectors), built once each: the
# scheduler runs one on every look, and a reused statement keeps its compiled form.
_CLAIMS: dict[tuple[str, bool, tuple[str, ...]], Any] = {}


def _claim_statement(dialect: str, lapsed: bool, ordered: tuple[str, ...]) -> Any:
    key = (dialect, lapsed, ordered)
    stmt = _CLAIMS.get(key)
    if stmt is not None:
        return stmt
    where = _LAPSED if lapsed else _DUE
    if ordered:
        where = and_(where, _first_in_line(ordered))
    pick = (
        select(_T.c.id)
        .where(_T.c.status == TransferStatus.PENDING, where)
        .order_by(_T.c.next_attempt_at, _T.c.created_at)
        .limit(bindparam("limit", type_=Integer))
    )
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        update(_T)
        .where(_T.c.id.in_(pick.scalar_subquery()), _T.c.status == TransferStatus.PENDING)
        .values(
            lease_owner=bindparam("owner"),
            lease_until=bindparam("until", type_=_T.c.lease_until.type),
            runs=_T.c.runs + 1,
        )
        .returning(*_T.columns)  # the claimed rows as they now stand: no second read
    )
    if len(_CLAIMS) < 64:  # ordered sets change only with the installed connectors
        _CLAIMS[key] = stmt
    return stmt


def _claim(
    engine: Engine,
    *,
    now: datetime,
    owner: str,
    until: datetime,
    limit: int,
    lapsed: bool,
    ordered: Collection[str] = (),
) -> list[Claim]:
    if limit <= 0:
        return []
    stmt = _claim_statement(engine.dialect.name, lapsed, tuple(sorted(ordered)))
    params = {"now": now, "owner": owner, "until": until, "limit": limit}
    with write_lock(engine), engine.begin() as conn:
        rows = conn.execute(stmt, params).mappings().all()
    return [
        Claim(
            transfer_id=r["id"],
            runs=r["runs"],
            lapsed=lapsed,
            transfer=from_row(Transfer, r),
        )
        for r in rows
    ]


def claim_due(
    engine: Engine,
    *,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
    ordered: Collection[str] = (),
) -> list[Claim]:
    """Lease up to ``limit`` due transfers to ``owner`` until ``until``; of connectors
    in ``ordered``, only each connection's oldest pending transfer."""
    return _claim(
        engine, now=now, owner=owner, until=until, limit=limit, lapsed=False, ordered=ordered
    )


def claim_lapsed(
    engine: Engine, *, owner: str, now: datetime, until: datetime, limit: int
) -> list[Claim]:
    """Take over up to ``limit`` transfers whose holder's lease ran out before ``now``."""
    return _claim(engine, now=now, owner=owner, until=until, limit=limit, lapsed=True)


def extend_leases(engine: Engine, *, owner: str, ids: Collection[str], until: datetime) -> int:
    """Heartbeat: push ``owner``'s leases on ``ids`` out to ``until``."""
    if not ids:
        return 0
    with engine.begin() as conn:
        result = conn.execute(
            update(_T)
            .where(
                _T.c.id.in_(list(ids)),
                _T.c.status == TransferStatus.PENDING,
                _T.c.lease_owner == owner,
            )
            .values(lease_until=until)
        )
    return result.rowcount


def release(
    engine: Engine,
    *,
    transfer_id: str,
    owner: str,
    at: datetime,
    attempts: list[dict[str, Any]] | None = None,
) -> bool:
    """Give a held transfer back to the queue, due at ``at`` (a rescheduled retry)."""
    values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "next_attempt_at": at}
    if attempts is not None:
        values["attempts"] = attempts
    with engine.begin() as conn:
        result = conn.execute(
            update(_T)
            .where(
                _T.c.id == transfer_id,
                _T.c.status == TransferStatus.PENDING,
                _T.c.lease_owner == owner,
            )
            .values(**values)
        )
    return result.rowcount == 1


def queue_stats(engine: Engine, *, now: datetime) -> QueueStats:
    """What the queue holds now (for ``/metrics`` and ``broker transfers stats``)."""
    pending = _T.c.status == TransferStatus.PENDING
    free = _T.c.lease_owner.is_(None)
    held = _T.c.lease_owner.is_not(None)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                func.count().filter(pending),
                func.count().filter(pending, free, _T.c.next_attempt_at <= now),
                func.count().filter(pending, held, _T.c.lease_until >= now),
                func.count().filter(pending, held, _T.c.lease_until < now),
                func.min(_T.c.created_at).filter(pending),
            ).where(pending)
        ).one()
    oldest = row[4]
    if isinstance(oldest, str):  # SQLite hands back the stored text for an aggregate
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return QueueStats(
        pending=row[0], due=row[1], in_flight=row[2], lapsed=row[3], oldest_pending=oldest
    )
