"""Idempotency keys of POST requests: claim a key before the work, keep the answer
after it, replay it to a retry (broker.web.idempotency sends the requests here).

A key is the caller's (``principal``), for one route; it lives ``TTL`` (24 hours, as
Stripe keeps them). Used again with another request body: ``409
idempotency_key_reused``; while the first request with it is still running: ``409
conflict`` (``details.reason: in_progress``), so two retries never both do the work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.core.errors import Conflict, IdempotencyConflict
from broker.runtime import Runtime
from broker.store.db import session_scope
from broker.store.idempotency import delete_keys_before, find_idempotency_key
from broker.store.idempotency_models import IdempotencyKey
from broker.store.types import utcnow

__all__ = ["TTL", "Claim", "Stored", "claim", "finish", "release"]

TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Claim:
    """Which request a key belongs to."""

    principal: str
    route: str
    key: str
    request_sha256: str


@dataclass(frozen=True)
class Stored:
    """The first answer given under a key."""

    status: int
    media_type: str | None
    location: str | None
    body: str


def _find(session: Session, c: Claim) -> IdempotencyKey | None:
    return find_idempotency_key(session, principal=c.principal, route=c.route, key=c.key)


def claim(rt: Runtime, c: Claim) -> Stored | None:
    """``None``: the key is now this request's, run it (then ``finish`` or ``release``);
    a ``Stored``: the answer to replay. Raises for another body or a running request."""
    with session_scope(rt.engine) as session:
        delete_keys_before(session, cutoff=utcnow() - TTL)
        row = _find(session, c)
        if row is None:
            session.add(IdempotencyKey(**c.__dict__))
            try:
                session.flush()
                return None
            except IntegrityError:  # a concurrent request took it first
                session.rollback()
                row = _find(session, c)
                if row is None:
                    raise _in_progress(c) from None
        return _stored(row, c)


def _stored(row: IdempotencyKey, c: Claim) -> Stored:
    if row.request_sha256 != c.request_sha256:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request; use a new key",
            details={"idempotency_key": c.key},
        )
    if row.status is None or row.body is None:
        raise _in_progress(c)
    return Stored(row.status, row.media_type, row.location, row.body)


def _in_progress(c: Claim) -> Conflict:
    return Conflict(
        "a request with this Idempotency-Key is still running; retry it later",
        details={"idempotency_key": c.key, "reason": "in_progress"},
    )


def finish(rt: Runtime, c: Claim, answer: Stored) -> None:
    """Keep the answer given under the key."""
    with session_scope(rt.engine) as session:
        row = _find(session, c)
        if row is not None:
            row.status, row.media_type = answer.status, answer.media_type
            row.location, row.body = answer.location, answer.body
            session.add(row)


def release(rt: Runtime, c: Claim) -> None:
    """Give the key up (the request failed on the broker's side): a retry runs anew."""
    with session_scope(rt.engine) as session:
        row = _find(session, c)
        if row is not None and row.status is None:
            session.delete(row)
