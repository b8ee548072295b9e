"""One transfer as an auditor reads it: its row, its attempts (status codes and
waits), the consent record and terms it was sent under, the fields left out of the
grant, and the audit entries it produced, each with where its inclusion proof
against the latest checkpoint is (when the checkpoint covers it)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from broker.core.errors import NotFound
from broker.core.statuses import TransferStatus
from broker.flows.events import entry_dict
from broker.flows.share import transfer_dict
from broker.runtime import Runtime
from broker.store.events import blocked_details, transfer_entries
from broker.store.models import ConsentRecord, Transfer
from broker.store.tree import latest_checkpoint

__all__ = ["outside_fields", "transfer_detail"]


def _consent(record: ConsentRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "id": record.id,
        "connector_name": record.connector_name,
        "granted_categories": list(record.granted_categories),
        "declined_categories": list(record.declined_categories),
        "privacy_policy_url": record.privacy_policy_url,
        "terms_url": record.terms_url,
        "policy_digests": dict(record.policy_digests or {}),
        "terms_version": record.terms_version,
        "platform_policy_version": record.platform_policy_version,
        "consented_at": record.consented_at,
    }


def _outside(dropped: list[dict[str, Any]], details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Refused (reject mode): the blocked entry names the fields; dropped (drop mode):
    the row does."""
    return [f for d in details for f in d.get("outside", [])] or list(dropped)


def outside_fields(rt: Runtime, transfers: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The fields outside the grant of each of ``transfers`` (dicts of
    :func:`~broker.flows.share.transfer_dict`) that had any, by transfer id: one
    indexed read of the blocked entries of the page's blocked transfers."""
    blocked = [
        t["id"] for t in transfers if t["status"] == TransferStatus.BLOCKED and not t["dropped"]
    ]
    details: dict[str, list[dict[str, Any]]] = {}
    if blocked:
        with Session(rt.engine) as session:
            rows = blocked_details(session, transfer_ids=blocked)
        for transfer_id, d in rows:
            details.setdefault(transfer_id, []).append(dict(d))
    found = {t["id"]: _outside(t["dropped"], details.get(t["id"], [])) for t in transfers}
    return {tid: fields for tid, fields in found.items() if fields}


def transfer_detail(rt: Runtime, transfer_id: str) -> dict[str, Any]:
    """The transfer, its consent record, its audit entries, the fields outside the
    grant (``outside``: refused or dropped) and the latest checkpoint's size
    (``proof_size``: None before the first checkpoint). The entries are found by
    ``transfer_id`` (an index of migration 0020)."""
    with Session(rt.engine) as session:
        t = session.get(Transfer, transfer_id)
        if t is None:
            raise NotFound(f"no transfer {transfer_id!r}", details={"transfer_id": transfer_id})
        consent = session.get(ConsentRecord, t.consent_id) if t.consent_id else None
        entries = [entry_dict(r) for r in transfer_entries(session, transfer_id=transfer_id)]
        info = _consent(consent)
    try:
        size: int | None = latest_checkpoint(rt.engine).tree_size
    except NotFound:
        size = None
    for e in entries:
        e["proved"] = size is not None and e["seq"] <= size
    outside = _outside(t.dropped, [e["details"] for e in entries])
    return {
        "transfer": transfer_dict(t),
        "outside": outside,
        "consent": info,
        "entries": entries,
        "proof_size": size,
    }
