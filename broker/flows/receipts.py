"""Signed consent receipts: what a user agreed to, signed by the broker.

A receipt is a C2SP signed note (the format of the log's checkpoints) whose
text is one line of canonical JSON (sorted keys, no whitespace, UTF-8)
describing the consent record, signed with the current checkpoint signing
key. Anyone with the verifier key (``GET /v1/audit/public-key``, ``broker
audit public-key``) can check it with any signed-note implementation or
``broker.core.checkpoint.open_note``; changing one byte breaks it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session

from broker.core.checkpoint import sign_note
from broker.core.errors import NotFound
from broker.runtime import Runtime
from broker.store.models import ConsentRecord

__all__ = ["RECEIPT_VERSION", "consent_receipt", "receipt_body"]

RECEIPT_VERSION = "broker-consent-receipt/1"


def receipt_body(rec: ConsentRecord, *, issuer: str) -> dict[str, Any]:
    return {
        "receipt_version": RECEIPT_VERSION,
        "issuer": issuer,
        "consent_id": rec.id,
        "user_id": rec.user_id,
        "connection_id": rec.connection_id,
        "connector": {"id": rec.connector_id, "name": rec.connector_name},
        "granted_categories": list(rec.granted_categories),
        "declined_categories": list(rec.declined_categories),
        "purposes": dict(rec.purposes),
        "privacy_policy_url": rec.privacy_policy_url,
        "terms_url": rec.terms_url,
        "policy_digests": rec.policy_digests,
        "manifest_digest": rec.manifest_digest,
        "platform_policy_version": rec.platform_policy_version,
        "scopes": list(rec.scopes),
        "consented_at": rec.consented_at.isoformat(),
        "recorded_at": rec.recorded_at.isoformat(),
    }


def consent_receipt(rt: Runtime, consent_id: str, *, user_id: str | None = None) -> str:
    """The signed receipt of one consent record; ``user_id`` restricts it to its owner."""
    with Session(rt.engine) as session:
        rec = session.get(ConsentRecord, consent_id)
    if rec is None or (user_id is not None and rec.user_id != user_id):
        raise NotFound(f"no consent record {consent_id!r}", details={"consent_id": consent_id})
    signer = rt.signing_keys().signer()
    body = receipt_body(rec, issuer=signer.name)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    return sign_note(text, [signer])
