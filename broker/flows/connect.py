"""The connect link: a single-use ticket the platform asks for, and what it opens.

``create_connect_session`` issues the link (``POST /v1/connect-sessions``); only its
digest is stored (:mod:`broker.store.tickets`). The consent page it opens is
:mod:`broker.flows.consent_page`, approving it :mod:`broker.flows.approve`, whose
attempt the provider answers at :mod:`broker.flows.callback`; :func:`cancel` is the user
saying no on our page. :func:`session_ticket` is how each of them reads (or spends) the
link, :func:`safe_return` how each sends the browser back to the platform.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlmodel import Session

from broker.core import routes
from broker.core.errors import InvalidInput, ReturnUrlNotAllowed, SessionInvalid
from broker.core.tickets import TicketRefusal
from broker.core.tokens import digest, new_secret
from broker.core.urls import is_allowed_return_url
from broker.flows.connection_setup import encode_settings
from broker.flows.tenant_credentials import tenant_has_credentials, validate_tenant
from broker.runtime import Runtime
from broker.store.db import session_scope
from broker.store.models import ConnectSession
from broker.store.tickets import claim_ticket, find_ticket

__all__ = [
    "IssuedSession",
    "cancel",
    "check_connector",
    "create_connect_session",
    "safe_return",
    "session_ticket",
    "validate_display_name",
    "validate_user_id",
    "with_query",
]

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


def session_ticket(
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


def check_connector(row: ConnectSession, connector_id: str) -> None:
    """A link made for one connector opens that connector's consent only."""
    if row.connector_id is not None and row.connector_id != connector_id:
        raise SessionInvalid("this session link is for another integration")


def cancel(rt: Runtime, *, token: str | None, connector_id: str) -> str | None:
    """The user said no on our page: nothing is created; the link is spent."""
    with session_scope(rt.engine) as session:
        row = session_ticket(session, token, kind="connect", now=rt.clock(), claim=True)
        check_connector(row, connector_id)
        return_url = row.return_url
    return safe_return(rt, return_url, {"status": "cancelled", "connector": connector_id})


def safe_return(rt: Runtime, url: str | None, params: dict[str, str]) -> str | None:
    if url and is_allowed_return_url(url, rt.settings.return_url_prefixes):
        return with_query(url, params)
    return None
