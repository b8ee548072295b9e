"""Consent receipts in the standard form: Kantara Consent Receipt v1.1, signed as a JWS.

The receipt is one JSON object (the JWS payload, canonical: sorted keys, no whitespace,
UTF-8) with every field of the Kantara Initiative *Consent Receipt Specification* v1.1
(``version`` ``KI-CR-v1.1.0``, ``jurisdiction``, ``consentTimestamp``,
``collectionMethod``, ``consentReceiptID``, ``language``, ``piiPrincipalId``,
``piiControllers``, ``policyUrl``, ``services`` with their ``purposes`` (``purpose``,
``purposeCategory``, ``consentType``, ``piiCategory``, ``termination``,
``thirdPartyDisclosure``, ``thirdPartyName``), ``sensitive``, ``spiCat``), the JWT
claims ``iss``, ``sub``, ``iat`` and ``jti`` so JWT tooling reads it, and, under
``iso27560``, the ISO/IEC TS 27560:2023 consent-record information Kantara has no field
for (the notice shown, the consent event, the lawful basis, what was declined, the
OAuth scopes, when the record was written).

Everything in it comes from the consent record and the issuer's description, never
from the clock: the same record gives the same bytes, so the SHA-256 of the payload
(:func:`receipt_digest`), written into the log's ``consent.granted`` entry when the
consent is recorded, proves the receipt by inclusion however often it is re-issued
(re-signing after a key rotation changes the signature, not the payload).

The signature is a JWS compact serialization (RFC 7515) with ``alg`` ``Ed25519``
(RFC 9864's fully-specified name for EdDSA over Ed25519, RFC 8037; joserfc marks the
polymorphic ``EdDSA`` deprecated) and ``kid`` the receipt key's id: the 8 hex digits of
its verifier key (``<name>+<kid>+<key>``, ``broker audit public-key --receipts``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from broker.core.checkpoint import NoteVerifier
from broker.core.errors import InvalidInput

__all__ = [
    "ALGORITHM",
    "KANTARA_FIELDS",
    "KANTARA_PURPOSE_FIELDS",
    "KANTARA_VERSION",
    "ConsentFacts",
    "ReceiptIssuer",
    "build_receipt",
    "canonical",
    "is_compact_jws",
    "public_jwk",
    "receipt_digest",
    "sign_receipt",
    "verify_receipt_jws",
]

KANTARA_VERSION = "KI-CR-v1.1.0"
ISO_27560 = "ISO/IEC TS 27560:2023"
ALGORITHM = "Ed25519"
#: the top-level fields Kantara v1.1 lists (``publicKey`` is optional and left out: the
#: key is named by the JWS ``kid``)
KANTARA_FIELDS = (
    "version",
    "jurisdiction",
    "consentTimestamp",
    "collectionMethod",
    "consentReceiptID",
    "language",
    "piiPrincipalId",
    "piiControllers",
    "policyUrl",
    "services",
    "sensitive",
    "spiCat",
)
KANTARA_PURPOSE_FIELDS = (
    "purpose",
    "purposeCategory",
    "consentType",
    "piiCategory",
    "termination",
    "thirdPartyDisclosure",
    "thirdPartyName",
)
#: Kantara's purpose category for data the user sends to a third party they chose
PURPOSE_CATEGORY = "3rd Party Sharing for Core Function"
COLLECTION_METHOD = (
    "web form: the broker's consent page, approved by the user before the third party's "
    "OAuth authorization"
)
#: catalog keys (fideslang) of the special categories (GDPR Art. 9 and 10)
SENSITIVE_PREFIXES = (
    "user.biometric",
    "user.criminal_history",
    "user.demographic.political_opinion",
    "user.demographic.race_ethnicity",
    "user.demographic.religious_belief",
    "user.demographic.sexual_orientation",
    "user.genetic",
    "user.health_and_medical",
    "user.union_membership",
)


@dataclass(frozen=True)
class ReceiptIssuer:
    """Who issues the receipt: the PII controller (the platform) and the signing name."""

    name: str  #: the receipt key's name (``<host>/consent-receipts``): ``iss``
    controller: str  #: the platform's name
    controller_url: str  #: the broker's public URL
    policy_url: str  #: the platform's privacy policy
    me_url: str  #: where the user disconnects (``/me``)
    jurisdiction: str = "EU"
    language: str = "en"
    contact: str | None = None
    email: str | None = None
    phone: str | None = None
    address: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ConsentFacts:
    """What the consent record says (the store's row, as plain values)."""

    consent_id: str
    connection_id: str
    user_id: str
    connector_id: str
    connector_name: str
    granted_categories: Sequence[str]
    declined_categories: Sequence[str]
    purposes: Mapping[str, str]
    privacy_policy_url: str
    terms_url: str
    manifest_digest: str
    platform_policy_version: str
    scopes: Sequence[str]
    consented_at: datetime
    recorded_at: datetime
    policy_digests: Mapping[str, str] | None = field(default=None)


def _utc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sensitive(categories: Iterable[str]) -> list[str]:
    return sorted(
        c for c in categories if any(c == p or c.startswith(p + ".") for p in SENSITIVE_PREFIXES)
    )


def _purposes(facts: ConsentFacts, issuer: ReceiptIssuer) -> list[dict[str, Any]]:
    """One Kantara purpose per distinct purpose text, naming the categories granted for it."""
    by_purpose: dict[str, list[str]] = {}
    for category in facts.granted_categories:
        text = facts.purposes.get(category) or "Provide the integration the user chose"
        by_purpose.setdefault(text, []).append(category)
    termination = (
        f"Until the user disconnects {facts.connector_name} (My integrations, {issuer.me_url}) "
        "or the platform revokes the connection; disconnecting revokes the third party's "
        "access tokens and stops every later transfer."
    )
    return [
        {
            "purpose": text,
            "purposeCategory": [PURPOSE_CATEGORY],
            "consentType": "EXPLICIT",
            "piiCategory": sorted(categories),
            "termination": termination,
            "thirdPartyDisclosure": True,
            "thirdPartyName": facts.connector_name,
        }
        for text, categories in sorted(by_purpose.items())
    ]


def _controller(issuer: ReceiptIssuer) -> dict[str, Any]:
    item: dict[str, Any] = {
        "piiController": issuer.controller,
        "onBehalf": False,
        "contact": issuer.contact or issuer.controller,
        "piiControllerUrl": issuer.controller_url,
    }
    if issuer.address:
        item["address"] = dict(issuer.address)
    if issuer.email:
        item["email"] = issuer.email
    if issuer.phone:
        item["phone"] = issuer.phone
    return item


def build_receipt(facts: ConsentFacts, issuer: ReceiptIssuer) -> dict[str, Any]:
    """The receipt of one consent record (a pure function of its arguments)."""
    spi = _sensitive(facts.granted_categories)
    consented = int(facts.consented_at.timestamp())
    return {
        "version": KANTARA_VERSION,
        "jurisdiction": issuer.jurisdiction,
        "consentTimestamp": consented,
        "collectionMethod": COLLECTION_METHOD,
        "consentReceiptID": facts.consent_id,
        "language": issuer.language,
        "piiPrincipalId": facts.user_id,
        "piiControllers": [_controller(issuer)],
        "policyUrl": issuer.policy_url,
        "services": [{"service": facts.connector_name, "purposes": _purposes(facts, issuer)}],
        "sensitive": bool(spi),
        "spiCat": spi,
        "iss": issuer.name,
        "sub": facts.user_id,
        "iat": int(facts.recorded_at.timestamp()),
        "jti": facts.consent_id,
        "iso27560": {
            "schema_version": ISO_27560,
            "record_id": facts.consent_id,
            "notice": {
                "notice_id": f"sha256:{facts.manifest_digest}",
                "platform_policy_version": facts.platform_policy_version,
                "third_party_privacy_policy_url": facts.privacy_policy_url,
                "third_party_terms_url": facts.terms_url,
                "content_digests": dict(facts.policy_digests or {}),
            },
            "event": {
                "event_time": _utc(facts.consented_at),
                "event_type": "explicit",
                "event_state": "given",
                "event_by": "pii_principal",
                "validity_duration": "until withdrawn",
            },
            "lawful_basis": "consent",
            "pii_declined": sorted(facts.declined_categories),
            "recipient": {"id": facts.connector_id, "name": facts.connector_name},
            "connection_id": facts.connection_id,
            "authorisation_scopes": list(facts.scopes),
            "record_time": _utc(facts.recorded_at),
        },
    }


def canonical(receipt: Mapping[str, Any]) -> bytes:
    """The JWS payload: sorted keys, no whitespace, UTF-8."""
    return json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def receipt_digest(receipt: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the payload: what the ``consent.granted`` log entry carries."""
    return hashlib.sha256(canonical(receipt)).hexdigest()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(verifier: NoteVerifier) -> dict[str, str]:
    """A receipt verifier key as a JWK (RFC 8037), for JOSE tools."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(verifier.public),
        "kid": verifier.key_id.hex(),
        "alg": ALGORITHM,
        "use": "sig",
    }


def sign_receipt(receipt: Mapping[str, Any], *, private: bytes, public: bytes, kid: str) -> str:
    """The compact JWS of ``receipt`` by the Ed25519 key (raw 32-byte halves) ``kid``."""
    key = OKPKey.import_key(
        {"kty": "OKP", "crv": "Ed25519", "d": _b64url(private), "x": _b64url(public)}
    )
    header = {"alg": ALGORITHM, "kid": kid, "typ": "JWT"}
    return jws.serialize_compact(header, canonical(receipt), key, algorithms=[ALGORITHM])


def is_compact_jws(text: str) -> bool:
    """Whether ``text`` looks like a compact JWS (three base64url parts) rather than a note."""
    parts = text.strip().split(".")
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    return len(parts) == 3 and all(p and set(p) <= alphabet for p in parts)


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, details={"problem": message})


def _header(token: str) -> dict[str, Any]:
    try:
        part = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise _bad("the receipt's JWS header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise _bad("the receipt's JWS header is not a JSON object")
    return header


def verify_receipt_jws(token: str, verifiers: Iterable[NoteVerifier]) -> dict[str, Any]:
    """Check a JWS receipt against the receipt verifier keys; returns ``{"receipt",
    "key_id", "sha256"}`` or raises :class:`InvalidInput` naming what is wrong.

    The key is the one the header's ``kid`` names; the receipt's ``iss`` must be that
    key's name, and the payload must be a Kantara v1.1 receipt."""
    token = token.strip()
    if not is_compact_jws(token):
        raise _bad("not a compact JWS")
    header = _header(token)
    if header.get("alg") != ALGORITHM:
        raise _bad(f"the receipt's algorithm is {header.get('alg')!r}, not {ALGORITHM}")
    kid = header.get("kid")
    known = {v.key_id.hex(): v for v in verifiers}
    verifier = known.get(kid) if isinstance(kid, str) else None
    if verifier is None:
        raise _bad(f"no known receipt key has kid {kid!r}")
    key = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": _b64url(verifier.public)})
    try:
        payload = jws.deserialize_compact(token, key, algorithms=[ALGORITHM]).payload
    except JoseError:
        raise _bad(f"the signature by key {kid} does not verify") from None
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or body.get("version") != KANTARA_VERSION:
        raise _bad("the signed payload is not a Kantara consent receipt")
    if body.get("iss") != verifier.name:
        raise _bad(f"the receipt names issuer {body.get('iss')!r}, its key is {verifier.name!r}")
    return {
        "receipt": body,
        "key_id": kid,
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
