"""Connect: connect session -> consent page -> approve (PKCE + state) -> provider.

The provider's answer comes back to ``broker.flows.callback``. Approving
records the user's choice and a ``pending`` connection; nothing usable exists
until the callback has exchanged the code.

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

from sqlmodel import Session, col, select, update

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
from broker.core.tokens import digest, new_secret
from broker.core.urls import is_allowed_return_url
from broker.flows.connection_setup import (
    encode_settings,
    provider_oauth,
    settings_in_token,
)
from broker.flows.policy_checks import PolicyChecks, ensure_checked
from broker.flows.policy_snapshots import latest_checks, shown_digests
from broker.flows.preferences import covered_by, objectable, read_preferences
from broker.flows.terms import current_terms_version
from broker.runtime import Runtime
from broker.store.db import session_scope
from broker.store.models import (
    Connection,
    ConnectSession,
    OAuthAttempt,
)

__all__ = [
    "Approval",
    "CategoryChoice",
    "ConsentView",
    "IssuedSession",
    "approve",
    "cancel",
    "client_credentials",
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
) -> IssuedSession:
    validate_user_id(user_id)
    validate_display_name(display_name)
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
    )
    with session_scope(rt.engine) as session:
        session.add(row)
    base = rt.settings.resolved_base_url
    path = f"/connect/{connector_id}" if connector_id else "/connect"
    if kind == "user":
        path = "/me"
    return IssuedSession(
        id=row.id,
        token=token,
        url=f"{base}{path}?{urlencode({'session': token})}",
        expires_at=row.expires_at,
    )


def _live_session(session: Session, rt: Runtime, token: str | None, *, kind: str) -> ConnectSession:
    if not token:
        raise SessionInvalid("this link has no session; ask the application for a new one")
    row = session.exec(
        select(ConnectSession).where(ConnectSession.token_hash == digest(token))
    ).first()
    if row is None or row.kind != kind:
        raise SessionInvalid("this session link is not valid")
    if row.used_at is not None:
        raise SessionInvalid("this session link has already been used")
    if row.expires_at <= rt.clock():
        raise SessionInvalid("this session link has expired; ask the application for a new one")
    return row


def _check_connector(row: ConnectSession, connector_id: str) -> None:
    if row.connector_id is not None and row.connector_id != connector_id:
        raise SessionInvalid("this session link is for another integration")


def consent_view(rt: Runtime, *, token: str | None, connector_id: str) -> ConsentView:
    connector = rt.registry.get(connector_id)
    with session_scope(rt.engine) as session:
        row = _live_session(session, rt, token, kind="connect")
        _check_connector(row, connector_id)
    client_credentials(connector)  # an unconfigured connector is not offered for consent
    policy_checks = ensure_checked(rt, connector)  # a snapshot of what the links show
    groups: list[tuple[Heading, list[CategoryChoice]]] = []
    marketing: list[CategoryChoice] = []
    declared = {d.category: d for d in connector.manifest.data}
    objections = read_preferences(rt, row.user_id).object_to
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


def _consume(session: Session, row: ConnectSession, now: datetime) -> None:
    """Mark the session used; the WHERE makes two concurrent approvals impossible."""
    result = session.exec(
        update(ConnectSession)
        .where(col(ConnectSession.id) == row.id, col(ConnectSession.used_at).is_(None))
        .values(used_at=now)
    )
    if result.rowcount != 1:
        raise SessionInvalid("this session link has already been used")


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
    chosen = set(optional_granted)
    # A use the user may object to is always a choice, even where the manifest says
    # required; one they object to is declined whatever the form says.
    roots = objectable(rt)
    objections = read_preferences(rt, live.user_id).object_to
    marketing = {d.category for d in manifest.data if covered_by(d.use, roots)}
    chosen -= {d.category for d in manifest.data if covered_by(d.use, objections)}
    unknown = chosen - set(manifest.optional_categories) - marketing
    if unknown:
        raise InvalidInput(
            "the form named categories that are not optional for this integration",
            details={"categories": sorted(unknown)},
        )
    creds = client_credentials(connector)
    settings = manifest.validate_settings(settings_in_token(token))
    oauth = provider_oauth(connector, settings, creds)
    granted = [
        d.category
        for d in manifest.data
        if (d.required and d.category not in marketing) or d.category in chosen
    ]
    declined = [d.category for d in manifest.data if d.category not in granted]
    now = rt.clock()
    pkce = Pkce.generate()
    state = new_state()
    nonce = new_secret(nbytes=32)
    redirect_uri = redirect_uri_for(rt, connector)
    connection_id = "conn_" + new_secret(nbytes=12)
    with session_scope(rt.engine) as session:  # the snapshots the consent page showed
        policy_digests = shown_digests(latest_checks(session, connector))
    terms_version = current_terms_version(rt, connector_id, fresh=True)
    with session_scope(rt.engine) as session:
        row = _live_session(session, rt, token, kind="connect")
        _check_connector(row, connector_id)
        _consume(session, row, now)
        # Attempts nobody answered in time are spent too: their verifiers go.
        session.exec(
            update(OAuthAttempt)
            .where(
                col(OAuthAttempt.expires_at) <= now,
                col(OAuthAttempt.code_verifier).is_not(None),
            )
            .values(code_verifier=None)
        )
        session.add(
            Connection(
                id=connection_id,
                user_id=row.user_id,
                connector_id=connector_id,
                status="pending",
                created_at=now,
                updated_at=now,
                settings=settings or None,
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
                consent={
                    "granted": granted,
                    "declined": declined,
                    "purposes": {d.category: d.purpose for d in manifest.data},
                    "privacy_policy_url": manifest.privacy_policy_url,
                    "terms_url": manifest.terms_url,
                    "manifest_digest": manifest.digest(),
                    "connector_name": manifest.name,
                    "scopes": list(manifest.oauth.scopes),
                    "platform_policy_version": rt.settings.policy_version,
                    "policy_digests": policy_digests,
                    "terms_version": terms_version,
                    "consented_at": now.isoformat(),
                    "client_ip": client_ip,
                    "user_agent": (user_agent or "")[:500] or None,
                    "return_url": row.return_url,
                    "settings": settings,
                    "confirm": row.confirm,
                },
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
        row = _live_session(session, rt, token, kind="connect")
        _check_connector(row, connector_id)
        _consume(session, row, rt.clock())
        return_url = row.return_url
    return safe_return(rt, return_url, {"status": "cancelled", "connector": connector_id})


def safe_return(rt: Runtime, url: str | None, params: dict[str, str]) -> str | None:
    if url and is_allowed_return_url(url, rt.settings.return_url_prefixes):
        return with_query(url, params)
    return None
