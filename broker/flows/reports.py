"""Reports the law asks for: per user (GDPR Art. 15(1)(c)) and per recipient (Art. 30).

Per user: every recipient that received the user's data (each third party by name, as
the CJEU reads Art. 15(1)(c) in C-154/21), with the categories and fields, purposes, data
uses, legal basis and when; a delivered transfer counts, and so does a legal disclosure
(flagged). The user's objections to uses of their data (GDPR Art. 21) and their
withdrawals are listed too. As JSON, CSV (one row per disclosure) or an HTML page.

Per recipient (records of processing, Art. 30): for each third party the data categories
and purposes (fideslang data uses) it is declared to receive, what it did receive, and
its policy links; as JSON or as fideslang ``System`` resources with
``privacy_declarations`` (YAML) for a Fides data map.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from typing import Any

import yaml
from sqlmodel import Session, col, select

from broker.core.csv_cells import csv_row, list_cell
from broker.core.policy import data_uses
from broker.core.statuses import DISCLOSED_TRANSFER_STATUSES, TransferStatus
from broker.flows.art15 import art15_sections
from broker.flows.audit import recipients_report
from broker.flows.disclosures import LEGAL_USE
from broker.flows.recorded import terms_by_connector, terms_of_consents
from broker.flows.report_meta import meta_comment_lines, report_meta
from broker.flows.terms_report import terms_sent
from broker.runtime import Runtime
from broker.store.models import AuditRow, Transfer
from broker.store.subjects import names_user

__all__ = [
    "CSV_COLUMNS",
    "processing_records",
    "records_yaml",
    "user_report",
    "user_report_csv",
]

CSV_COLUMNS = (
    "time", "recipient", "recipient_name", "kind", "flagged", "legal_basis", "purpose", "uses",
    "category_titles", "categories", "field_paths", "reference", "possible", "consent_id",
    "transfer_id", "terms_version",
)  # fmt: skip
_BASIS_NAMES = {
    "consent": "Consent",
    "legal_obligation": "Legal obligations",
    "vital_interests": "Vital interests",
    "public_task": "Public interest",
    "legitimate_interests": "Legitimate interests",
}


def _uses(rt: Runtime, connector_id: str, categories: list[str]) -> list[str]:
    connector = rt.registry.connectors.get(connector_id)
    if connector is None:
        return []
    return sorted({d.use for d in connector.manifest.data if d.category in categories})


def _legal_rows(session: Session, user_id: str | None = None) -> list[AuditRow]:
    stmt = select(AuditRow).where(AuditRow.event == "disclosure.legal")
    if user_id is not None:
        stmt = stmt.where(names_user(AuditRow.user_id, user_id))  # clear or pseudonym
    return list(session.exec(stmt.order_by(col(AuditRow.seq))).all())


def _objection_rows(session: Session, user_id: str) -> list[dict[str, Any]]:
    """The user's objections (GDPR Art. 21) and their withdrawals, oldest first."""
    rows = session.exec(
        select(AuditRow)
        .where(
            names_user(AuditRow.user_id, user_id),  # clear (format 1) or pseudonym
            col(AuditRow.event).in_(("preference.objected", "preference.withdrawn")),
        )
        .order_by(col(AuditRow.seq))
    ).all()
    return [
        {
            "time": datetime.fromisoformat(r.time.replace("Z", "+00:00")),
            "action": r.outcome,
            "uses": list(r.details.get("uses", [])),
            "seq": r.seq,
        }
        for r in rows
    ]


def user_report(rt: Runtime, user_id: str) -> dict[str, Any]:
    """Every disclosure of ``user_id``'s data, oldest first, and a summary per recipient;
    ``objections``: each objection to a use of the data, and each withdrawal."""
    with Session(rt.engine) as session:
        transfers = session.exec(
            select(Transfer)
            .where(
                Transfer.user_id == user_id,
                col(Transfer.status).in_(DISCLOSED_TRANSFER_STATUSES),
            )
            .order_by(col(Transfer.created_at))
        ).all()
        legal = _legal_rows(session, user_id)
        objections = _objection_rows(session, user_id)
        # The recipient as the user agreed to it (broker.flows.recorded), not as installed now.
        agreed = terms_of_consents(session, (t.consent_id for t in transfers))
    disclosures: list[dict[str, Any]] = []
    for t in transfers:
        terms = agreed.get(t.consent_id or "")
        disclosures.append(
            {
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
        )
    for row in legal:
        disclosures.append(
            {
                "time": datetime.fromisoformat(row.time.replace("Z", "+00:00")),
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
        )
    disclosures.sort(key=lambda d: d["time"])
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
    summary = [
        {k: sorted(v) if isinstance(v, set) else v for k, v in r.items()}
        for r in sorted(recipients.values(), key=lambda r: (r["kind"], r["recipient"]))
    ]
    report: dict[str, Any] = {
        "user_id": user_id,
        "recipients": summary,
        "disclosures": disclosures,
        "objections": objections,
    }
    if not disclosures and not objections:  # never known, or erased (broker.flows.erasure)
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


def processing_records(rt: Runtime) -> list[dict[str, Any]]:
    """Per third party: declared categories and purposes (by data use), what it received."""
    received = {r["connector"]: r for r in recipients_report(rt)}
    names = data_uses()
    out = []
    for connector in rt.registry.all():
        m = connector.manifest
        uses: dict[str, dict[str, Any]] = {}
        for d in m.data:
            u = uses.setdefault(
                d.use,
                {
                    "use": d.use,
                    "use_name": names.get(d.use, d.use),
                    "purposes": [],
                    "categories": [],
                    "legal_basis": "consent",
                },
            )
            u["categories"].append(d.category)
            if d.purpose not in u["purposes"]:
                u["purposes"].append(d.purpose)
        got = received.pop(connector.id, None) or {}
        out.append(
            {
                "recipient": connector.id,
                "name": m.name,
                "kind": "integration",
                "flagged": False,
                "installed": True,
                "privacy_policy_url": m.privacy_policy_url,
                "terms_url": m.terms_url,
                "declarations": list(uses.values()),
                "received_categories": got.get("categories", []),
                "transfers": got.get("transfers", 0),
                "first_at": got.get("first_at"),
                "last_at": got.get("last_at"),
            }
        )
    # Recipients that received data and are no longer installed: from the record.
    gone = [r for r in received.values() if r.get("connector")]
    out.extend(_uninstalled_records(rt, gone, names))
    with Session(rt.engine) as session:
        legal = _legal_rows(session)
    by_recipient: dict[str, dict[str, Any]] = {}
    for row in legal:
        name = str(row.details.get("recipient"))
        r = by_recipient.setdefault(
            name,
            {
                "recipient": name,
                "name": name,
                "kind": "legal",
                "flagged": True,
                "installed": False,
                "privacy_policy_url": None,
                "terms_url": None,
                "declarations": [],
                "received_categories": [],
                "transfers": 0,
                "first_at": row.time,
                "last_at": row.time,
            },
        )
        decl = next((x for x in r["declarations"] if x["legal_basis"] == row.legal_basis), None)
        if decl is None:
            decl = {
                "use": LEGAL_USE,
                "use_name": names[LEGAL_USE],
                "purposes": [],
                "categories": [],
                "legal_basis": row.legal_basis,
            }
            r["declarations"].append(decl)
        decl["categories"] = sorted(set(decl["categories"]) | set(row.categories))
        if row.purpose and row.purpose not in decl["purposes"]:
            decl["purposes"].append(row.purpose)
        r["received_categories"] = sorted(set(r["received_categories"]) | set(row.categories))
        r["transfers"] += 1
        r["last_at"] = row.time
    sent = terms_sent(rt)  # the terms versions each recipient's data was sent under
    for r in out:
        r["terms"] = sent.get(r["recipient"], [])
    return out + [
        {**r, "terms": []} for r in sorted(by_recipient.values(), key=lambda r: r["recipient"])
    ]


def _uninstalled_records(
    rt: Runtime, received: list[dict[str, Any]], names: dict[str, str]
) -> list[dict[str, Any]]:
    """Records of processing for recipients whose connector is gone: the declarations
    as the transfers recorded them (purpose, declared uses, categories)."""
    if not received:
        return []
    ids = [r["connector"] for r in received]
    with Session(rt.engine) as session:
        agreed = terms_by_connector(session)
        sent = session.exec(
            select(
                Transfer.connector_id, Transfer.purpose, Transfer.data_uses, Transfer.categories
            ).where(
                col(Transfer.connector_id).in_(ids),
                col(Transfer.status).in_(DISCLOSED_TRANSFER_STATUSES),
            )
        ).all()
    declared: dict[str, dict[str, dict[str, Any]]] = {}
    for connector_id, purpose, uses, categories in sent:
        for use in uses or ["unknown"]:  # sent before 0014 kept no uses
            d = declared.setdefault(connector_id, {}).setdefault(
                use,
                {
                    "use": use,
                    "use_name": names.get(use, use),
                    "purposes": [],
                    "categories": [],
                    "legal_basis": "consent",
                },
            )
            if purpose and purpose not in d["purposes"]:
                d["purposes"].append(purpose)
            d["categories"] = sorted(set(d["categories"]) | set(categories))
    out = []
    for r in sorted(received, key=lambda r: r["connector"]):
        terms = agreed.get(r["connector"])
        out.append(
            {
                "recipient": r["connector"],
                "name": terms.connector_name if terms else r["name"],
                "kind": "integration",
                "flagged": False,
                "installed": False,
                "privacy_policy_url": terms.privacy_policy_url if terms else None,
                "terms_url": terms.terms_url if terms else None,
                "declarations": list(declared.get(r["connector"], {}).values()),
                "received_categories": r["categories"],
                "transfers": r["transfers"],
                "first_at": r["first_at"],
                "last_at": r["last_at"],
            }
        )
    return out


def records_yaml(records: list[dict[str, Any]], report: dict[str, Any] | None = None) -> str:
    """fideslang ``System`` resources, one per recipient, with ``privacy_declarations``;
    ``report`` (:func:`broker.flows.report_meta.report_meta`) as ``#`` comments first, and
    each recipient's terms versions in its ``meta``."""
    systems = []
    for r in records:
        key = re.sub(
            r"[^A-Za-z0-9_.-]", "_", ("legal_" if r["kind"] == "legal" else "") + r["recipient"]
        )
        kind = "legal disclosure recipient" if r["kind"] == "legal" else "third-party integration"
        system: dict[str, Any] = {
            "fides_key": key,
            "name": r["name"],
            "description": f"{kind}; receives data through the integration broker",
            "system_type": "Third Party",
        }
        if r["privacy_policy_url"]:
            system["privacy_policy"] = r["privacy_policy_url"]
        meta = {"broker_recipient": r["recipient"], "legal_disclosure": str(r["flagged"]).lower()}
        if r["terms_url"]:
            meta["terms_url"] = r["terms_url"]
        if r.get("terms"):
            meta["terms_versions"] = ", ".join(t["terms_version"] or "?" for t in r["terms"])
        system["meta"] = meta
        system["privacy_declarations"] = [
            {
                "name": "; ".join(d["purposes"]) or d["use_name"],
                "data_categories": list(d["categories"]),
                "data_use": d["use"],
                "data_subjects": ["customer"],
                "legal_basis_for_processing": _BASIS_NAMES.get(d["legal_basis"], d["legal_basis"]),
                "data_shared_with_third_parties": True,
                "third_parties": r["name"],
                "shared_categories": list(d["categories"]),
            }
            for d in r["declarations"]
        ]
        systems.append(system)
    body = yaml.safe_dump({"system": systems}, sort_keys=False, allow_unicode=True, width=100)
    comments = "\n".join(meta_comment_lines(report)) + "\n" if report else ""
    return comments + body
