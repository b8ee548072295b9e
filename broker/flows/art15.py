"""The GDPR Art. 15(1)(a)-(h) sections of a user's report, as far as the broker knows.

Built from a :func:`broker.flows.user_report.user_report` (its disclosures, from the
record) and the consent records they were sent under, never from the connectors
installed now:

* (a) purposes: each purpose the data was sent for, with its recipients;
* (b) categories: each category by its human title (the key beside it), who got it,
  and under which terms version it was sent (with the policy snapshot digests the
  consent record kept: what the user was shown);
* (c) recipients: the report's ``recipients`` (names and policy links as recorded);
* (d) retention: what each recipient declared (the manifests declare none today, so
  each says "not declared"; the broker keeps no copy of the data it sent);
* (e)-(f) rights: withdraw consent, object (Art. 21), rectification, erasure and
  restriction (asked of the controller), and complaint to a supervisory authority;
* (g) source: the user's own account on the platform;
* (h) automated decision-making: none by the broker.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from broker.runtime import Runtime
from broker.store.models import ConsentRecord
from broker.store.recorded import consent_records

__all__ = ["RIGHTS", "art15_sections"]

RIGHTS = (
    ("withdraw", "Withdraw your consent",
     "at any time, for each integration, from My integrations (Disconnect); what was sent "
     "before stays lawful, nothing more is sent"),
    ("object", "Object to uses of your data (Art. 21)",
     "from My integrations (promotional and marketing uses): such transfers are then refused"),
    ("access", "A copy of this report (Art. 15)", "from My integrations, as CSV or JSON"),
    ("rectify_erase_restrict", "Rectification, erasure, restriction (Art. 16-18)",
     "ask the controller; ask each recipient listed above for what it received"),
    ("complain", "Complain to a supervisory authority (Art. 77)",
     "the data protection authority where you live or work, or where the controller is"),
)  # fmt: skip


def _consents(rt: Runtime, ids: set[str]) -> dict[str, ConsentRecord]:
    if not ids:
        return {}
    with Session(rt.engine) as session:
        return {r.id: r for r in consent_records(session, ids=sorted(ids))}


def _title(rt: Runtime, key: str) -> str:
    category = rt.catalog.get(key)
    return category.title if category else key


def _sent_under(rt: Runtime, disclosures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (recipient, category, terms version): how often and when, with the digests."""
    consents = _consents(rt, {d["consent_id"] for d in disclosures if d.get("consent_id")})
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for d in disclosures:
        consent = consents.get(d.get("consent_id") or "")
        version = d.get("terms_version") or (consent.terms_version if consent else None)
        for key in d["categories"]:
            r = rows.setdefault(
                (d["recipient"] or "", key, version or ""),
                {
                    "recipient": d["recipient"],
                    "recipient_name": d["recipient_name"],
                    "category": key,
                    "title": _title(rt, key),
                    "kind": d["kind"],
                    "terms_version": version,
                    "policy_digests": dict(consent.policy_digests or {}) if consent else {},
                    "privacy_policy_url": d.get("privacy_policy_url"),
                    "terms_url": d.get("terms_url"),
                    "times": 0,
                    "first_at": d["time"],
                    "last_at": d["time"],
                },
            )
            r["times"] += 1
            r["last_at"] = d["time"]
    return sorted(rows.values(), key=lambda r: (r["title"], r["recipient"] or ""))


def art15_sections(rt: Runtime, report: dict[str, Any]) -> dict[str, Any]:
    """The sections for ``report`` (a user_report without them)."""
    disclosures = report["disclosures"]
    purposes: dict[str, set[str]] = {}
    for d in disclosures:
        if d.get("purpose"):
            purposes.setdefault(d["purpose"], set()).add(d["recipient_name"] or "")
    categories: dict[str, set[str]] = {}
    for d in disclosures:
        for key in d["categories"]:
            categories.setdefault(key, set()).add(d["recipient_name"] or "")
    return {
        "purposes": [
            {"purpose": p, "recipients": sorted(names)} for p, names in sorted(purposes.items())
        ],
        "categories": sorted(
            (
                {"category": k, "title": _title(rt, k), "recipients": sorted(names)}
                for k, names in categories.items()
            ),
            key=lambda c: c["title"],
        ),
        "sent_under": _sent_under(rt, disclosures),
        "retention": [
            {"recipient": r["recipient"], "name": r["name"], "period": None}
            for r in report["recipients"]
            if r["kind"] == "integration"
        ],
        "rights": [{"right": k, "title": t, "how": h} for k, t, h in RIGHTS],
        "source": "your account on the platform (the controller); the broker collects nothing "
        "from elsewhere",
        "automated_decisions": "none: the broker makes no automated decision about you and "
        "does no profiling",
    }
