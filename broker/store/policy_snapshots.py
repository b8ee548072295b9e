"""Queries of the checks of a connector's policy and terms pages (``policy_checks``,
:mod:`broker.store.policy_models`); fetching and judging the pages is
:mod:`broker.flows.policy_snapshots`'."""

from __future__ import annotations

from sqlmodel import Session, col, select

from broker.store.policy_models import PolicyCheck

__all__ = ["latest_check"]


def latest_check(
    session: Session, *, connector_id: str, page: str, url: str, retrieved: bool
) -> PolicyCheck | None:
    """The latest check of the connector's ``page`` at ``url`` (with ``retrieved``,
    the latest that retrieved the page: it has a digest); of checks at the same
    moment, the one written last."""
    query = select(PolicyCheck).where(
        PolicyCheck.connector_id == connector_id, PolicyCheck.page == page, PolicyCheck.url == url
    )
    if retrieved:
        query = query.where(col(PolicyCheck.digest).is_not(None))
    query = query.order_by(col(PolicyCheck.checked_at).desc(), col(PolicyCheck.id).desc())
    return session.exec(query.limit(1)).first()
