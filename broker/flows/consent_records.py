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

The consent itself is one type, :class:`broker.core.consent.Consent`: the attempt keeps
its :meth:`~broker.core.consent.Consent.to_dict`, the record its columns, the event its
:meth:`~broker.core.consent.Consent.audit_details`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlmodel import Session

from broker.core.connector import Connector
from broker.core.consent import Consent
from broker.core.errors import InvalidInput
from broker.core.manifest import Manifest
from broker.core.statuses import ConnectionStatus
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
) -> Consent:
    """The consent as shown and chosen now: ``granted`` categories, the rest declined,
    with the connector's current terms and the digests of the snapshots last shown."""
    manifest = connector.manifest
    chosen = set(granted)
    with Session(rt.engine) as session:  # the snapshots the consent page showed
        policy_digests = shown_digests(latest_checks(session, connector))
    return Consent(
        granted=tuple(d.category for d in manifest.data if d.category in chosen),
        declined=tuple(d.category for d in manifest.data if d.category not in chosen),
        purposes={d.category: d.purpose for d in manifest.data},
        privacy_policy_url=manifest.privacy_policy_url,
        terms_url=manifest.terms_url,
        manifest_digest=manifest.digest(),
        connector_name=manifest.name,
        scopes=tuple(manifest.oauth.scopes),
        platform_policy_version=rt.settings.policy_version,
        policy_digests=policy_digests,
        terms_version=current_terms_version(rt, connector.id, fresh=True),
        consented_at=now,
        client_ip=client_ip,
        user_agent=(user_agent or "")[:500] or None,
        return_url=return_url,
        settings=dict(settings) if settings else None,
        confirm=bool(confirm),
    )


def record_consent(
    rt: Runtime,
    session: Session,
    conn: Connection,
    consent: Consent,
    *,
    status: str,
    now: datetime,
    renewed: str | None = None,
) -> ConsentRecord:
    """Write the consent record of ``consent`` on ``conn`` and its ``consent.granted``
    event; ``conn`` becomes ``status`` (``renewed``: the connection existed before)."""
    recorded = consent.recorded(
        consent_id="cons_" + new_secret(nbytes=12),
        connection_id=conn.id,
        user_id=conn.user_id,
        connector_id=conn.connector_id,
        recorded_at=now,
    )
    record = ConsentRecord(**recorded.record_fields())
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
    details = recorded.audit_details(
        receipt_sha256=receipt_sha256(rt, recorded),
        renewed=renewed,
        previous_consent_id=previous,
    )
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
        categories=list(recorded.granted),
        legal_basis="consent",
        outcome=status,
        details=details,
    )
    return record
