"""The consent a user gives: what they were shown and chose, in one type.

A :class:`Consent` is built once, when the user approves the consent page (or answers
a change of terms on ``/me``), by :func:`broker.flows.consent_records.consent_terms`.
It then takes every form the consent has, each derived here:

* its **stored form** on the OAuth attempt until the callback (:meth:`Consent.to_dict`,
  :meth:`Consent.from_dict`; attempts stored before a key existed read with its
  default: no ``policy_digests``, no ``terms_version``, not a ``reconnect``...);
* the **consent record**'s columns once it is written (:meth:`Consent.recorded`,
  :meth:`Consent.record_fields`, :meth:`Consent.from_record`), which the API shows as is;
* the **note receipt**'s body and its one line of canonical JSON (:meth:`Consent.receipt_body`,
  :meth:`Consent.receipt_text`: the canonical JSON of :func:`broker.core.kantara.canonical`,
  the same as the JWS receipt's payload), and the JWS receipt's facts
  (:meth:`Consent.facts`, :meth:`Consent.receipt_sha256`);
* the **details** of its ``consent.granted`` audit entry (:meth:`Consent.audit_details`).

The record's own fields (``consent_id``, ``connection_id``, ``user_id``, ``connector_id``,
``recorded_at``) are ``None`` until it is recorded; what needs them refuses a consent
that is not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from broker.core.kantara import (
    ConsentFacts,
    ReceiptIssuer,
    build_receipt,
    canonical,
    receipt_digest,
)

__all__ = ["RECEIPT_VERSION", "Consent"]

#: the note receipt's ``receipt_version``
RECEIPT_VERSION = "broker-consent-receipt/1"


class _Ids(NamedTuple):
    consent_id: str
    connection_id: str
    user_id: str
    connector_id: str
    recorded_at: datetime


@dataclass(frozen=True, kw_only=True)
class Consent:
    """What the user was shown and chose, and once recorded, which record it is."""

    connector_name: str
    granted: tuple[str, ...]
    declined: tuple[str, ...]
    purposes: Mapping[str, str]
    privacy_policy_url: str
    terms_url: str
    manifest_digest: str
    platform_policy_version: str
    scopes: tuple[str, ...]
    consented_at: datetime
    #: the digests of the policy and terms snapshots shown (older attempts: none)
    policy_digests: Mapping[str, str] | None = None
    terms_version: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    # How the attempt carries on at the callback (kept on the attempt, not recorded).
    return_url: str | None = None
    settings: Mapping[str, str] | None = None
    confirm: bool = False
    #: the attempt re-authorises the user's live connection (issue 12)
    reconnect: bool = False
    # The record, once written.
    consent_id: str | None = None
    connection_id: str | None = None
    user_id: str | None = None
    connector_id: str | None = None
    recorded_at: datetime | None = None

    # --- the stored form on the OAuth attempt ----------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Consent:
        """The consent an attempt keeps (:meth:`to_dict`, or an older attempt's dict)."""
        settings = data.get("settings")
        return cls(
            connector_name=data["connector_name"],
            granted=tuple(data["granted"]),
            declined=tuple(data["declined"]),
            purposes=dict(data["purposes"]),
            privacy_policy_url=data["privacy_policy_url"],
            terms_url=data["terms_url"],
            manifest_digest=data["manifest_digest"],
            platform_policy_version=data["platform_policy_version"],
            scopes=tuple(data["scopes"]),
            consented_at=datetime.fromisoformat(data["consented_at"]),
            policy_digests=_optional_dict(data.get("policy_digests")),
            terms_version=data.get("terms_version"),
            client_ip=data.get("client_ip"),
            user_agent=data.get("user_agent"),
            return_url=data.get("return_url"),
            settings=dict(settings) if settings else None,
            confirm=bool(data.get("confirm")),
            reconnect=bool(data.get("reconnect")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON an attempt keeps until the callback."""
        return {
            "granted": list(self.granted),
            "declined": list(self.declined),
            "purposes": dict(self.purposes),
            "privacy_policy_url": self.privacy_policy_url,
            "terms_url": self.terms_url,
            "manifest_digest": self.manifest_digest,
            "connector_name": self.connector_name,
            "scopes": list(self.scopes),
            "platform_policy_version": self.platform_policy_version,
            "policy_digests": _optional_dict(self.policy_digests),
            "terms_version": self.terms_version,
            "consented_at": self.consented_at.isoformat(),
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "return_url": self.return_url,
            "settings": dict(self.settings) if self.settings else None,
            "confirm": self.confirm,
            "reconnect": self.reconnect,
        }

    def as_reconnect(self) -> Consent:
        """This consent, re-authorising the user's live connection."""
        return dataclasses.replace(self, reconnect=True)

    # --- the consent record -----------------------------------------------------------

    def recorded(
        self,
        *,
        consent_id: str,
        connection_id: str,
        user_id: str,
        connector_id: str,
        recorded_at: datetime,
    ) -> Consent:
        """This consent as the record ``consent_id`` of ``connection_id``."""
        return dataclasses.replace(
            self,
            consent_id=consent_id,
            connection_id=connection_id,
            user_id=user_id,
            connector_id=connector_id,
            recorded_at=recorded_at,
        )

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> Consent:
        """The consent of a consent record's columns (as :meth:`record_fields` names them)."""
        return cls(
            consent_id=row["id"],
            connection_id=row["connection_id"],
            user_id=row["user_id"],
            connector_id=row["connector_id"],
            connector_name=row["connector_name"],
            granted=tuple(row["granted_categories"]),
            declined=tuple(row["declined_categories"]),
            purposes=dict(row["purposes"]),
            privacy_policy_url=row["privacy_policy_url"],
            terms_url=row["terms_url"],
            policy_digests=_optional_dict(row.get("policy_digests")),
            manifest_digest=row["manifest_digest"],
            platform_policy_version=row["platform_policy_version"],
            terms_version=row.get("terms_version"),
            scopes=tuple(row["scopes"]),
            client_ip=row.get("client_ip"),
            user_agent=row.get("user_agent"),
            consented_at=row["consented_at"],
            recorded_at=row["recorded_at"],
        )

    def record_fields(self) -> dict[str, Any]:
        """The consent record's columns, as the API shows a consent (``GET …/consents``)."""
        ids = self._ids()
        return {
            "id": ids.consent_id,
            "connection_id": ids.connection_id,
            "user_id": ids.user_id,
            "connector_id": ids.connector_id,
            "connector_name": self.connector_name,
            "granted_categories": list(self.granted),
            "declined_categories": list(self.declined),
            "purposes": dict(self.purposes),
            "privacy_policy_url": self.privacy_policy_url,
            "terms_url": self.terms_url,
            "policy_digests": _optional_dict(self.policy_digests),
            "manifest_digest": self.manifest_digest,
            "platform_policy_version": self.platform_policy_version,
            "terms_version": self.terms_version,
            "scopes": list(self.scopes),
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "consented_at": self.consented_at,
            "recorded_at": ids.recorded_at,
        }

    def _ids(self) -> _Ids:
        if (
            self.consent_id is None
            or self.connection_id is None
            or self.user_id is None
            or self.connector_id is None
            or self.recorded_at is None
        ):
            raise ValueError("this consent is not recorded yet")
        return _Ids(
            self.consent_id, self.connection_id, self.user_id, self.connector_id, self.recorded_at
        )

    # --- receipts -----------------------------------------------------------------------

    def receipt_body(self, *, issuer: str) -> dict[str, Any]:
        """The note receipt's body (``broker-consent-receipt/1``); ``issuer`` its key's name."""
        ids = self._ids()
        return {
            "receipt_version": RECEIPT_VERSION,
            "issuer": issuer,
            "consent_id": ids.consent_id,
            "user_id": ids.user_id,
            "connection_id": ids.connection_id,
            "connector": {"id": ids.connector_id, "name": self.connector_name},
            "granted_categories": list(self.granted),
            "declined_categories": list(self.declined),
            "purposes": dict(self.purposes),
            "privacy_policy_url": self.privacy_policy_url,
            "terms_url": self.terms_url,
            "policy_digests": _optional_dict(self.policy_digests),
            "manifest_digest": self.manifest_digest,
            "platform_policy_version": self.platform_policy_version,
            "scopes": list(self.scopes),
            "consented_at": self.consented_at.isoformat(),
            "recorded_at": ids.recorded_at.isoformat(),
        }

    def receipt_text(self, *, issuer: str) -> str:
        """The note receipt's signed text: its body as one line of canonical JSON."""
        return canonical(self.receipt_body(issuer=issuer)).decode("utf-8") + "\n"

    def facts(self) -> ConsentFacts:
        """The record as the JWS receipt (and the reports) read it."""
        ids = self._ids()
        return ConsentFacts(
            consent_id=ids.consent_id,
            connection_id=ids.connection_id,
            user_id=ids.user_id,
            connector_id=ids.connector_id,
            connector_name=self.connector_name,
            granted_categories=list(self.granted),
            declined_categories=list(self.declined),
            purposes=dict(self.purposes),
            privacy_policy_url=self.privacy_policy_url,
            terms_url=self.terms_url,
            manifest_digest=self.manifest_digest,
            platform_policy_version=self.platform_policy_version,
            scopes=list(self.scopes),
            consented_at=self.consented_at,
            recorded_at=ids.recorded_at,
            policy_digests=_optional_dict(self.policy_digests),
        )

    def receipt_sha256(self, issuer: ReceiptIssuer) -> str:
        """The SHA-256 of the JWS receipt's payload (it depends on the record and the
        issuer only, so it is known before anything is signed)."""
        return receipt_digest(build_receipt(self.facts(), issuer))

    # --- the audit log --------------------------------------------------------------------

    def audit_details(
        self,
        *,
        receipt_sha256: str,
        renewed: str | None = None,
        previous_consent_id: str | None = None,
    ) -> dict[str, Any]:
        """The ``details`` of this consent's ``consent.granted`` entry; ``renewed``
        (``reconsent`` or ``reconnect``) when it renews ``previous_consent_id``."""
        details: dict[str, Any] = {
            "declined": list(self.declined),
            "privacy_policy_url": self.privacy_policy_url,
            "terms_url": self.terms_url,
            "platform_policy_version": self.platform_policy_version,
            "manifest_digest": self.manifest_digest,
            "terms_version": self.terms_version,
            # the JWS receipt's payload digest: the receipt is provable by inclusion
            "receipt_sha256": receipt_sha256,
        }
        if renewed is not None:
            details["renewed"] = renewed
            details["previous_consent_id"] = previous_consent_id
        return details


def _optional_dict(value: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(value) if value is not None else None
