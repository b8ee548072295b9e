"""Connect: connect session -> consent page -> approve (PKCE + state) -> provider.

The provider's answer comes back to ``broker.flows.callback``. Approving
records the user's choice and a ``pending`` connection; nothing usable exists
until the callback has exchanged the code. When the user already has a live
connection of the connector (same settings), approving re-authorises that one
instead (the attempt is a *reconnect*: same id, new tokens and consent record at
the callback), unless the session was created with ``reconnect: false``.

Approving also binds the attempt to the approving browser (RFC 9700 §4.7): a
random nonce goes into that browser's cookie and only its digest onto the
attempt, so an authorize URL handed to someone else cannot link their
third-party account to this platform account. Each attempt uses the
connector's own redirect URI (RFC 9700 §4.4.2, mix-up) unless its manifest or
the operator keeps it on the shared one.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlmodel import Session, col, update

from broker.core import routes
from broker.core.catalog import Heading
from broker.core.connector import Connector
from broker.core.errors import (
    ConfigurationError,
    InvalidInput,
    ReturnUrlNotAllowed,
    SessionInvalid,
)
from broker.core.manifest import resolve_secret
from broker.core.oauth import (
    ClientCredentials,
    Pkce,
    authorization_url,
    new_state,
)
from broker.core.tickets import TicketRefusal
from broker.core.tokens import digest, new_secret
from broker.core.urls import is_allowed_return_url
from broker.flows.connection_setup import (
    encode_settings,
    provider_oauth,
    settings_in_token,
)
from broker.flows.consent_records import consent_terms, granted_categories
from broker.flows.policy_checks import PolicyChecks, ensure_checked
from broker.flows.preferences import covered_by, objectable, read_preferences
from broker.flows.tenant_credentials import (
    tenant_client_credentials,
    tenant_has_credentials,
    validate_tenant,
)
from broker.runtime import Runtime
from broker.store.connections import live_connection
from broker.store.db import session_scope
from broker.store.models import (
    Connection,
    ConnectSession,
    OAuthAttempt,
)
from broker.store.tickets import claim_ticket, find_ticket

__all__ = [
    "Approval",
    "CategoryChoice",
    "ConsentView",
    "IssuedSession",
    "approve",
    "cancel",
    "category_choices",
    "client_credentials",
    "connection_credentials",
    "consent_view",
    "create_connect_session",
    "credentials_problem",
    "offered_connectors",
    "redirect_uri_for",
    "safe_return",
    "validate_display_name",
    "validate_user_id",
    "with_query",
]

log = logging.getLogger("broker.connect")

_USER_ID = re.compile(r"^[A-Za-z0-9._:@+-]{1,200}$")
# Control, format (bidi overrides, zero-width), surrogate, private-use and unassigned
# characters, and line/paragraph separators: nothing that could hide or reorder text.
_BAD_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True)
class IssuedSession:
    id: str
    token: str
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class Approval:
    """The approved attempt: where to send the browser, and the nonce its cookie keeps.

    Only the nonce's SHA-256 is stored; the callback refuses an answer that does not
    come back with it."""

    authorize_url: str
    browser_nonce: str

    def __repr__(self) -> str:
        return "Approval(authorize_url=<redacted>, browser_nonce=<redacted>)"


@dataclass(frozen=True)
class CategoryChoice:
    key: str
    title: str
    description: str
    sensitivity: str
    fields: tuple[str, ...]
    purpose: str
    required: bool
    use: str = ""
    objected: bool = False  # the user objects to this use: nothing is sent for it


@dataclass(frozen=True)
class ConsentView:
    session_id: str
    user_id: str
    connector: Connector
    groups: list[tuple[Heading, list[CategoryChoice]]]
    policy_version: str
    policy_url: str | None
    return_url: str | None
    expires_at: datetime
    settings: dict[str, str] = field(default_factory=dict)
    display_name: str | None = None
    platform_name: str | None = None
    confirm: bool = False
    # Categories for a use the user may object to (marketing): shown apart, always a
    # choice (an objection wins over ``required``), unticked to start.
    marketing: list[CategoryChoice] = field(default_factory=list)
    # The third party's policy and terms pages: when each was last checked, and
    # whether it could be retrieved (broker.flows.policy_snapshots).
    policy_checks: PolicyChecks | None = None

    @property
    def account_name(self) -> str:
        """How the page names the platform account being connected."""
        return self.display_name or self.user_id


def validate_user_id(user_id: Any) -> str:
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise InvalidInput(
            "user_id must be 1-200 characters of letters, digits and . _ : @ + -",
            details={"field": "user_id"},
        )
    return user_id


def validate_display_name(name: Any) -> str | None:
    """1-200 characters, not only spaces, no control or invisible formatting characters."""
    if name is None:
        return None
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 200
        or not name.strip()
        or any(unicodedata.category(ch) in _BAD_NAME_CATEGORIES for ch in name)
    ):
        raise InvalidInput(
            "display_name must be 1-200 printable characters, without control or "
            "formatting characters",
            details={"field": "display_name"},
        )
    return name


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def create_connect_session(
    rt: Runtime,
    *,
    user_id: str,
    connector_id: str | None = None,
    return_url: str | None = None,
    created_by: str | None = None,
    kind: str = "connect",
    settings: Mapping[str, str] | None = None,
    display_name: str | None = None,
    confirm: bool = False,
    reconnect: bool = True,
    tenant: str | None = None,
) -> IssuedSession:
    validate_user_id(user_id)
    validate_display_name(display_name)
    if tenant is not None:
        _check_tenant(rt, connector_id, tenant)
    values: dict[str, str] = {}
    if connector_id is not None:
        values = rt.registry.get(connector_id).manifest.validate_settings(settings)
    elif settings:
        raise InvalidInput(
            "settings need a connector: name the connector they are for",
            details={"field": "settings"},
        )
    if return_url is not None and not is_allowed_return_url(
        return_url, rt.settings.return_url_prefixes
    ):
        raise ReturnUrlNotAllowed(
            "return_url is not on BROKER_RETURN_URL_ALLOWLIST", details={"field": "return_url"}
        )
    token = new_secret("cs_")
    if values:
        token = f"{token}.{encode_settings(values)}"
    now = rt.clock()
    row = ConnectSession(
        id="sess_" + new_secret(nbytes=9),
        token_hash=digest(token),
        kind=kind,
        user_id=user_id,
        connector_id=connector_id,
        return_url=return_url,
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(seconds=rt.settings.connect_session_ttl),
        display_name=display_name,
        confirm=bool(confirm),
        reconnect=bool(reconnect),
        tenant=tenant,
    )
    with session_scope(rt.engine) as session:
        session.add(row)
    base = rt.settings.resolved_base_url
    path = routes.CONNECT_TO.format(connector_id=connector_id) if connector_id else routes.CONNECT
    if kind == "user":
        path = routes.ME
    return IssuedSession(
        id=row.id,
        token=token,
        url=f"{base}{path}?{urlencode({'session': token})}",
        expires_at=row.expires_at,
    )


def _check_tenant(rt: Runtime, connector_id: str | None, tenant: str) -> None:
    """A session naming a tenant names its connector, for which the tenant has
    registered OAuth credentials (``POST /v1/connectors/{id}/credentials``)."""
    validate_tenant(tenant)
    if connector_id is None:
        raise InvalidInput(
            "tenant needs a connector: name the connector whose credentials it has",
            details={"field": "tenant"},
        )
    if not tenant_has_credentials(rt, connector_id, tenant):
        raise InvalidInput(
            f"tenant {tenant!r} has no OAuth credentials for {connector_id!r}",
            details={"field": "tenant", "tenant": tenant, "connector_id": connector_id},
        )


_SESSION_REFUSED = {
    TicketRefusal.UNKNOWN: "this session link is not valid",
    TicketRefusal.USED: "this session link has already been used",
    TicketRefusal.EXPIRED: "this session link has expired; ask the application for a new one",
}


def _session_ticket(
    session: Session, token: str | None, *, kind: str, now: datetime, claim: bool
) -> ConnectSession:
    """The live connect session ``token`` opens, claimed (spent) when ``claim``."""
    if not token:
        raise SessionInvalid("this link has no session; ask the application for a new one")
    use = claim_ticket if claim else find_ticket
    row = use(session, ConnectSession, digest=digest(token), now=now, match={"kind": kind})
    if isinstance(row, TicketRefusal):
        raise SessionInvalid(_SESSION_REFUSED[row])
    return row


def _live_session(session: Session, rt: Runtime, token: str | None, *, kind: str) -> ConnectSession:
    return _session_ticket(session, token, kind=kind, now=rt.clock(), claim=False)


def _check_connector(row: ConnectSession, connector_id: str) -> None:
    if row.connector_id is not None and row.connector_id != connector_id:
        raise SessionInvalid("this session link is for another integration")


def category_choices(
    rt: Runtime, connector: Connector, user_id: str
) -> tuple[list[tuple[Heading, list[CategoryChoice]]], list[CategoryChoice]]:
    """The connector's categories as the consent page lists them, under the catalog's
    headings, and apart those for a use the user may object to (marketing)."""
    groups: list[tuple[Heading, list[CategoryChoice]]] = []
    marketing: list[CategoryChoice] = []
    declared = {d.category: d for d in connector.manifest.data}
    objections = read_preferences(rt, user_id).object_to
    for heading, categories in rt.catalog.by_heading():
        choices = [
            CategoryChoice(
                key=c.key,
                title=c.title,
                description=c.description,
                sensitivity=c.sensitivity,
                fields=c.fields,
                purpose=declared[c.key].purpose,
                required=declared[c.key].required,
                use=declared[c.key].use,
                objected=covered_by(declared[c.key].use, objections) is not None,
            )
            for c in categories
            if c.key in declared
        ]
        marketing += [c for c in choices if covered_by(c.use, objectable(rt))]
        choices = [c for c in choices if c not in marketing]
        if choices:
            groups.append((heading, choices))
    return groups, marketing


def consent_view(rt: Runtime, *, token: str | None, connector_id: str) -> ConsentView:
    connector = rt.registry.get(connector_id)
    with session_scope(rt.engine) as session:
        row = _live_session(session, rt, token, kind="connect")
        _check_connector(row, connector_id)
    # an unconfigured connector (or tenant) is not offered for consent
    connection_credentials(rt, connector, row.tenant)
    policy_checks = ensure_checked(rt, connector)  # a snapshot of what the links show
    groups, marketing = category_choices(rt, connector, row.user_id)
    return ConsentView(
        session_id=row.id,
        user_id=row.user_id,
        connector=connector,
        groups=groups,
        policy_version=rt.settings.policy_version,
        policy_url=rt.settings.policy_url,
        return_url=row.return_url,
        expires_at=row.expires_at,
        settings=connector.manifest.validate_settings(settings_in_token(token)),
        display_name=row.display_name,
        platform_name=rt.settings.platform_name,
        confirm=row.confirm,
        marketing=marketing,
        policy_checks=policy_checks,
    )


def _resolve_credentials(connector: Connector) -> ClientCredentials:
    oauth = connector.manifest.oauth
    return ClientCredentials(
        client_id=resolve_secret(oauth.client_id, connector_id=connector.id, field="client_id"),
        client_secret=resolve_secret(
            oauth.client_secret, connector_id=connector.id, field="client_secret"
        ),
    )


def credentials_problem(connector: Connector) -> str | None:
    """For operators (log, CLI): why the connector's client credentials do not resolve."""
    try:
        _resolve_credentials(connector)
    except ConfigurationError as exc:
        return exc.message
    return None


def client_credentials(connector: Connector) -> ClientCredentials:
    """The connector's OAuth client credentials, from the environment.

    When they are not set, the operator's message (naming the environment variable)
    goes to the log; the error raised, which pages and the API show, names none."""
    try:
        return _resolve_credentials(connector)
    except ConfigurationError as exc:
        log.error("%s", exc.message)
        raise ConfigurationError(
            f"{connector.manifest.name} is not set up on this platform yet: its OAuth client "
            "credentials are missing. The operator can find the details in the broker's log.",
            details={"connector": connector.id},
        ) from None


def connection_credentials(
    rt: Runtime, connector: Connector, tenant: str | None
) -> ClientCredentials:
    """The OAuth client a connection of ``tenant`` uses: that tenant's registered
    credentials, or without a tenant the manifest's environment references."""
    if tenant is None:
        return client_credentials(connector)
    return tenant_client_credentials(rt, connector, tenant)


def offered_connectors(rt: Runtime) -> list[Connector]:
    """The connectors a user may pick: those whose client credentials are set."""
    return [c for c in rt.registry.all() if credentials_problem(c) is None]


def redirect_uri_for(rt: Runtime, connector: Connector) -> str:
    """The redirect URI a new attempt uses: the connector's own callback, unless its
    manifest (``[oauth] redirect = "shared"``) or ``BROKER_SHARED_CALLBACK_CONNECTORS``
    keeps it on the shared one registered before per-connector callbacks existed."""
    if (
        connector.manifest.oauth.redirect == "shared"
        or connector.id in rt.settings.shared_callback_ids
    ):
        return rt.settings.callback_url
    return rt.settings.connector_callback_url(connector.id)


def approve(
    rt: Runtime,
    *,
    token: str | None,
    connector_id: str,
    optional_granted: Iterable[str],
    client_ip: str | None,
    user_agent: str | None,
) -> Approval:
    """Record the user's choice; return the provider's authorize URL and the nonce the
    approving browser must keep in its cookie (only its digest is stored)."""
    connector = rt.registry.get(connector_id)
    manifest = connector.manifest
    with session_scope(rt.engine) as session:  # the session first, before reading its settings
        live = _live_session(session, rt, token, kind="connect")
        _check_connector(live, connector_id)
    granted = granted_categories(rt, manifest, live.user_id, optional_granted)
    creds = connection_credentials(rt, connector, live.tenant)
    settings = manifest.validate_settings(settings_in_token(token))
    oauth = provider_oauth(connector, settings, creds)
    now = rt.clock()
    pkce = Pkce.generate()
    state = new_state()
    nonce = new_secret(nbytes=32)
    redirect_uri = redirect_uri_for(rt, connector)
    consent = consent_terms(
        rt,
        connector,
        granted=granted,
        now=now,
        client_ip=client_ip,
        user_agent=user_agent,
        settings=settings,
        return_url=live.return_url,
        confirm=live.confirm,
    )
    with session_scope(rt.engine) as session:
        # spent here: of two concurrent approvals one wins (broker.store.tickets)
        row = _session_ticket(session, token, kind="connect", now=now, claim=True)
        _check_connector(row, connector_id)  # refused: rolled back, the link unspent
        # Attempts nobody answered in time are spent too: their verifiers go.
        session.exec(
            update(OAuthAttempt)
            .where(
                col(OAuthAttempt.expires_at) <= now,
                col(OAuthAttempt.code_verifier).is_not(None),
            )
            .values(code_verifier=None)
        )
        existing = (
            live_connection(
                session, user_id=row.user_id, connector_id=connector_id, settings=settings
            )
            if row.reconnect
            else None
        )
        if existing is not None and existing.tenant != row.tenant:
            existing = None  # another tenant's client: a connection of its own
        if existing is not None:  # re-authorise it: same id, new tokens and consent
            connection_id = existing.id
            consent = consent.as_reconnect()
        else:
            connection_id = "conn_" + new_secret(nbytes=12)
            session.add(
                Connection(
                    id=connection_id,
                    user_id=row.user_id,
                    connector_id=connector_id,
                    status="pending",
                    created_at=now,
                    updated_at=now,
                    settings=settings or None,
                    tenant=row.tenant,
                )
            )
            session.flush()
        session.add(
            OAuthAttempt(
                id="att_" + new_secret(nbytes=9),
                state_hash=digest(state),
                connection_id=connection_id,
                session_id=row.id,
                code_verifier=rt.vault.seal(
                    pkce.verifier, connection_id=connection_id, kind="pkce_verifier"
                ),
                redirect_uri=redirect_uri,
                browser_hash=digest(nonce),
                consent=consent.to_dict(),
                created_at=now,
                expires_at=now + timedelta(seconds=rt.settings.oauth_state_ttl),
            )
        )
    url = authorization_url(
        oauth,
        client_id=creds.client_id,
        redirect_uri=redirect_uri,
        state=state,
        pkce=pkce,
        extra=connector.authorize_params(),
    )
    return Approval(authorize_url=url, browser_nonce=nonce)


def cancel(rt: Runtime, *, token: str | None, connector_id: str) -> str | None:
    """The user said no on our page: nothing is created; the link is spent."""
    with session_scope(rt.engine) as session:
        row = _session_ticket(session, token, kind="connect", now=rt.clock(), claim=True)
        _check_connector(row, connector_id)
        return_url = row.return_url
    return safe_return(rt, return_url, {"status": "cancelled", "connector": connector_id})


def safe_return(rt: Runtime, url: str | None, params: dict[str, str]) -> str | None:
    if url and is_allowed_return_url(url, rt.settings.return_url_prefixes):
        return with_query(url, params)
    return None
