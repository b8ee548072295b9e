"""broker.store.recorded: consent records by id and each connector's latest."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.recorded import consent_records, latest_consent, latest_consents

from .conftest import T0, connection, consent


def _seed(engine: Engine) -> None:
    later = T0 + timedelta(minutes=1)
    with Session(engine) as session:
        session.add(connection("cn_1"))
        session.add(connection("cn_2", connector_id="c2"))
        session.flush()
        session.add(consent("cr_a", "cn_1"))
        session.add(consent("cr_b", "cn_1", recorded_at=later))
        session.add(consent("cr_c", "cn_1", recorded_at=later))  # same moment: larger id
        session.add(consent("cr_d", "cn_2", connector_id="c2"))
        session.commit()


def test_records_by_id(engine: Engine) -> None:
    _seed(engine)
    with Session(engine) as session:
        found = consent_records(session, ids=["cr_d", "cr_a", "cr_zz"])
        assert sorted(c.id for c in found) == ["cr_a", "cr_d"]
        assert consent_records(session, ids=[]) == []


def test_the_latest_record_of_each_connector(engine: Engine) -> None:
    _seed(engine)
    with Session(engine) as session:
        assert [c.id for c in latest_consents(session)] == ["cr_b", "cr_c", "cr_d"]
        latest = latest_consent(session, connector_id="c1")
        assert latest is not None and latest.id == "cr_c"
        assert latest_consent(session, connector_id="c9") is None
