"""The report the law asks for per user (GDPR Art. 15(1)(c)).

Every recipient that received the user's data (each third party by name, as the CJEU
reads Art. 15(1)(c) in C-154/21), with the categories and fields, purposes, data uses,
legal basis and when; a delivered transfer counts, and so does a legal disclosure
(flagged). The user's objections to uses of their data (GDPR Art. 21) and their
withdrawals are listed too. As JSON, CSV (one row per disclosure) or an HTML page
(``broker.web.reports``). Per recipient (Art. 30): :mod:`broker.flows.processing_records`.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.core.csv_cells import csv_row, list_cell
from broker.core.kantara import ConsentFacts
from broker.core.statuses import TransferStatus
from broker.flows.art15 import art15_sections
from broker.flows.disclosures import LEGAL_USE
from broker.flows.recorded import terms_of_consents
from broker.flows.report_meta import meta_comment_lines, report_meta
from broker.runtime import Runtime
from broker.store.events import legal_disclosures, objections
from broker.store.models import AuditRow, Transfer
from broker.store.transfers import disclosed_to_user

__all__ = ["CSV_COLUMNS", "user_report", "user_report_csv"]

CSV_COLUMNS = (
    "time", "recipient", "recipient_name", "kind", "flagged", "legal_basis", "purpose", "uses",
    "category_titles", "categories", "field_paths", "reference", "possible", "consent_id",
    "transfer_id", "terms_version",
)  # fmt: skip


def _time(row: AuditRow) -> datetime:
    return datetime.fromisoformat(row.time.replace("Z", "+00:00"))


def _uses(rt: Runtime, connector_id: str, categories: list[str]) -> list[str]:
    connector = rt.registry.connectors.get(connector_id)
    if connector is None:
        return []
    return sorted({d.use for d in connector.manifest.data if d.category in categories})


def _objection(row: AuditRow) -> dict[str, Any]:
    """An objection (GDPR Art. 21) or its withdrawal."""
    return {
        "time": _time(row),
        "action": row.outcome,
        "uses": list(row.details.get("uses", [])),
        "seq": row.seq,
    }


def _transfer_disclosure(rt: Runtime, t: Transfer, terms: ConsentFacts | None) -> dict[str, Any]:
    """A transfer as a disclosure: the recipient as the user agreed to it (``terms``)."""
    return {
        "time": t.completed_at or t.created_at,
        "recipient": t.connector_id,
        "recipient_name": terms.connector_name if terms else t.connector_id,
        "kind": "integration",
        "flagged": False,
        "legal_basis": t.legal_basis,
        "purpose": t.purpose,
        "uses": (
            sorted(t.data_uses)
            if t.data_uses is not None
            else _uses(rt, t.connector_id, t.categories)  # sent before 0014
        ),
        "categories": sorted(t.categories),
        "field_paths": sorted(t.field_paths),
        "reference": None,
        # outcome_unknown: the broker cannot tell whether it arrived; counted
        # as a disclosure, and said so.
        "possible": t.status == TransferStatus.OUTCOME_UNKNOWN,
        "consent_id": t.consent_id,
        "transfer_id": t.id,
        "privacy_policy_url": terms.privacy_policy_url if terms else None,
        "terms_url": terms.terms_url if terms else None,
        "terms_version": t.terms_version,
    }


def _legal_disclosure(row: AuditRow) -> dict[str, Any]:
    """A ``disclosure.legal`` entry as a disclosure (flagged: no consent)."""
    return {
        "time": _time(row),
        "recipient": row.details.get("recipient"),
        "recipient_name": row.details.get("recipient"),
        "kind": "legal",
        "flagged": True,
        "legal_basis": row.legal_basis,
        "purpose": row.purpose,
        "uses": [row.details.get("use", LEGAL_USE)],
        "categories": sorted(row.categories),
        "field_paths": sorted(row.field_paths),
        "reference": row.details.get("reference"),
        "possible": False,
        "consent_id": None,
        "transfer_id": None,
        "privacy_policy_url": None,
        "terms_url": None,
        "terms_version": None,
    }


def _recipients(disclosures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A summary per recipient of ``disclosures`` (oldest first)."""
    recipients: dict[tuple[str, str], dict[str, Any]] = {}
    for d in disclosures:
        r = recipients.setdefault(
            (d["kind"], d["recipient"]),
            {
                "recipient": d["recipient"],
                "name": d["recipient_name"],
                "kind": d["kind"],
                "flagged": d["flagged"],
                "privacy_policy_url": d["privacy_policy_url"],
                "terms_url": d["terms_url"],
                "categories": set(),
                "field_paths": set(),
                "purposes": set(),
                "uses": set(),
                "legal_bases": set(),
                "references": set(),
                "disclosures": 0,
                "first_at": d["time"],
                "last_at": d["time"],
            },
        )
        r["categories"].update(d["categories"])
        r["field_paths"].update(d["field_paths"])
        r["purposes"].update([d["purpose"]] if d["purpose"] else [])
        r["uses"].update(d["uses"])
        r["legal_bases"].add(d["legal_basis"])
        r["references"].update([d["reference"]] if d["reference"] else [])
        r["disclosures"] += 1
        r["last_at"] = d["time"]
    return [
        {k: sorted(v) if isinstance(v, set) else v for k, v in r.items()}
        for r in sorted(recipients.values(), key=lambda r: (r["kind"], r["recipient"]))
    ]


def user_report(rt: Runtime, user_id: str) -> dict[str, Any]:
    """Every disclosure of ``user_id``'s data, oldest first, and a summary per recipient;
    ``objections``: each objection to a use of the data, and each withdrawal."""
    with Session(rt.engine) as session:
        transfers = disclosed_to_user(session, user_id=user_id)
        legal = legal_disclosures(session, user_id=user_id)
        objected = objections(session, user_id=user_id)
        # The recipient as the user agreed to it (broker.flows.recorded), not as installed now.
        agreed = terms_of_consents(session, (t.consent_id for t in transfers))
    disclosures = [_transfer_disclosure(rt, t, agreed.get(t.consent_id or "")) for t in transfers]
    disclosures += [_legal_disclosure(row) for row in legal]
    disclosures.sort(key=lambda d: d["time"])
    report: dict[str, Any] = {
        "user_id": user_id,
        "recipients": _recipients(disclosures),
        "disclosures": disclosures,
        "objections": [_objection(r) for r in objected],
    }
    if not disclosures and not objected:  # never known, or erased (broker.flows.erasure)
        report["no_data"] = True
        report["message"] = "the broker holds no data of this user"
    report["art15"] = art15_sections(rt, report)  # Art. 15(1)(a)-(h), broker.flows.art15
    report["report"] = report_meta(rt)  # when, by whom, from which log state
    return report


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return list_cell(value)  # "a; b": one cell, ;-separated (broker.core.csv_cells)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def user_report_csv(report: dict[str, Any]) -> str:
    """``#`` lines (generated when, by which controller, from which log state), then one
    row per disclosure; ``category_titles`` names the categories, ``categories`` keys them."""
    titles = {c["category"]: c["title"] for c in report.get("art15", {}).get("categories", [])}
    buf = io.StringIO()
    writer = csv.writer(buf)
    if "report" in report:
        buf.write("".join(line + "\r\n" for line in meta_comment_lines(report["report"])))
    writer.writerow(CSV_COLUMNS)
    for d in report["disclosures"]:
        row = {**d, "category_titles": [titles.get(c, c) for c in d["categories"]]}
        writer.writerow(csv_row(_cell(row.get(c)) for c in CSV_COLUMNS))
    return buf.getvalue()
