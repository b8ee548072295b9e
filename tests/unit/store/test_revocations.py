"""broker.store.revocations: a claim and a finish change the row once, and only under
the claim they name; stale claims are found by their time."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.models import Connection
from broker.store.revocations import claim_revocation, finish_revocation, stale_revocations

from .conftest import T0, connection


def _row(session: Session, cid: str) -> Connection:
    session.expire_all()
    row = session.get(Connection, cid)
    assert row is not None
    return row


def test_one_claim_wins_and_only_its_finish_revokes(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(connection("cn_1", updated_at=T0))
        session.commit()
        later = T0 + timedelta(minutes=1)
        assert claim_revocation(session, connection_id="cn_1", status="active", now=later)
        assert not claim_revocation(session, connection_id="cn_1", status="active", now=later)
        assert _row(session, "cn_1").status == "revoking"
        wrong = later + timedelta(seconds=1)
        assert not finish_revocation(session, connection_id="cn_1", claimed_at=wrong, now=wrong)
        done = later + timedelta(minutes=1)
        assert finish_revocation(
            session, connection_id="cn_1", claimed_at=later, now=done, last_error="noted"
        )
        row = _row(session, "cn_1")
        assert (row.status, row.last_error) == ("revoked", "noted")
        assert row.revoked_at is not None


def test_a_stale_claim_is_taken_over_only_if_still_stale(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(connection("cn_1", status="revoking", updated_at=T0))
        session.add(connection("cn_2", status="revoking", updated_at=T0 + timedelta(hours=1)))
        session.commit()
        assert stale_revocations(session, claimed_before=T0 + timedelta(minutes=1)) == ["cn_1"]
        now = T0 + timedelta(minutes=5)
        moved = T0 + timedelta(seconds=1)  # someone else claimed it meanwhile
        args = {"connection_id": "cn_1", "status": "revoking", "now": now}
        assert not claim_revocation(session, **args, updated_at=moved)
        assert claim_revocation(session, **args, updated_at=T0)
        assert stale_revocations(session, claimed_before=T0 + timedelta(minutes=1)) == []
        # finished without a note, the connection keeps the error it had (none)
        assert finish_revocation(session, connection_id="cn_1", claimed_at=now, now=now)
        assert _row(session, "cn_1").last_error is None
