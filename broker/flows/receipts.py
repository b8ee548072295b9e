"""Signed consent receipts: what a user agreed to, signed by the broker.

Two formats, both signed with the receipt key:

* **JWS** (``?format=jws``, ``broker.core.kantara``): a Kantara Consent Receipt v1.1
  with ISO/IEC TS 27560 record fields, as a compact JWS (``Ed25519``, ``kid`` the
  receipt key id). Its payload's SHA-256 is in the ``consent.granted`` log entry
  (``details.receipt_sha256``), so the receipt is provable by inclusion too.
  :func:`receipt_sha256` computes it from the record before the entry is written.
* **note** (the default, ``broker-consent-receipt/1``), described below.

A note receipt is a C2SP signed note (the format of the log's checkpoints) whose
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
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlmodel import Session

from broker.core.checkpoint import NoteVerifier, SigningKeyRing, open_note, sign_note
from broker.core.consent import RECEIPT_VERSION, Consent
from broker.core.errors import InvalidInput, NotFound
from broker.core.kantara import (
    ConsentFacts,
    ReceiptIssuer,
    build_receipt,
    is_compact_jws,
    public_jwk,
    sign_receipt,
    verify_receipt_jws,
)
from broker.runtime import Runtime
from broker.store.models import ConsentRecord

__all__ = [
    "RECEIPT_VERSION",
    "check_receipt",
    "consent_facts",
    "consent_receipt",
    "consent_receipt_jws",
    "kantara_receipt",
    "receipt_body",
    "receipt_jwks",
    "receipt_public_keys",
    "receipt_sha256",
    "receipt_verifiers",
    "recorded_consent",
    "verify_receipt",
]

_SECOND = timedelta(seconds=1)


def recorded_consent(rec: ConsentRecord) -> Consent:
    """The consent a consent record holds."""
    return Consent.from_record(rec.model_dump())


def receipt_body(rec: ConsentRecord, *, issuer: str) -> dict[str, Any]:
    """The note receipt's body of ``rec`` (:meth:`broker.core.consent.Consent.receipt_body`)."""
    return recorded_consent(rec).receipt_body(issuer=issuer)


def _issuer(rt: Runtime) -> ReceiptIssuer:
    base = rt.settings.resolved_base_url
    return ReceiptIssuer(
        name=rt.receipt_keys().name,
        controller=rt.settings.platform_name or (urlsplit(base).hostname or base),
        controller_url=base,
        policy_url=rt.settings.policy_url or base,
        me_url=f"{base}/me",
    )


def consent_facts(rec: ConsentRecord) -> ConsentFacts:
    """The consent record as plain values (receipts and reports read these)."""
    return recorded_consent(rec).facts()


def kantara_receipt(rt: Runtime, rec: ConsentRecord) -> dict[str, Any]:
    """The Kantara v1.1 / ISO 27560 receipt of ``rec`` (unsigned)."""
    return build_receipt(consent_facts(rec), _issuer(rt))


def receipt_sha256(rt: Runtime, consent: Consent) -> str:
    """The SHA-256 of the recorded ``consent``'s JWS receipt payload, for its
    ``consent.granted`` entry (the receipt depends on the record and the issuer only, so
    it can be computed before the entry is written and before anything is signed)."""
    return consent.receipt_sha256(_issuer(rt))


def _record(rt: Runtime, consent_id: str, user_id: str | None) -> ConsentRecord:
    with Session(rt.engine) as session:
        rec = session.get(ConsentRecord, consent_id)
    if rec is None or (user_id is not None and rec.user_id != user_id):
        raise NotFound(f"no consent record {consent_id!r}", details={"consent_id": consent_id})
    return rec


def consent_receipt_jws(rt: Runtime, consent_id: str, *, user_id: str | None = None) -> str:
    """The Kantara receipt of one consent record as a compact JWS (receipt key)."""
    rec = _record(rt, consent_id, user_id)
    ring = rt.receipt_keys()
    return sign_receipt(
        kantara_receipt(rt, rec),
        private=ring.private[ring.active],
        public=ring.public[ring.active],
        kid=ring.active,
    )


def receipt_jwks(rt: Runtime) -> dict[str, Any]:
    """The receipt key ring's public keys as a JWK Set (what JWS receipts verify with);
    each JWK also names the key (``name``, the receipts' ``iss``) and, once it is
    retired, ``retired_at``."""
    ring = rt.receipt_keys()
    keys = []
    for v in ring.verifiers():
        retired = {"retired_at": v.not_after} if v.not_after else {}
        keys.append({**public_jwk(v), "name": v.name, **retired})
    return {"keys": keys}


def consent_receipt(rt: Runtime, consent_id: str, *, user_id: str | None = None) -> str:
    """The signed receipt of one consent record; ``user_id`` restricts it to its owner."""
    rec = _record(rt, consent_id, user_id)
    signer = rt.receipt_keys().signer()
    return sign_note(recorded_consent(rec).receipt_text(issuer=signer.name), [signer])


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
    """Check a receipt, a note or a JWS; returns ``{"receipt": body, "key_id", "legacy",
    "format"}`` (a JWS also ``"sha256"``, its payload digest) or raises
    :class:`InvalidInput` naming what is wrong. JWS receipts are only ever signed by
    the receipt key: the legacy checkpoint keys do not verify them."""
    current, legacy = receipt_verifiers(rt)
    if is_compact_jws(note):
        return {**verify_receipt_jws(note, current), "legacy": False, "format": "jws"}
    text, good = open_note(note, current + legacy)
    try:
        body = json.loads(text)
    except ValueError:
        raise InvalidInput("the signed text is not a consent receipt") from None
    if not isinstance(body, dict) or body.get("receipt_version") != RECEIPT_VERSION:
        raise InvalidInput("the signed text is not a consent receipt")
    by_receipt_key = [v for v in good if v in current]
    if by_receipt_key:
        kid = by_receipt_key[0].key_id.hex()
        return {"receipt": body, "key_id": kid, "legacy": False, "format": "note"}
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
    return {"receipt": body, "key_id": good[0].key_id.hex(), "legacy": True, "format": "note"}


def _not_after(verifier: NoteVerifier, recorded: datetime | None) -> None:
    """A key retired at T signed nothing after T, so nothing recorded after it."""
    if verifier.not_after is None:
        return
    cutoff = datetime.fromisoformat(verifier.not_after.replace("Z", "+00:00"))
    if recorded is None or recorded >= cutoff + _SECOND:
        raise InvalidInput(
            f"the receipt is signed by key {verifier.key_id.hex()}, retired at "
            f"{verifier.not_after}, before the consent was recorded; it cannot be genuine"
        )


def check_receipt(text: str, verifiers: list[NoteVerifier]) -> dict[str, Any]:
    """Check a receipt (JWS or note) offline against verifier keys (a ``broker audit
    public-key --receipts`` file: each key's ``retired=`` time is when it stopped
    signing); returns what :func:`verify_receipt` returns, without ``legacy``."""
    if is_compact_jws(text):
        out = verify_receipt_jws(text, verifiers)
        by = next(v for v in verifiers if v.key_id.hex() == out["key_id"])
        iat = out["receipt"].get("iat")
        _not_after(by, datetime.fromtimestamp(iat, UTC) if isinstance(iat, int) else None)
        return {**out, "format": "jws"}
    body_text, good = open_note(text, verifiers)
    try:
        body = json.loads(body_text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("receipt_version") != RECEIPT_VERSION:
        raise InvalidInput("the signed text is not a consent receipt")
    try:
        recorded: datetime | None = datetime.fromisoformat(str(body.get("recorded_at")))
    except ValueError:
        recorded = None
    if recorded is not None and recorded.tzinfo is None:
        recorded = None
    _not_after(good[0], recorded)
    return {"receipt": body, "key_id": good[0].key_id.hex(), "format": "note"}
