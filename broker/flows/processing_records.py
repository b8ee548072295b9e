"""Records of processing per recipient (GDPR Art. 30).

For each third party the data categories and purposes (fideslang data uses) it is
declared to receive, what it did receive, and its policy links; as JSON or as fideslang
``System`` resources with ``privacy_declarations`` (YAML) for a Fides data map.
Installed connectors declare from their manifests; recipients no longer installed,
from what the transfers and consent records kept; legal disclosures, from the log.
Per user (Art. 15): :mod:`broker.flows.user_report`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from sqlmodel import Session

from broker.core.connector import Connector
from broker.core.policy import data_uses
from broker.flows.audit import recipients_report
from broker.flows.disclosures import LEGAL_USE
from broker.flows.recorded import terms_by_connector
from broker.flows.report_meta import meta_comment_lines
from broker.flows.terms_report import terms_sent
from broker.runtime import Runtime
from broker.store.events import legal_disclosures
from broker.store.models import AuditRow
from broker.store.transfers import disclosed_declarations

__all__ = ["processing_records", "records_yaml"]

_BASIS_NAMES = {
    "consent": "Consent",
    "legal_obligation": "Legal obligations",
    "vital_interests": "Vital interests",
    "public_task": "Public interest",
    "legitimate_interests": "Legitimate interests",
}


def _declaration(
    use: str, names: dict[str, str], legal_basis: str | None = "consent"
) -> dict[str, Any]:
    return {
        "use": use,
        "use_name": names.get(use, use),
        "purposes": [],
        "categories": [],
        "legal_basis": legal_basis,
    }


def _installed_record(
    connector: Connector, got: dict[str, Any], names: dict[str, str]
) -> dict[str, Any]:
    """An installed recipient: declared by its manifest, with what it ``got``."""
    m = connector.manifest
    uses: dict[str, dict[str, Any]] = {}
    for d in m.data:
        u = uses.setdefault(d.use, _declaration(d.use, names))
        u["categories"].append(d.category)
        if d.purpose not in u["purposes"]:
            u["purposes"].append(d.purpose)
    return {
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


def _legal_records(legal: list[AuditRow], names: dict[str, str]) -> list[dict[str, Any]]:
    """The recipients of legal disclosures, by name, declared by what they received."""
    by_recipient: dict[str, dict[str, Any]] = {}
    for row in legal:
        name = str(row.details.get("recipient"))
        r = by_recipient.setdefault(name, {
            "recipient": name, "name": name, "kind": "legal", "flagged": True,
            "installed": False, "privacy_policy_url": None, "terms_url": None,
            "declarations": [], "received_categories": [], "transfers": 0,
            "first_at": row.time, "last_at": row.time,
        })  # fmt: skip
        decl = next((x for x in r["declarations"] if x["legal_basis"] == row.legal_basis), None)
        if decl is None:
            decl = _declaration(LEGAL_USE, names, row.legal_basis)
            r["declarations"].append(decl)
        decl["categories"] = sorted(set(decl["categories"]) | set(row.categories))
        if row.purpose and row.purpose not in decl["purposes"]:
            decl["purposes"].append(row.purpose)
        r["received_categories"] = sorted(set(r["received_categories"]) | set(row.categories))
        r["transfers"] += 1
        r["last_at"] = row.time
    return [{**r, "terms": []} for r in sorted(by_recipient.values(), key=lambda r: r["recipient"])]


def processing_records(rt: Runtime) -> list[dict[str, Any]]:
    """Per third party: declared categories and purposes (by data use), what it received."""
    received = {r["connector"]: r for r in recipients_report(rt)}
    names = data_uses()
    out = [
        _installed_record(connector, received.pop(connector.id, {}), names)
        for connector in rt.registry.all()
    ]
    # Recipients that received data and are no longer installed: from the record.
    gone = [r for r in received.values() if r.get("connector")]
    out.extend(_uninstalled_records(rt, gone, names))
    with Session(rt.engine) as session:
        legal = legal_disclosures(session)
    sent = terms_sent(rt)  # the terms versions each recipient's data was sent under
    for r in out:
        r["terms"] = sent.get(r["recipient"], [])
    return out + _legal_records(legal, names)


def _recorded_declarations(
    sent: list[tuple[str, str | None, list[str] | None, list[str]]], names: dict[str, str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per connector and data use, the declarations as the transfers ``sent`` recorded."""
    declared: dict[str, dict[str, dict[str, Any]]] = {}
    for connector_id, purpose, uses, categories in sent:
        for use in uses or ["unknown"]:  # sent before 0014 kept no uses
            d = declared.setdefault(connector_id, {}).setdefault(use, _declaration(use, names))
            if purpose and purpose not in d["purposes"]:
                d["purposes"].append(purpose)
            d["categories"] = sorted(set(d["categories"]) | set(categories))
    return declared


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
        sent = disclosed_declarations(session, connector_ids=ids)
    declared = _recorded_declarations(sent, names)
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


def _system(r: dict[str, Any]) -> dict[str, Any]:
    """One recipient's record as a fideslang ``System``."""
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
    return system


def records_yaml(records: list[dict[str, Any]], report: dict[str, Any] | None = None) -> str:
    """fideslang ``System`` resources, one per recipient, with ``privacy_declarations``;
    ``report`` (:func:`broker.flows.report_meta.report_meta`) as ``#`` comments first, and
    each recipient's terms versions in its ``meta``."""
    systems = [_system(r) for r in records]
    body = yaml.safe_dump({"system": systems}, sort_keys=False, allow_unicode=True, width=100)
    comments = "\n".join(meta_comment_lines(report)) + "\n" if report else ""
    return comments + body
