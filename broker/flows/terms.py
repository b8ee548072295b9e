"""Terms versions, change detection and the operator's classification of changes.

A connector's current terms (:func:`broker.core.terms.connector_terms`: its manifest's
declarations, scopes, recipients, policy URLs, the digests of its pages' last retrieved
snapshots, ``BROKER_POLICY_VERSION``) are recorded in ``terms_versions`` when the
runtime loads the connector (:func:`record_loaded_terms`) and after every check of its
pages (:mod:`broker.flows.policy_checks`). When the version
differs from the connector's current one, the change is compared
(:func:`broker.core.terms.compare_terms`), stored in ``policy_changes`` and written as
a ``policy.changed`` audit event (``outcome``: ``significant`` or ``minor``; details:
the change id, before/after terms versions and page digests, what changed). A
difference that changes nothing a user agreed to (a page retrieved for the first time)
records the new version without an event. A significant change pauses sharing, in the
same transaction: every active connection of the connector whose consent is not on the
new terms becomes ``reconsent_required`` (the gateway then blocks its transfers; the
ids are kept on the change, their number in the event). ``broker policies classify``
overrides a change's classification (``policy.classified``): made significant, it pauses
the same way; made minor, the connections it paused that are still paused become
``active`` again.

Consent records name the terms version agreed to, transfers the one they were sent
under: :func:`current_terms_version` answers from memory (re-read from the database
at most every ``_CACHE_SECONDS`` per connector, so a check in another process is seen).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session

from broker.core.connector import Connector
from broker.core.errors import InvalidInput, NotFound
from broker.core.policy_text import change_ratio
from broker.core.statuses import ConnectionStatus
from broker.core.terms import (
    PAGES,
    classification,
    compare_terms,
    connector_terms,
    terms_version,
)
from broker.core.tokens import new_secret
from broker.flows.policy_snapshots import retrieved_digests, snapshot_text
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.policy_models import PolicyChange, TermsVersion
from broker.store.terms import (
    active_off_version,
    current_version,
    pause_for_terms,
    policy_changes,
    resume_paused,
    still_paused,
)
from broker.store.webhook_outbox import enqueue_event

__all__ = [
    "CLASSIFICATIONS",
    "classify_change",
    "current_terms_version",
    "list_changes",
    "record_loaded_terms",
    "record_terms",
]

log = logging.getLogger("broker.policies")

CLASSIFICATIONS = ("significant", "minor")
_CACHE_SECONDS = 30.0


def _prefixed(digests: dict[str, str | None]) -> dict[str, str | None]:
    return {page: f"sha256:{d}" if d else None for page, d in digests.items()}


def _text_ratios(
    session: Session, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, float | None]:
    ratios: dict[str, float | None] = {}
    for page in PAGES:
        old, new = before["digests"].get(page), after["digests"].get(page)
        if old and new and old != new:
            a, b = snapshot_text(session, old), snapshot_text(session, new)
            ratios[page] = change_ratio(a, b) if a is not None and b is not None else None
    return ratios


def _pause(session: Session, connector_id: str, version: str, now: datetime) -> list[str]:
    """Every active connection of the connector whose consent is not on ``version``
    becomes ``reconsent_required``; returns their ids."""
    rows = active_off_version(session, connector_id=connector_id, version=version)
    ids = [cid for cid, _ in rows]
    if ids:
        pause_for_terms(session, connection_ids=ids, now=now)
        for cid, user_id in rows:  # the host is told, in this transaction (webhooks)
            enqueue_event(
                session.connection(),
                "connection.reconsent_required",
                at=now,
                ids={"connection_id": cid, "user_id": user_id, "connector_id": connector_id},
                status=ConnectionStatus.RECONSENT_REQUIRED,
            )
    return ids


def _resume(session: Session, change: PolicyChange, now: datetime) -> list[str]:
    """The connections ``change`` paused that are still paused become ``active`` again
    (the operator said the change was minor)."""
    ids = list(change.paused or [])
    if not ids:
        return []
    resumed = still_paused(session, connection_ids=ids)
    if resumed:
        resume_paused(session, connection_ids=resumed, now=now)
    return resumed


def _record(
    rt: Runtime, session: Session, connector: Connector, actor: str
) -> tuple[str, PolicyChange | None]:
    terms = connector_terms(
        connector.manifest,
        digests=retrieved_digests(session, connector),
        platform_policy_version=rt.settings.policy_version,
    )
    version = terms_version(terms)
    current = current_version(session, connector_id=connector.id)
    if current is not None and current.version == version:
        return version, None
    now = rt.clock()
    since = now if current is None else max(now, current.current_since + timedelta(microseconds=1))
    row = session.get(TermsVersion, version)
    if row is None:
        session.add(
            TermsVersion(
                version=version,
                connector_id=connector.id,
                terms=terms,
                recorded_at=now,
                current_since=since,
            )
        )
    else:  # back to terms it had before
        row.current_since = since
        session.add(row)
    if current is None:
        return version, None
    changes = compare_terms(
        current.terms,
        terms,
        text_ratios=_text_ratios(session, current.terms, terms),
        threshold=rt.settings.policy_change_threshold,
    )
    if not changes:
        return version, None
    verdict = classification(changes)
    digests = {
        "before": _prefixed(current.terms["digests"]),
        "after": _prefixed(terms["digests"]),
    }
    change = PolicyChange(
        id="pchg_" + new_secret(nbytes=9),
        connector_id=connector.id,
        before_version=current.version,
        after_version=version,
        detected_at=now,
        detected_by=actor,
        classification=verdict,
        changes=[c.as_dict() for c in changes],
        digests=digests,
    )
    if verdict == "significant":
        change.paused = _pause(session, connector.id, version, now)
    session.add(change)
    append_event(
        session,
        head_file=rt.settings.audit_head_file,
        time=now,
        event="policy.changed",
        actor=actor,
        connector_id=connector.id,
        outcome=verdict,
        details={
            "change_id": change.id,
            "before": {"terms_version": current.version, "digests": digests["before"]},
            "after": {"terms_version": version, "digests": digests["after"]},
            "changes": change.changes,
            "paused_connections": len(change.paused),
        },
    )
    log.warning(
        "%s: %s terms change %s (%s)",
        connector.id,
        verdict,
        change.id,
        "; ".join(c.text for c in changes),
    )
    return version, change


def record_terms(rt: Runtime, connector: Connector, *, actor: str) -> PolicyChange | None:
    """Record the connector's current terms; the change, if they changed."""
    for attempt in (1, 2):
        try:
            with session_scope(rt.engine) as session:
                version, change = _record(rt, session, connector, actor)
                if change is not None:
                    session.flush()
                    session.expunge(change)
            break
        except IntegrityError:  # another process recorded the same version just now
            if attempt == 2:
                raise
    rt.terms_cache[connector.id] = (version, time.monotonic())
    return change


def record_loaded_terms(rt: Runtime) -> None:
    """At load: record every connector's terms; a manifest change is detected here."""
    for connector in rt.registry.all():
        try:
            record_terms(rt, connector, actor="broker:load")
        except SQLAlchemyError as exc:
            log.error("could not record the terms of %s: %s", connector.id, type(exc).__name__)


def current_terms_version(rt: Runtime, connector_id: str, *, fresh: bool = False) -> str | None:
    """The connector's current terms version, from memory when read recently (unless
    ``fresh``)."""
    cached = rt.terms_cache.get(connector_id)
    if not fresh and cached is not None and time.monotonic() - cached[1] < _CACHE_SECONDS:
        return cached[0]
    with Session(rt.engine) as session:
        row = current_version(session, connector_id=connector_id)
    if row is None:
        if connector_id not in rt.registry:
            return None
        record_terms(rt, rt.registry.get(connector_id), actor="broker:load")
        return rt.terms_cache[connector_id][0]
    rt.terms_cache[connector_id] = (row.version, time.monotonic())
    return row.version


def list_changes(rt: Runtime, connector_id: str | None = None) -> list[PolicyChange]:
    with Session(rt.engine) as session:
        return policy_changes(session, connector_id=connector_id)


def classify_change(
    rt: Runtime, change_id: str, verdict: str, *, reason: str, actor: str
) -> PolicyChange:
    """The operator's classification of a change (``policy.classified``)."""
    if verdict not in CLASSIFICATIONS:
        raise InvalidInput(
            "a change is classified significant or minor", details={"field": "classification"}
        )
    reason = " ".join((reason or "").split())
    if not 3 <= len(reason) <= 500:
        raise InvalidInput("give a reason (3-500 characters)", details={"field": "reason"})
    now = rt.clock()
    with session_scope(rt.engine) as session:
        change = session.get(PolicyChange, change_id)
        if change is None:
            raise NotFound(f"no policy change {change_id!r}", details={"change_id": change_id})
        was = change.classification
        change.classification = verdict
        change.classified_by, change.classified_at, change.classified_reason = actor, now, reason
        paused: list[str] = []
        resumed: list[str] = []
        if verdict == "significant" and was != "significant":
            current = current_version(session, connector_id=change.connector_id)
            version = current.version if current is not None else change.after_version
            paused = _pause(session, change.connector_id, version, now)
            change.paused = sorted(set(change.paused or []) | set(paused))
        elif verdict == "minor" and was == "significant":
            resumed = _resume(session, change, now)
        session.add(change)
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=now,
            event="policy.classified",
            actor=actor,
            connector_id=change.connector_id,
            outcome=verdict,
            details={
                "change_id": change.id,
                "was": was,
                "reason": reason,
                "paused_connections": len(paused),
                "resumed_connections": len(resumed),
            },
        )
        session.flush()
        session.expunge(change)
    return change
