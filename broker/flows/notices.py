"""What a user is told about changes of the terms they agreed to (issue 11).

A *notice* is derived, not stored: for each of the user's connections, the changes of
its connector's terms (``policy_changes``) detected after the consent in force was
given. A connection paused by a significant change (``reconsent_required`` with
``terms changed; re-consent required``) has a notice that asks for action until the
user agrees again (a new consent record) or disconnects; an active connection lists the
minor changes of the last :data:`MINOR_NOTICE_DAYS` days, for information.

:func:`pending_notices` serves ``/me`` and ``GET /v1/users/{id}/notices``;
:func:`policy_diff` gives the text difference of a page between the two snapshots of
a change, sentence by sentence (``difflib``), for the link on ``/me``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlmodel import Session

from broker.core.errors import NotFound
from broker.core.gateway import TERMS_CHANGED
from broker.core.statuses import ConnectionStatus
from broker.core.terms import PAGES
from broker.flows.policy_snapshots import snapshot_text
from broker.runtime import Runtime
from broker.store.models import Connection, ConsentRecord
from broker.store.notices import has_connection_to, policy_changes_after, user_connections
from broker.store.policy_models import PolicyChange

__all__ = [
    "MINOR_NOTICE_DAYS",
    "Notice",
    "NoticeChange",
    "PolicyDiff",
    "changed_pages",
    "diff_rows",
    "paused_for_terms",
    "pending_notices",
    "policy_diff",
]

MINOR_NOTICE_DAYS = 30
PAGE_LABELS = {"privacy_policy": "privacy policy", "terms": "terms"}
_SHOWN = (
    ConnectionStatus.ACTIVE,
    ConnectionStatus.PENDING_CONFIRMATION,
    ConnectionStatus.RECONSENT_REQUIRED,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def paused_for_terms(conn: Connection) -> bool:
    """Whether the connection waits for the user to agree to changed terms."""
    return conn.status == ConnectionStatus.RECONSENT_REQUIRED and conn.last_error == TERMS_CHANGED


def _bare(digest: str | None) -> str | None:
    if not digest or not digest.startswith("sha256:"):
        return None
    return digest.removeprefix("sha256:")


def changed_pages(change: PolicyChange) -> list[str]:
    """The pages whose text the change changed (both snapshots kept)."""
    before, after = change.digests.get("before", {}), change.digests.get("after", {})
    return [
        page
        for page in PAGES
        if _bare(before.get(page)) and _bare(after.get(page)) and before[page] != after[page]
    ]


@dataclass(frozen=True)
class NoticeChange:
    """One change of the terms, as the notice lists it."""

    id: str
    classification: str
    detected_at: datetime
    items: list[dict[str, Any]]
    pages: list[str]  # pages whose text changed: each has a diff

    def to_dict(self) -> dict[str, Any]:
        return {
            "change_id": self.id,
            "classification": self.classification,
            "detected_at": self.detected_at,
            "changes": self.items,
            "pages_changed": self.pages,
        }


@dataclass(frozen=True)
class Notice:
    """What changed in the terms of one connection since the user agreed to them."""

    connection_id: str
    connector_id: str
    connector_name: str
    kind: Literal["reconsent_required", "terms_changed"]
    consented_at: datetime | None
    changes: list[NoticeChange] = field(default_factory=list)

    @property
    def action_required(self) -> bool:
        return self.kind == "reconsent_required"

    @property
    def since(self) -> datetime | None:
        return min((c.detected_at for c in self.changes), default=None)

    @property
    def texts(self) -> list[str]:
        """Each thing that changed, in plain words, once."""
        seen: list[str] = []
        for change in self.changes:
            for item in change.items:
                if item["text"] not in seen:
                    seen.append(item["text"])
        return seen

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "action_required": self.action_required,
            "connection_id": self.connection_id,
            "connector_id": self.connector_id,
            "connector_name": self.connector_name,
            "consented_at": self.consented_at,
            "since": self.since,
            "summary": self.texts,
            "changes": [c.to_dict() for c in self.changes],
        }


def _notice_change(change: PolicyChange) -> NoticeChange:
    return NoticeChange(
        id=change.id,
        classification=change.classification,
        detected_at=change.detected_at,
        items=list(change.changes),
        pages=changed_pages(change),
    )


def _notice(
    rt: Runtime, session: Session, conn: Connection, consent: ConsentRecord | None
) -> Notice | None:
    agreed_at = consent.recorded_at if consent is not None else None
    changes = policy_changes_after(session, connector_id=conn.connector_id, after=agreed_at)
    connector = rt.registry.connectors.get(conn.connector_id)
    name = connector.manifest.name if connector else conn.connector_id
    if paused_for_terms(conn):
        kind: Literal["reconsent_required", "terms_changed"] = "reconsent_required"
    else:
        kind = "terms_changed"
        recent = rt.clock() - timedelta(days=MINOR_NOTICE_DAYS)
        changes = [c for c in changes if c.detected_at >= recent]
        if not changes:
            return None
    return Notice(
        connection_id=conn.id,
        connector_id=conn.connector_id,
        connector_name=name,
        kind=kind,
        consented_at=consent.consented_at if consent is not None else None,
        changes=[_notice_change(c) for c in changes],
    )


def pending_notices(
    rt: Runtime, user_id: str, *, connection_ids: Iterable[str] | None = None
) -> list[Notice]:
    """The user's notices, those asking for action first (oldest connection first)."""
    with Session(rt.engine) as session:
        notices = []
        for conn in user_connections(
            session, user_id=user_id, statuses=_SHOWN, connection_ids=connection_ids
        ):
            consent = session.get(ConsentRecord, conn.consent_id) if conn.consent_id else None
            if (notice := _notice(rt, session, conn, consent)) is not None:
                notices.append(notice)
    return sorted(notices, key=lambda n: not n.action_required)


@dataclass(frozen=True)
class PolicyDiff:
    """A page's text before and after a change, sentence by sentence: each row is
    ``("same" | "removed" | "added", sentence)``."""

    change: PolicyChange
    connector_name: str
    page: str
    rows: list[tuple[str, str]]

    @property
    def label(self) -> str:
        return PAGE_LABELS[self.page]

    @property
    def counts(self) -> dict[str, int]:
        out = {"removed": 0, "added": 0}
        for op, _ in self.rows:
            if op in out:
                out[op] += 1
        return out


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text) if s]


def diff_rows(before: str, after: str) -> list[tuple[str, str]]:
    """Sentence-level difference of two normalised texts."""
    a, b = _sentences(before), _sentences(after)
    rows: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [("same", s) for s in a[i1:i2]]
            continue
        rows += [("removed", s) for s in a[i1:i2]]
        rows += [("added", s) for s in b[j1:j2]]
    return rows


def policy_diff(rt: Runtime, *, user_id: str, change_id: str, page: str) -> PolicyDiff:
    """The text difference of ``page`` in the change, for a user with a connection of
    that connector (any other is told there is no such change)."""
    missing = NotFound(f"no policy change {change_id!r}", details={"change_id": change_id})
    with Session(rt.engine) as session:
        change = session.get(PolicyChange, change_id)
        if change is None or page not in changed_pages(change):
            raise missing
        if not has_connection_to(session, user_id=user_id, connector_id=change.connector_id):
            raise missing
        before = snapshot_text(session, _bare(change.digests["before"][page]))
        after = snapshot_text(session, _bare(change.digests["after"][page]))
    if before is None or after is None:
        raise missing
    connector = rt.registry.connectors.get(change.connector_id)
    name = connector.manifest.name if connector else change.connector_id
    return PolicyDiff(change=change, connector_name=name, page=page, rows=diff_rows(before, after))
