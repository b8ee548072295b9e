"""broker.store.terms: current versions, changes, and the conditional updates that
pause, resume and answer connections paused for terms."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from broker.core.gateway import TERMS_CHANGED
from broker.store import terms as store
from broker.store.models import Connection, TransferCategory
from broker.store.policy_models import PolicyChange, TermsVersion

from .conftest import T0, connection, consent, transfer


def _change(cid: str, minutes: int, connector_id: str = "c1") -> PolicyChange:
    return PolicyChange(
        id=cid,
        connector_id=connector_id,
        before_version="v1",
        after_version="v2",
        detected_at=T0 + timedelta(minutes=minutes),
        detected_by="check",
        classification="significant",
        changes=[],
        digests={},
    )


def _add(engine: Engine, *rows: Any) -> None:
    with Session(engine) as session:
        for row in rows:
            session.add(row)
            session.flush()
        session.commit()


def _status(engine: Engine, cid: str) -> tuple[str, str | None]:
    with Session(engine) as session:
        row = session.get(Connection, cid)
        assert row is not None
        return row.status, row.last_error


def test_the_current_version_is_the_latest_current_since(engine: Engine) -> None:
    _add(
        engine,
        TermsVersion(version="v2", connector_id="c1", terms={}, current_since=T0),
        TermsVersion(version="v1", connector_id="c1", terms={}, current_since=T0 - timedelta(1)),
        TermsVersion(version="x", connector_id="c2", terms={}, current_since=T0 + timedelta(1)),
    )
    with Session(engine) as session:
        current = store.current_version(session, connector_id="c1")
        assert current is not None and current.version == "v2"
        assert store.current_version(session, connector_id="c3") is None
        found = store.terms_versions(session, versions=["v1", "nope"])
        assert [t.version for t in found] == ["v1"]


def test_changes_oldest_first_by_connector_and_latest_newest_first(engine: Engine) -> None:
    _add(engine, _change("pc_b", 2), _change("pc_a", 1), _change("pc_c", 3, "c2"))
    with Session(engine) as session:
        assert [c.id for c in store.policy_changes(session)] == ["pc_a", "pc_b", "pc_c"]
        assert [c.id for c in store.policy_changes(session, connector_id="c1")] == [
            "pc_a",
            "pc_b",
        ]
        assert [c.id for c in store.latest_changes(session, limit=2)] == ["pc_c", "pc_b"]


def test_pause_takes_active_connections_off_the_version_and_resume_gives_them_back(
    engine: Engine,
) -> None:
    _add(
        engine,
        connection("cn_old"),
        connection("cn_none"),
        connection("cn_new"),
        connection("cn_revoked", status="revoked"),
        consent("cr_old", "cn_old", terms_version="v1"),
        consent("cr_none", "cn_none"),
        consent("cr_new", "cn_new", terms_version="v2"),
        consent("cr_revoked", "cn_revoked", terms_version="v1"),
    )
    with Session(engine) as session:
        for cid in ("cn_old", "cn_none", "cn_new", "cn_revoked"):
            row = session.get(Connection, cid)
            assert row is not None
            row.consent_id = "cr_" + cid[3:]
            session.add(row)
        session.commit()
        off = store.active_off_version(session, connector_id="c1", version="v2")
        assert off == [("cn_none", "u1"), ("cn_old", "u1")]
        store.pause_for_terms(session, connection_ids=["cn_old", "cn_revoked"], now=T0)
        session.commit()
    assert _status(engine, "cn_old") == ("reconsent_required", TERMS_CHANGED)
    assert _status(engine, "cn_revoked") == ("revoked", None)  # only active ones pause
    with Session(engine) as session:
        ids = ["cn_old", "cn_new", "cn_gone"]
        assert store.still_paused(session, connection_ids=ids) == ["cn_old"]
        store.resume_paused(session, connection_ids=["cn_old"], now=T0)
        session.commit()
    assert _status(engine, "cn_old") == ("active", None)


def test_only_one_claim_answers_a_connection_paused_for_terms(engine: Engine) -> None:
    _add(
        engine,
        connection("cn_1", status="reconsent_required", last_error=TERMS_CHANGED),
        connection("cn_2", status="reconsent_required", last_error="something else"),
    )
    with Session(engine) as session:
        assert store.claim_reconsent(session, connection_id="cn_1", now=T0)
        assert not store.claim_reconsent(session, connection_id="cn_2", now=T0)
        row = session.get(Connection, "cn_1")
        assert row is not None
        row.status = "active"
        session.add(row)
        session.flush()
        assert not store.claim_reconsent(session, connection_id="cn_1", now=T0)


def test_reconsents_and_connections_of_a_change(engine: Engine) -> None:
    later = T0 + timedelta(minutes=5)
    _add(
        engine,
        connection("cn_1"),
        consent("cr_late", "cn_1", terms_version="v2", consented_at=later),
        consent("cr_early", "cn_1", terms_version="v2"),
        consent("cr_v1", "cn_1", terms_version="v1"),
    )
    with Session(engine) as session:
        assert set(store.connections_by_id(session, ids=["cn_1", "cn_9"])) == {"cn_1"}
        found = store.reconsents(session, connection_ids=["cn_1"], terms_version="v2")
        assert [r.id for r in found] == ["cr_early", "cr_late"]


def test_sent_under_terms_groups_disclosed_transfers(engine: Engine) -> None:
    _add(
        engine,
        connection("cn_1"),
        transfer("tr_1", terms_version="v1"),
        transfer("tr_2", terms_version="v1", minutes=3),
        transfer("tr_3", terms_version="v1", status="blocked"),
        TransferCategory(transfer_id="tr_1", category="user.name", created_at=T0),
        TransferCategory(transfer_id="tr_2", category="user.name", created_at=T0),
        TransferCategory(transfer_id="tr_3", category="user.name", created_at=T0),
    )
    with Session(engine) as session:
        rows = store.sent_under_terms(session)
    assert len(rows) == 1
    connector_id, version, category, n, first, last = rows[0]
    assert (connector_id, version, category, n) == ("c1", "v1", "user.name", 2)
    assert last - first == timedelta(minutes=3)
