"""The consent a user gives, as kept on an attempt and then as a consent record.

One builder and one writer serve every way a consent is given:

* :func:`consent_terms`: what the user was shown and chose, as the connect flow keeps it
  on the OAuth attempt until the callback (and as a re-consent on ``/me`` writes it at
  once): granted and declined categories, purposes, policy URLs and the digests of the
  snapshots shown, scopes, the terms version agreed to;
* :func:`record_consent`: the consent record for a connection, its ``consent.granted``
  event, and the connection's new status, in the caller's transaction. A new connection
  gets its first record; an existing one (a re-consent after a change of terms, or a
  reconnect that re-authorised it) gets a new record on the **same** connection, and the
  event says which (``details.renewed``: ``reconsent`` or ``reconnect``), so webhooks
  announce no new connection (:func:`broker.core.webhooks.webhook_events`).

:func:`live_connection` finds the connection a connect session re-authorises instead of
making a second one (issue 12).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from broker.core.connector import Connector
from broker.core.errors import InvalidInput
from broker.core.manifest import Manifest
from broker.core.statuses import LIVE_CONNECTION_STATUSES, ConnectionStatus
from broker.core.tokens import new_secret
from broker.flows.policy_snapshots import latest_checks, shown_digests
from broker.flows.preferences import covered_by, objectable, read_preferences
from broker.flows.receipts import receipt_sha256
from broker.flows.terms import current_terms_version
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.models import Connection, ConsentRecord

__all__ = [
    "RENEWALS",
    "consent_terms",
    "granted_categories",
    "live_connection",
    "record_consent",
]

RENEWALS = ("reconsent", "reconnect")


def granted_categories(
    rt: Runtime, manifest: Manifest, user_id: str, optional_granted: Iterable[str]
) -> list[str]:
    """What the user grants: every required category and the optional ones ticked.

    A use the user may object to (marketing) is always a choice, even where the
    manifest says required; one they object to is declined whatever the form says. A
    form naming a category that is neither optional nor such a use is refused."""
    chosen = set(optional_granted)
    roots = objectable(rt)
    objections = read_preferences(rt, user_id).object_to
    marketing = {d.category for d in manifest.data if covered_by(d.use, roots)}
    chosen -= {d.category for d in manifest.data if covered_by(d.use, objections)}
    unknown = chosen - set(manifest.optional_categories) - marketing
    if unknown:
        raise InvalidInput(
            "the form named categories that are not optional for this integration",
            details={"categories": sorted(unknown)},
        )
    return [
        d.category
        for d in manifest.data
        if (d.required and d.category not in marketing) or d.category in chosen
    ]


def consent_terms(
    rt: Runtime,
    connector: Connector,
    *,
    granted: Iterable[str],
    now: datetime,
    client_ip: str | None,
    user_agent: str | None,
    settings: Mapping[str, str] | None = None,
    return_url: str | None = None,
    confirm: bool = False,
) -> dict[str, Any]:
    """The consent as shown and chosen now: ``granted`` categories, the rest declined,
    with the connector's current terms and the digests of the snapshots last shown."""
    manifest = connector.manifest
    chosen = set(granted)
    with Session(rt.engine) as session:  # the snapshots the consent page showed
        policy_digests = shown_digests(latest_checks(session, connector))
    return {
        "granted": [d.category for d in manifest.data if d.category in chosen],
        "declined": [d.category for d in manifest.data if d.category not in chosen],
        "purposes": {d.category: d.purpose for d in manifest.data},
        "privacy_policy_url": manifest.privacy_policy_url,
        "terms_url": manifest.terms_url,
        "manifest_digest": manifest.digest(),
        "connector_name": manifest.name,
        "scopes": list(manifest.oauth.scopes),
        "platform_policy_version": rt.settings.policy_version,
        "policy_digests": policy_digests,
        "terms_version": current_terms_version(rt, connector.id, fresh=True),
        "consented_at": now.isoformat(),
        "client_ip": client_ip,
        "user_agent": (user_agent or "")[:500] or None,
        "return_url": return_url,
        "settings": dict(settings) if settings else None,
        "confirm": bool(confirm),
    }


def live_connection(
    session: Session, *, user_id: str, connector_id: str, settings: Mapping[str, str] | None
) -> Connection | None:
    """The user's live connection of the connector with the same settings (the same
    account at the third party), the newest if there are several."""
    rows = session.exec(
        select(Connection)
        .where(
            Connection.user_id == user_id,
            Connection.connector_id == connector_id,
            col(Connection.status).in_(LIVE_CONNECTION_STATUSES),
        )
        .order_by(col(Connection.created_at).desc())
    ).all()
    wanted = dict(settings or {})
    return next((c for c in rows if dict(c.settings or {}) == wanted), None)


def record_consent(
    rt: Runtime,
    session: Session,
    conn: Connection,
    consent: Mapping[str, Any],
    *,
    status: str,
    now: datetime,
    renewed: str | None = None,
) -> ConsentRecord:
    """Write the consent record of ``consent`` on ``conn`` and its ``consent.granted``
    event; ``conn`` becomes ``status`` (``renewed``: the connection existed before)."""
    record = ConsentRecord(
        id="cons_" + new_secret(nbytes=12),
        connection_id=conn.id,
        user_id=conn.user_id,
        connector_id=conn.connector_id,
        connector_name=consent["connector_name"],
        granted_categories=list(consent["granted"]),
        declined_categories=list(consent["declined"]),
        purposes=dict(consent["purposes"]),
        privacy_policy_url=consent["privacy_policy_url"],
        terms_url=consent["terms_url"],
        manifest_digest=consent["manifest_digest"],
        platform_policy_version=consent["platform_policy_version"],
        policy_digests=consent.get("policy_digests"),  # older attempts: none
        terms_version=consent.get("terms_version"),
        scopes=list(consent["scopes"]),
        client_ip=consent.get("client_ip"),
        user_agent=consent.get("user_agent"),
        consented_at=datetime.fromisoformat(consent["consented_at"]),
        recorded_at=now,
    )
    session.add(record)
    session.flush()  # the record exists before the connection names it
    previous = conn.consent_id
    conn.status = status
    if status == ConnectionStatus.ACTIVE and conn.activated_at is None:
        conn.activated_at = now
    conn.updated_at = now
    conn.last_error = None
    conn.consent_id = record.id
    session.add(conn)
    details: dict[str, Any] = {
        "declined": list(record.declined_categories),
        "privacy_policy_url": record.privacy_policy_url,
        "terms_url": record.terms_url,
        "platform_policy_version": record.platform_policy_version,
        "manifest_digest": record.manifest_digest,
        "terms_version": record.terms_version,
        # the JWS receipt's payload digest: the receipt is provable by inclusion
        "receipt_sha256": receipt_sha256(rt, record),
    }
    if renewed is not None:
        details["renewed"] = renewed
        details["previous_consent_id"] = previous
    append_event(
        session,
        head_file=rt.settings.audit_head_file,
        time=now,
        event="consent.granted",
        actor=f"user:{conn.user_id}",
        user_id=conn.user_id,
        connector_id=conn.connector_id,
        connection_id=conn.id,
        consent_id=record.id,
        categories=list(record.granted_categories),
        legal_basis="consent",
        outcome=status,
        details=details,
    )
    return record
