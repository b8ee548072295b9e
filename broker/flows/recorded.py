"""What the record says of a recipient: the terms a consent was given under
(``ConsentFacts``, the consent record as plain values, as receipts read it).

Reports name a recipient, link its policy and terms and list its purposes from
the consent records (immutable, written when the user agreed) and from the
transfers (their purpose, declared data uses and terms version, written when they
were sent), never from the connectors installed now: uninstalling or changing a
connector does not rewrite a past report. Only transfers recorded before the
transfers kept their declared uses (migration 0014) fall back to the installed
manifest for them.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, func, select
from sqlmodel import Session, col

from broker.core.kantara import ConsentFacts
from broker.flows.receipts import consent_facts
from broker.store.models import ConsentRecord

__all__ = ["latest_terms", "terms_by_connector", "terms_of_consents"]


def terms_of_consents(
    session: Session, consent_ids: Iterable[str | None]
) -> dict[str, ConsentFacts]:
    """The recorded terms of each consent in ``consent_ids`` (one read)."""
    wanted = sorted({c for c in consent_ids if c})
    if not wanted:
        return {}
    stmt = select(ConsentRecord).where(col(ConsentRecord.id).in_(wanted))
    rows = session.exec(stmt).all()  # type: ignore[call-overload]  # a Core select: rows
    return {c.id: consent_facts(c) for (c,) in rows}


def terms_by_connector(session: Session) -> dict[str, ConsentFacts]:
    """Per connector, the terms of its latest consent record (a recipient's name and
    links as last agreed to)."""
    latest = (
        select(col(ConsentRecord.connector_id), func.max(ConsentRecord.recorded_at).label("at"))
        .group_by(col(ConsentRecord.connector_id))
        .subquery()
    )
    rows = session.exec(  # type: ignore[call-overload]  # a Core select: rows
        select(ConsentRecord)
        .join(
            latest,
            (col(ConsentRecord.connector_id) == latest.c.connector_id)
            & (col(ConsentRecord.recorded_at) == latest.c.at),
        )
        .order_by(col(ConsentRecord.id))
    ).all()
    return {c.connector_id: consent_facts(c) for (c,) in rows}


_LATEST = (  # built once: the statement is compiled once, then only run
    select(ConsentRecord)
    .where(col(ConsentRecord.connector_id) == bindparam("connector_id"))
    .order_by(col(ConsentRecord.recorded_at).desc(), col(ConsentRecord.id).desc())
    .limit(1)
)


def latest_terms(session: Session, connector_ids: Iterable[str]) -> dict[str, ConsentFacts]:
    """:func:`terms_by_connector` for ``connector_ids`` only: one index lookup each
    (connector_id, recorded_at; migration 0016), not a pass over every consent record.
    Of records made at the same moment, the one with the largest id, as there."""
    out = {}
    for connector_id in sorted(set(connector_ids)):
        params = {"connector_id": connector_id}
        found = session.exec(_LATEST, params=params).first()  # type: ignore[call-overload]
        if found is not None:
            out[connector_id] = consent_facts(found[0])
    return out
