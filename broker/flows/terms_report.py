"""Terms changes for auditors: each ``policy.changed`` (newest first) with the
connections it paused, and for each when its user agreed again (the first consent
record on that connection under the new terms version), or what it is now."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from broker.runtime import Runtime
from broker.store.policy_models import PolicyChange
from broker.store.terms import (
    connections_by_id,
    latest_changes,
    reconsents,
    sent_under_terms,
    terms_versions,
)

__all__ = ["terms_changes", "terms_sent"]


def _paused(session: Session, change: PolicyChange) -> list[dict[str, Any]]:
    ids = list(change.paused or [])
    if not ids:
        return []
    conns = connections_by_id(session, ids=ids)
    agreed: dict[str, Any] = {}
    for r in reconsents(session, connection_ids=ids, terms_version=change.after_version):
        agreed.setdefault(r.connection_id, r)
    out = []
    for cid in ids:
        conn, again = conns.get(cid), agreed.get(cid)
        out.append(
            {
                "connection_id": cid,
                "user_id": conn.user_id if conn else None,
                "status": conn.status if conn else "gone",
                "reconsented_at": again.consented_at if again else None,
                "consent_id": again.id if again else None,
            }
        )
    return out


def terms_changes(rt: Runtime, *, limit: int = 100) -> list[dict[str, Any]]:
    """The latest ``limit`` terms changes, each with the connections it paused."""
    with Session(rt.engine) as session:
        rows = latest_changes(session, limit=limit)
        return [
            {
                "id": c.id,
                "connector": c.connector_id,
                "detected_at": c.detected_at,
                "detected_by": c.detected_by,
                "classification": c.classification,
                "before_version": c.before_version,
                "after_version": c.after_version,
                "changes": list(c.changes),
                "digests": dict(c.digests),
                "classified_by": c.classified_by,
                "classified_reason": c.classified_reason,
                "paused": _paused(session, c),
            }
            for c in rows
        ]


def terms_sent(rt: Runtime) -> dict[str, list[dict[str, Any]]]:
    """Per recipient, per terms version its data was sent under (delivered, or whose
    outcome is unknown): the categories, how many transfers, first and last, and the
    policy snapshot digests that version names (None: sent before terms versions)."""
    with Session(rt.engine) as session:
        rows = sent_under_terms(session)
        versions = sorted({v for _, v, *_ in rows if v})
        digests = (
            {
                t.version: dict(t.terms.get("digests") or {})
                for t in terms_versions(session, versions=versions)
            }
            if versions
            else {}
        )
    out: dict[str, dict[str | None, dict[str, Any]]] = {}
    for connector_id, version, category, n, first, last in rows:
        v = out.setdefault(connector_id, {}).setdefault(
            version,
            {"terms_version": version, "policy_digests": digests.get(version or ""),
             "categories": [], "category_transfers": {}, "first_at": first, "last_at": last},
        )  # fmt: skip
        v["categories"] = sorted({*v["categories"], category})
        v["category_transfers"][category] = n
        v["first_at"], v["last_at"] = min(v["first_at"], first), max(v["last_at"], last)
    return {
        cid: sorted(vs.values(), key=lambda v: v["first_at"]) for cid, vs in sorted(out.items())
    }
