"""broker.store.policy_snapshots: the latest check of a page, retrieved or not."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.policy_models import PolicyCheck
from broker.store.policy_snapshots import latest_check

from .conftest import T0

URL = "https://c1.example/privacy"


def _check(minutes: int, digest: str | None, url: str = URL) -> PolicyCheck:
    return PolicyCheck(
        connector_id="c1",
        page="privacy_policy",
        url=url,
        checked_at=T0 + timedelta(minutes=minutes),
        outcome="retrieved" if digest else "not retrieved",
        digest=digest,
    )


def test_the_latest_check_and_the_latest_that_retrieved_the_page(engine: Engine) -> None:
    with Session(engine) as session:
        for row in (_check(1, "a" * 64), _check(2, None), _check(3, "b" * 64, url=URL + "?v=2")):
            session.add(row)
        session.commit()
        args = {"connector_id": "c1", "page": "privacy_policy", "url": URL}
        latest = latest_check(session, **args, retrieved=False)
        assert latest is not None and latest.digest is None
        retrieved = latest_check(session, **args, retrieved=True)
        assert retrieved is not None and retrieved.digest == "a" * 64
        assert latest_check(session, **{**args, "page": "terms"}, retrieved=False) is None


def test_of_checks_at_one_moment_the_one_written_last(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(_check(1, "a" * 64))
        session.commit()
        session.add(_check(1, "b" * 64))
        session.commit()
        found = latest_check(
            session, connector_id="c1", page="privacy_policy", url=URL, retrieved=True
        )
        assert found is not None and found.digest == "b" * 64
