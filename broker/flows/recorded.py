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

from sqlmodel import Session

from broker.core.kantara import ConsentFacts
from broker.flows.receipts import consent_facts
from broker.store.recorded import consent_records, latest_consent, latest_consents

__all__ = ["latest_terms", "terms_by_connector", "terms_of_consents"]


def terms_of_consents(
    session: Session, consent_ids: Iterable[str | None]
) -> dict[str, ConsentFacts]:
    """The recorded terms of each consent in ``consent_ids`` (one read)."""
    wanted = sorted({c for c in consent_ids if c})
    if not wanted:
        return {}
    return {c.id: consent_facts(c) for c in consent_records(session, ids=wanted)}


def terms_by_connector(session: Session) -> dict[str, ConsentFacts]:
    """Per connector, the terms of its latest consent record (a recipient's name and
    links as last agreed to)."""
    return {c.connector_id: consent_facts(c) for c in latest_consents(session)}


def latest_terms(session: Session, connector_ids: Iterable[str]) -> dict[str, ConsentFacts]:
    """:func:`terms_by_connector` for ``connector_ids`` only: one index lookup each
    (connector_id, recorded_at; migration 0016), not a pass over every consent record.
    Of records made at the same moment, the one with the largest id, as there."""
    out = {}
    for connector_id in sorted(set(connector_ids)):
        found = latest_consent(session, connector_id=connector_id)
        if found is not None:
            out[connector_id] = consent_facts(found)
    return out
