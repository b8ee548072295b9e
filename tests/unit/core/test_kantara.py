"""Kantara Consent Receipt v1.1 as a JWS: fields, signature, tampering, wrong key."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.jwk import OKPKey

from broker.core.checkpoint import NoteVerifier, SigningKeyRing
from broker.core.errors import InvalidInput
from broker.core.kantara import (
    KANTARA_FIELDS,
    KANTARA_PURPOSE_FIELDS,
    ConsentFacts,
    ReceiptIssuer,
    build_receipt,
    is_compact_jws,
    public_jwk,
    receipt_digest,
    sign_receipt,
    verify_receipt_jws,
)

NAME = "broker.example/consent-receipts"
ISSUER = ReceiptIssuer(
    name=NAME,
    controller="Acme Work",
    controller_url="https://broker.example",
    policy_url="https://acme.example/privacy",
    me_url="https://broker.example/me",
)
FACTS = ConsentFacts(
    consent_id="cons_abc",
    connection_id="conn_1",
    user_id="user-1",
    connector_id="chat",
    connector_name="Example Chat",
    granted_categories=["user.content.work_items", "user.name", "user.health_and_medical"],
    declined_categories=["user.contact.email"],
    purposes={
        "user.content.work_items": "Post work item updates",
        "user.name": "Show who made the change",
        "user.health_and_medical": "Post work item updates",
        "user.contact.email": "Mention people",
    },
    privacy_policy_url="https://chat.example/privacy",
    terms_url="https://chat.example/terms",
    manifest_digest="ab" * 32,
    platform_policy_version="3",
    scopes=["messages:write"],
    consented_at=datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC),
    recorded_at=datetime(2026, 5, 1, 12, 0, 7, tzinfo=UTC),
)


def _ring(name: str = NAME) -> SigningKeyRing:
    ring = SigningKeyRing(name=name)
    ring.add_new_key()
    return ring


def _sign(ring: SigningKeyRing, receipt: dict | None = None) -> str:
    return sign_receipt(
        receipt or build_receipt(FACTS, ISSUER),
        private=ring.private[ring.active],
        public=ring.public[ring.active],
        kid=ring.active,
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_every_kantara_field_is_present_with_its_type() -> None:
    r = build_receipt(FACTS, ISSUER)
    for name in KANTARA_FIELDS:
        assert name in r, name
    assert r["version"] == "KI-CR-v1.1.0"
    assert r["jurisdiction"] == "EU"
    assert r["consentTimestamp"] == int(FACTS.consented_at.timestamp())
    assert isinstance(r["consentTimestamp"], int)
    assert r["collectionMethod"]
    assert r["consentReceiptID"] == "cons_abc"
    assert r["language"] == "en"
    assert r["piiPrincipalId"] == "user-1"
    (controller,) = r["piiControllers"]
    assert controller["piiController"] == "Acme Work"
    assert controller["contact"] and controller["onBehalf"] is False
    assert r["policyUrl"] == "https://acme.example/privacy"
    (service,) = r["services"]
    assert service["service"] == "Example Chat"
    purposes = {p["purpose"]: p for p in service["purposes"]}
    assert set(purposes) == {"Post work item updates", "Show who made the change"}
    for p in purposes.values():
        for name in KANTARA_PURPOSE_FIELDS:
            assert name in p, name
        assert p["purposeCategory"] and p["consentType"] == "EXPLICIT"
        assert p["termination"] and p["thirdPartyDisclosure"] is True
        assert p["thirdPartyName"] == "Example Chat"
    # categories granted for the same purpose are one purpose; declined ones are not there
    assert purposes["Post work item updates"]["piiCategory"] == [
        "user.content.work_items",
        "user.health_and_medical",
    ]
    assert purposes["Show who made the change"]["piiCategory"] == ["user.name"]
    assert r["sensitive"] is True and r["spiCat"] == ["user.health_and_medical"]
    iso = r["iso27560"]
    assert iso["pii_declined"] == ["user.contact.email"]
    assert iso["notice"]["notice_id"] == "sha256:" + "ab" * 32
    assert iso["event"]["event_time"] == "2026-05-01T12:00:00Z"
    assert iso["record_time"] == "2026-05-01T12:00:07Z"
    assert iso["lawful_basis"] == "consent"


def test_receipt_is_a_pure_function_of_the_record() -> None:
    assert build_receipt(FACTS, ISSUER) == build_receipt(FACTS, ISSUER)
    a, b = (
        receipt_digest(build_receipt(FACTS, ISSUER)),
        receipt_digest(build_receipt(FACTS, ISSUER)),
    )
    assert a == b and len(a) == 64
    other = ConsentFacts(**{**FACTS.__dict__, "declined_categories": []})
    assert receipt_digest(build_receipt(other, ISSUER)) != a


def test_signed_receipt_verifies_and_names_its_key() -> None:
    ring = _ring()
    token = _sign(ring)
    assert is_compact_jws(token)
    header = json.loads(_unb64(token.split(".")[0]))
    assert header == {"alg": "Ed25519", "kid": ring.active, "typ": "JWT"}
    out = verify_receipt_jws(token, ring.verifiers())
    assert out["receipt"] == build_receipt(FACTS, ISSUER)
    assert out["key_id"] == ring.active
    # the digest the log carries is the SHA-256 of the signed payload bytes
    assert out["sha256"] == receipt_digest(build_receipt(FACTS, ISSUER))
    assert out["sha256"] == hashlib.sha256(_unb64(token.split(".")[1])).hexdigest()


def test_a_jose_library_verifies_it_with_the_published_jwk() -> None:
    ring = _ring()
    token = _sign(ring)
    (verifier,) = ring.verifiers()
    jwk = public_jwk(verifier)
    assert jwk["kid"] == ring.active
    key = OKPKey.import_key(jwk)
    assert json.loads(jws.deserialize_compact(token, key, algorithms=["Ed25519"]).payload)[
        "consentReceiptID"
    ] == ("cons_abc")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("piiPrincipalId", "user-2"),
        ("consentTimestamp", 0),
        ("sensitive", False),
        ("policyUrl", "https://evil.example/privacy"),
    ],
)
def test_changing_one_field_breaks_the_signature(field: str, value: object) -> None:
    ring = _ring()
    header, payload, signature = _sign(ring).split(".")
    body = json.loads(_unb64(payload))
    assert body[field] != value
    body[field] = value
    forged_payload = _b64(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    forged = f"{header}.{forged_payload}.{signature}"
    with pytest.raises(InvalidInput, match="does not verify"):
        verify_receipt_jws(forged, ring.verifiers())


def test_one_changed_purpose_category_breaks_it() -> None:
    ring = _ring()
    header, payload, signature = _sign(ring).split(".")
    text = _unb64(payload).decode().replace('"user.name"', '"user.nam3"')
    with pytest.raises(InvalidInput, match="does not verify"):
        verify_receipt_jws(f"{header}.{_b64(text.encode())}.{signature}", ring.verifiers())


def test_wrong_key_fails() -> None:
    ring, other = _ring(), _ring()
    token = _sign(ring)
    with pytest.raises(InvalidInput, match="no known receipt key"):
        verify_receipt_jws(token, other.verifiers())
    # a different key claiming the right kid (same name) still fails
    impostor = NoteVerifier(NAME, other.public[other.active])
    _, payload, signature = token.split(".")
    forged_header = _b64(
        json.dumps({"alg": "Ed25519", "kid": impostor.key_id.hex(), "typ": "JWT"}).encode()
    )
    with pytest.raises(InvalidInput, match="does not verify"):
        verify_receipt_jws(f"{forged_header}.{payload}.{signature}", [impostor])


def test_signed_by_another_name_or_algorithm_is_refused() -> None:
    ring = _ring("other.example/consent-receipts")
    with pytest.raises(InvalidInput, match="issuer"):
        verify_receipt_jws(_sign(ring), ring.verifiers())
    # "none" or an HMAC over the payload never passes
    good = _ring()
    _, payload, _ = _sign(good).split(".")
    none_header = _b64(json.dumps({"alg": "none", "kid": good.active}).encode())
    with pytest.raises(InvalidInput, match="algorithm"):
        verify_receipt_jws(f"{none_header}.{payload}.AAAA", good.verifiers())


def test_a_note_or_garbage_is_not_a_jws() -> None:
    assert not is_compact_jws("text\n\n\u2014 name sig\n")
    assert not is_compact_jws("a.b")
    with pytest.raises(InvalidInput):
        verify_receipt_jws("not a receipt", _ring().verifiers())
    key = Ed25519PrivateKey.generate()
    assert not is_compact_jws(key.public_key().public_bytes_raw().hex())
