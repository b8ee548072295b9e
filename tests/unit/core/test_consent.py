"""The consent as one type: the attempt's stored dict, the record's columns, the
note receipt's canonical JSON, the JWS receipt's facts and the audit details."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

import pytest

from broker.core.consent import RECEIPT_VERSION, Consent
from broker.core.kantara import ReceiptIssuer, build_receipt, canonical, receipt_digest

CONSENTED = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
RECORDED = datetime(2026, 5, 1, 12, 0, 7, tzinfo=UTC)

#: an attempt's consent as ``consent_terms`` stored it before the type existed
STORED = {
    "granted": ["user.content.work_items", "user.name"],
    "declined": ["user.contact.email"],
    "purposes": {
        "user.content.work_items": "Post work item updates",
        "user.name": "Show who made the change",
        "user.contact.email": "Mention people ü",
    },
    "privacy_policy_url": "https://chat.example/privacy",
    "terms_url": "https://chat.example/terms",
    "manifest_digest": "ab" * 32,
    "connector_name": "Example Chat",
    "scopes": ["messages:write"],
    "platform_policy_version": "3",
    "policy_digests": {"privacy": "cd" * 32, "terms": "ef" * 32},
    "terms_version": "12" * 32,
    "consented_at": CONSENTED.isoformat(),
    "client_ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "return_url": "https://app.example/done",
    "settings": {"subdomain": "acme"},
    "confirm": True,
}

IDS = {
    "consent_id": "cons_abc",
    "connection_id": "conn_1",
    "user_id": "user-1",
    "connector_id": "chat",
    "recorded_at": RECORDED,
}
ISSUER = ReceiptIssuer(
    name="broker.example/consent-receipts",
    controller="Acme Work",
    controller_url="https://broker.example",
    policy_url="https://acme.example/privacy",
    me_url="https://broker.example/me",
)


def _recorded() -> Consent:
    return Consent.from_dict(STORED).recorded(**IDS)


def test_the_stored_dict_round_trips() -> None:
    consent = Consent.from_dict(STORED)
    assert consent.connector_name == "Example Chat"
    assert consent.consented_at == CONSENTED
    assert consent.confirm is True and consent.reconnect is False
    assert consent.to_dict() == {**STORED, "reconnect": False}
    assert Consent.from_dict(consent.to_dict()) == consent
    again = consent.as_reconnect()
    assert again.to_dict()["reconnect"] is True
    assert Consent.from_dict(again.to_dict()) == again


def test_an_older_attempt_without_the_newer_keys_reads_with_defaults() -> None:
    newer = {"policy_digests", "terms_version", "return_url", "settings", "confirm", "user_agent"}
    old = {k: v for k, v in STORED.items() if k not in newer}
    consent = Consent.from_dict(old)
    assert consent.policy_digests is None
    assert consent.terms_version is None
    assert consent.return_url is None and consent.settings is None
    assert consent.confirm is False and consent.reconnect is False
    assert consent.user_agent is None


def test_the_type_is_frozen() -> None:
    consent = Consent.from_dict(STORED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        consent.reconnect = True  # type: ignore[misc]


def test_the_record_columns_round_trip() -> None:
    recorded = _recorded()
    fields = recorded.record_fields()
    assert fields["id"] == "cons_abc"
    assert fields["granted_categories"] == STORED["granted"]
    assert fields["declined_categories"] == STORED["declined"]
    assert fields["consented_at"] == CONSENTED
    assert fields["recorded_at"] == RECORDED
    # the record keeps what the user saw, not how the attempt carried on
    assert not {"return_url", "settings", "confirm", "reconnect"} & set(fields)
    back = Consent.from_record(fields)
    assert back.record_fields() == fields
    assert back.receipt_body(issuer="x") == recorded.receipt_body(issuer="x")


def test_what_needs_the_record_refuses_a_consent_not_recorded() -> None:
    consent = Consent.from_dict(STORED)
    for needs_record in (consent.record_fields, consent.facts):
        with pytest.raises(ValueError, match="not recorded"):
            needs_record()
    with pytest.raises(ValueError, match="not recorded"):
        consent.receipt_body(issuer="x")


def _receipt_body_before(issuer: str) -> dict[str, object]:
    """What ``flows.receipts.receipt_body`` built from the record before the type."""
    return {
        "receipt_version": "broker-consent-receipt/1",
        "issuer": issuer,
        "consent_id": "cons_abc",
        "user_id": "user-1",
        "connection_id": "conn_1",
        "connector": {"id": "chat", "name": "Example Chat"},
        "granted_categories": STORED["granted"],
        "declined_categories": STORED["declined"],
        "purposes": STORED["purposes"],
        "privacy_policy_url": STORED["privacy_policy_url"],
        "terms_url": STORED["terms_url"],
        "policy_digests": STORED["policy_digests"],
        "manifest_digest": STORED["manifest_digest"],
        "platform_policy_version": "3",
        "scopes": STORED["scopes"],
        "consented_at": CONSENTED.isoformat(),
        "recorded_at": RECORDED.isoformat(),
    }


def test_the_receipt_text_is_the_canonical_json_receipts_signed_before() -> None:
    recorded = _recorded()
    name = ISSUER.name
    assert RECEIPT_VERSION == "broker-consent-receipt/1"
    assert recorded.receipt_body(issuer=name) == _receipt_body_before(name)
    before = (
        json.dumps(
            _receipt_body_before(name), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        + "\n"
    )
    text = recorded.receipt_text(issuer=name)
    assert text == before
    assert text.endswith("}\n") and "\n" not in text[:-1] and " " not in text.split('"')[0]
    assert "ü" in text  # UTF-8, not escaped
    # stable: the same consent, the same bytes, and the same digest every time
    assert hashlib.sha256(text.encode()).hexdigest() == hashlib.sha256(before.encode()).hexdigest()
    assert Consent.from_record(recorded.record_fields()).receipt_text(issuer=name) == text


def test_the_jws_receipt_digest_is_that_of_the_kantara_payload() -> None:
    recorded = _recorded()
    facts = recorded.facts()
    assert facts.consent_id == "cons_abc" and facts.connector_name == "Example Chat"
    assert list(facts.granted_categories) == STORED["granted"]
    assert facts.policy_digests == STORED["policy_digests"]
    payload = build_receipt(facts, ISSUER)
    assert recorded.receipt_sha256(ISSUER) == receipt_digest(payload)
    assert recorded.receipt_sha256(ISSUER) == hashlib.sha256(canonical(payload)).hexdigest()


def test_the_audit_details() -> None:
    recorded = _recorded()
    details = recorded.audit_details(receipt_sha256="99" * 32)
    assert details == {
        "declined": STORED["declined"],
        "privacy_policy_url": STORED["privacy_policy_url"],
        "terms_url": STORED["terms_url"],
        "platform_policy_version": "3",
        "manifest_digest": STORED["manifest_digest"],
        "terms_version": STORED["terms_version"],
        "receipt_sha256": "99" * 32,
    }
    renewed = recorded.audit_details(
        receipt_sha256="99" * 32, renewed="reconnect", previous_consent_id="cons_old"
    )
    assert renewed == {**details, "renewed": "reconnect", "previous_consent_id": "cons_old"}
    # the renewal of a connection that had no record says so with null
    first = recorded.audit_details(receipt_sha256="99" * 32, renewed="reconsent")
    assert first["previous_consent_id"] is None
