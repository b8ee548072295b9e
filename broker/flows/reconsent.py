"""Agreeing again after a change of terms, from ``/me`` (issue 11).

A connection paused by a significant change of its connector's terms
(:mod:`broker.flows.terms`) waits in ``reconsent_required``. The re-consent page
(:func:`reconsent_view`) shows what changed since the user agreed (their notice,
:mod:`broker.flows.notices`) and the full list of data, each category marked *new*,
*changed* or *unchanged* against the terms version agreed to; the user's earlier
optional choices start ticked only where that category did not change.

:func:`agree_again` writes a new consent record on the **same** connection
(:func:`broker.flows.consent_records.record_consent`, ``consent.granted`` with
``details.renewed = "reconsent"`` and the new terms version) and makes it ``active``
again, without an OAuth round trip, when the scopes are those agreed to. When they
changed (or the connection was paused for another reason: the provider refused its
tokens) the user must authorise again at the third party: a connect session is
issued for the connector and the user is sent to the consent page, which re-authorises
the same connection (a reconnect). :func:`decline` disconnects it (the revoke flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlmodel import Session

from broker.core.catalog import Heading
from broker.core.connector import Connector
from broker.core.errors import Conflict, InvariantBroken
from broker.core.statuses import ConnectionStatus
from broker.flows.activity import owned_connection
from broker.flows.connect import create_connect_session
from broker.flows.consent_page import CategoryChoice, category_choices
from broker.flows.consent_records import consent_terms, granted_categories, record_consent
from broker.flows.notices import Notice, paused_for_terms, pending_notices
from broker.flows.policy_checks import PolicyChecks, ensure_checked
from broker.flows.revoke import revoke_connection
from broker.runtime import Runtime
from broker.store.connections import get_connection
from broker.store.db import session_scope
from broker.store.models import Connection, ConsentRecord
from broker.store.policy_models import TermsVersion
from broker.store.terms import claim_reconsent

__all__ = [
    "ReconsentCategory",
    "ReconsentOutcome",
    "ReconsentView",
    "agree_again",
    "decline",
    "needs_authorisation",
    "reconsent_view",
]

Mark = Literal["new", "changed", "unchanged"]


@dataclass(frozen=True)
class ReconsentCategory:
    """A category on the re-consent page: how it compares with what was agreed, and
    whether its box starts ticked."""

    choice: CategoryChoice
    mark: Mark
    checked: bool
    was: dict[str, Any] | None = None  # the declaration agreed to, when it changed


@dataclass(frozen=True)
class ReconsentView:
    conn: Connection
    consent: ConsentRecord | None
    connector: Connector
    notice: Notice | None
    groups: list[tuple[Heading, list[ReconsentCategory]]]
    marketing: list[ReconsentCategory]
    authorise: bool  # approving goes through the third party's sign-in again
    policy_checks: PolicyChecks
    policy_version: str
    policy_url: str | None

    @property
    def differences(self) -> list[ReconsentCategory]:
        every = [c for _, cats in self.groups for c in cats] + self.marketing
        return [c for c in every if c.mark != "unchanged"]


@dataclass(frozen=True)
class ReconsentOutcome:
    connection_id: str
    status: str
    #: where to send the browser to authorise again (``None``: agreed, done)
    authorise_url: str | None = None


def needs_authorisation(
    conn: Connection, consent: ConsentRecord | None, connector: Connector
) -> bool:
    """Whether agreeing again needs the third party's sign-in (new tokens)."""
    if not paused_for_terms(conn) or consent is None:
        return True
    return set(consent.scopes) != set(connector.manifest.oauth.scopes)


def _agreed_data(rt: Runtime, consent: ConsentRecord | None) -> dict[str, Any] | None:
    """The data declarations of the terms version the consent agreed to, if known."""
    if consent is None or consent.terms_version is None:
        return None
    with Session(rt.engine) as session:
        row = session.get(TermsVersion, consent.terms_version)
    return dict(row.terms["data"]) if row is not None else None


def _mark(choice: CategoryChoice, agreed: dict[str, Any] | None) -> tuple[Mark, dict | None]:
    if agreed is None or choice.key not in agreed:
        return ("new" if agreed is not None else "changed"), None
    was = agreed[choice.key]
    now = {"purpose": choice.purpose, "required": choice.required, "use": choice.use}
    if {k: was.get(k) for k in now} == now:
        return "unchanged", None
    return "changed", was


def _categories(
    choices: list[CategoryChoice], agreed: dict[str, Any] | None, granted: set[str]
) -> list[ReconsentCategory]:
    out = []
    for choice in choices:
        mark, was = _mark(choice, agreed)
        checked = mark == "unchanged" and choice.key in granted and not choice.objected
        out.append(ReconsentCategory(choice, mark, checked, was))
    return out


def _paused(
    rt: Runtime, *, user_id: str, connection_id: str
) -> tuple[Connection, ConsentRecord | None]:
    """The user's own connection and its consent, if it waits for their agreement."""
    conn, consent = owned_connection(rt, user_id=user_id, connection_id=connection_id)
    if conn.status != ConnectionStatus.RECONSENT_REQUIRED:
        raise Conflict(
            "this connection does not need your agreement",
            details={"connection_id": conn.id, "status": conn.status},
        )
    return conn, consent


def reconsent_view(rt: Runtime, *, user_id: str, connection_id: str) -> ReconsentView:
    """The re-consent page of the user's own paused connection."""
    conn, consent = _paused(rt, user_id=user_id, connection_id=connection_id)
    connector = rt.registry.get(conn.connector_id)
    checks = ensure_checked(rt, connector)
    agreed = _agreed_data(rt, consent)
    granted = set(consent.granted_categories) if consent is not None else set()
    groups, marketing = category_choices(rt, connector, user_id)
    notices = pending_notices(rt, user_id, connection_ids=[conn.id])
    return ReconsentView(
        conn=conn,
        consent=consent,
        connector=connector,
        notice=notices[0] if notices else None,
        groups=[(h, _categories(cs, agreed, granted)) for h, cs in groups],
        marketing=_categories(marketing, agreed, granted),
        authorise=needs_authorisation(conn, consent, connector),
        policy_checks=checks,
        policy_version=rt.settings.policy_version,
        policy_url=rt.settings.policy_url,
    )


def agree_again(
    rt: Runtime,
    *,
    user_id: str,
    connection_id: str,
    optional_granted: list[str],
    client_ip: str | None,
    user_agent: str | None,
) -> ReconsentOutcome:
    """Agree to the connector's current terms on the same connection (see the module
    docstring); ``optional_granted``: the optional categories ticked."""
    conn, consent = _paused(rt, user_id=user_id, connection_id=connection_id)
    connector = rt.registry.get(conn.connector_id)
    granted = granted_categories(rt, connector.manifest, user_id, optional_granted)
    if needs_authorisation(conn, consent, connector):
        issued = create_connect_session(
            rt,
            user_id=user_id,
            connector_id=conn.connector_id,
            settings=conn.settings,
            created_by=f"user:{user_id}",
            reconnect=True,
            tenant=conn.tenant,  # the same OAuth client authorises it again
        )
        return ReconsentOutcome(conn.id, conn.status, authorise_url=issued.url)
    now = rt.clock()
    terms = consent_terms(
        rt,
        connector,
        granted=granted,
        now=now,
        client_ip=client_ip,
        user_agent=user_agent,
        settings=conn.settings,
    )
    with session_scope(rt.engine) as session:
        # one answer only, and only while still paused for terms
        if not claim_reconsent(session, connection_id=conn.id, now=now):
            raise Conflict(
                "this connection was answered for already; reload your integrations page",
                details={"connection_id": conn.id},
            )
        row = get_connection(session, connection_id=conn.id)
        if row is None:
            raise InvariantBroken(
                "the connection just claimed is gone", details={"connection_id": conn.id}
            )
        record_consent(
            rt, session, row, terms, status=ConnectionStatus.ACTIVE, now=now, renewed="reconsent"
        )
    return ReconsentOutcome(conn.id, ConnectionStatus.ACTIVE)


def decline(rt: Runtime, *, user_id: str, connection_id: str) -> dict[str, Any]:
    """The user does not agree to the new terms: the connection is disconnected."""
    owned_connection(rt, user_id=user_id, connection_id=connection_id)  # only your own
    return revoke_connection(rt, connection_id, actor=f"user:{user_id}")
