"""Signed consent receipts: what a user agreed to, signed by the broker.

A receipt is a C2SP signed note (the format of the log's checkpoints) whose
text is one line of canonical JSON (sorted keys, no whitespace, UTF-8)
describing the consent record, signed with the broker's **receipt** key: a key
ring of its own (``BROKER_HOME/receipt-keys.json``, named
``<host>/consent-receipts``), so that the key that vouches for the audit log
never signs anything a user is handed, and either can be rotated alone.

Receipts issued before the receipt key existed were signed with the checkpoint
key; the checkpoint verifier keys stay valid for them (and only for them: a
receipt under the checkpoint key whose consent was recorded after the receipt
key was created is refused). Anyone with the verifier keys (``GET
/v1/audit/public-key?keys=receipts``, ``broker audit public-key --receipts``)
can check a receipt with any signed-note implementation, or with
:func:`verify_receipt` (``broker audit verify-receipt``); changing one byte
breaks it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from broker.core.checkpoint import NoteVerifier, SigningKeyRing, open_note, sign_note
from broker.core.errors import InvalidInput, NotFound
from broker.runtime import Runtime
from broker.store.models import ConsentRecord

__all__ = [
    "RECEIPT_VERSION",
    "consent_receipt",
    "receipt_body",
    "receipt_public_keys",
    "receipt_verifiers",
    "verify_receipt",
]

RECEIPT_VERSION = "broker-consent-receipt/1"
_SECOND = timedelta(seconds=1)


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
    signer = rt.receipt_keys().signer()
    body = receipt_body(rec, issuer=signer.name)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    return sign_note(text, [signer])


def _since(ring: SigningKeyRing) -> str | None:
    """When the receipt key ring got its first key (receipts before it used the checkpoint key)."""
    times = [t for t in ring.created.values() if t]
    return min(times) if times else None


def receipt_verifiers(rt: Runtime) -> tuple[list[NoteVerifier], list[NoteVerifier]]:
    """(receipt keys, legacy checkpoint keys that signed the receipts issued before them)."""
    return rt.receipt_keys().verifiers(), rt.signing_keys().verifiers()


def receipt_public_keys(rt: Runtime) -> dict[str, Any]:
    """The verifier keys of receipts, as ``GET /v1/audit/public-key?keys=receipts`` gives them."""
    ring, checkpoints = rt.receipt_keys(), rt.signing_keys()
    since = _since(ring)

    def item(v: NoteVerifier, ring_of: SigningKeyRing, legacy: bool) -> dict[str, Any]:
        kid = v.key_id.hex()
        return {
            "key_id": kid,
            "vkey": v.vkey,
            "algorithm": "ed25519",
            "active": not legacy and kid == ring_of.active,
            "created_at": ring_of.created.get(kid),
            "retired_at": since if legacy else v.not_after,
            "legacy": legacy,
        }

    keys = [item(v, ring, False) for v in ring.verifiers()]
    keys += [item(v, checkpoints, True) for v in checkpoints.verifiers()]
    return {"origin": ring.name, "active_key_id": ring.active, "keys": keys}


def verify_receipt(rt: Runtime, note: str) -> dict[str, Any]:
    """Check a receipt; returns ``{"receipt": body, "key_id", "legacy"}`` or raises
    :class:`InvalidInput` naming what is wrong."""
    current, legacy = receipt_verifiers(rt)
    text, good = open_note(note, current + legacy)
    try:
        body = json.loads(text)
    except ValueError:
        raise InvalidInput("the signed text is not a consent receipt") from None
    if not isinstance(body, dict) or body.get("receipt_version") != RECEIPT_VERSION:
        raise InvalidInput("the signed text is not a consent receipt")
    by_receipt_key = [v for v in good if v in current]
    if by_receipt_key:
        return {"receipt": body, "key_id": by_receipt_key[0].key_id.hex(), "legacy": False}
    since = _since(rt.receipt_keys())
    try:
        recorded = datetime.fromisoformat(str(body.get("recorded_at")))
        cutoff = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
    except ValueError:
        recorded = None
    if recorded is None or recorded.tzinfo is None:
        raise InvalidInput("the receipt has no valid recorded_at")
    # ``since`` is to the second: the key was made within the second after it.
    if cutoff is not None and recorded >= cutoff + _SECOND:
        raise InvalidInput(
            "this receipt is signed with the checkpoint key, which stopped signing receipts "
            f"at {since}; a receipt for a consent recorded later cannot be genuine"
        )
    return {"receipt": body, "key_id": good[0].key_id.hex(), "legacy": True}
