"""Per-tenant OAuth client credentials: register, list, delete, and use.

A host that serves several customers registers, per customer (a *tenant*), the OAuth
app that customer has at the third party: ``POST /v1/connectors/{id}/credentials``.
The client secret is sealed by the vault (bound to the row, kind
:data:`SECRET_KIND`) and never shown again; ``client_id`` is not secret and is
listed. Registering a tenant that already has credentials replaces them (a new
secret, say); connections already made keep working with the new ones.

A connect session naming the tenant makes a connection that remembers it; that
connection's authorization, token refreshes and revocation at the provider use the
tenant's client (:func:`tenant_client_credentials`). Credentials a live connection
still uses cannot be deleted: revoke those connections first.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from broker.core.connector import Connector
from broker.core.errors import ConfigurationError, Conflict, InvalidInput, NotFound
from broker.core.oauth import ClientCredentials
from broker.core.statuses import ConnectionStatus
from broker.core.tokens import new_secret
from broker.flows.paging import cursor_for, decode_cursor
from broker.runtime import Runtime
from broker.store.credential_models import ConnectorCredential
from broker.store.credentials import (
    all_credentials_for_update,
    count_connections_using,
    credentials_page,
    find_credentials,
)
from broker.store.db import session_scope

__all__ = [
    "SECRET_KIND",
    "credential_dict",
    "delete_credentials",
    "list_credentials",
    "register_credentials",
    "reseal_client_secrets",
    "tenant_client_credentials",
    "tenant_has_credentials",
    "validate_tenant",
]

SECRET_KIND = "oauth_client_secret"  # the vault's binding of a sealed client secret
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII, no spaces
# Connections that may still call the provider with the tenant's client.
_IN_USE = tuple(s for s in ConnectionStatus if s is not ConnectionStatus.REVOKED)


def validate_tenant(value: Any) -> str:
    if not isinstance(value, str) or not _TENANT.match(value):
        raise InvalidInput(
            "tenant must be 1-100 characters of letters, digits and . _ : -, "
            "starting with a letter or digit",
            details={"field": "tenant"},
        )
    return value


def _client_value(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= limit or not _PRINTABLE.match(value):
        raise InvalidInput(
            f"{name} must be 1-{limit} visible ASCII characters, without spaces",
            details={"field": name},
        )
    return value


def _z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def credential_dict(row: ConnectorCredential) -> dict[str, Any]:
    """As the API shows it: never the secret."""
    return {
        "id": row.id,
        "connector_id": row.connector_id,
        "tenant": row.tenant,
        "client_id": row.client_id,
        "created_at": _z(row.created_at),
        "updated_at": _z(row.updated_at),
    }


def register_credentials(
    rt: Runtime, connector_id: str, *, tenant: Any, client_id: Any, client_secret: Any
) -> tuple[ConnectorCredential, bool]:
    """Store ``tenant``'s OAuth client for the connector, replacing what it had;
    returns the row and whether it is new."""
    connector = rt.registry.get(connector_id)  # NotFound for an unknown connector
    tenant = validate_tenant(tenant)
    client_id = _client_value(client_id, "client_id", 500)
    client_secret = _client_value(client_secret, "client_secret", 2000)
    now = rt.clock()
    with session_scope(rt.engine) as session:
        row = find_credentials(session, connector_id=connector.id, tenant=tenant)
        created = row is None
        if row is None:
            row = ConnectorCredential(
                id="occ_" + new_secret(nbytes=12),
                connector_id=connector.id,
                tenant=tenant,
                client_id=client_id,
                client_secret="",
                created_at=now,
            )
        row.client_id = client_id
        row.client_secret = rt.vault.seal(client_secret, connection_id=row.id, kind=SECRET_KIND)
        row.updated_at = now
        session.add(row)
    return row, created


def list_credentials(
    rt: Runtime, connector_id: str, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The connector's tenants' credentials, newest first (keyset paging)."""
    rt.registry.get(connector_id)
    before = decode_cursor(cursor) if cursor else None
    with Session(rt.engine) as session:
        rows = credentials_page(session, connector_id=connector_id, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = cursor_for(rows[-1].created_at, rows[-1].id) if more else None
    return [credential_dict(r) for r in rows], nxt


def delete_credentials(rt: Runtime, connector_id: str, tenant: str) -> None:
    """Forget the tenant's client; refused while a connection still uses it."""
    rt.registry.get(connector_id)
    with session_scope(rt.engine) as session:
        row = find_credentials(session, connector_id=connector_id, tenant=tenant)
        if row is None:
            raise NotFound(
                f"no OAuth credentials of tenant {tenant!r} for {connector_id!r}",
                details={"connector_id": connector_id, "tenant": tenant},
            )
        in_use = count_connections_using(
            session, connector_id=connector_id, tenant=tenant, statuses=_IN_USE
        )
        if in_use:
            raise Conflict(
                f"{in_use} connection(s) still use these credentials; revoke them first",
                details={"connector_id": connector_id, "tenant": tenant, "connections": in_use},
            )
        session.delete(row)


def tenant_has_credentials(rt: Runtime, connector_id: str, tenant: str) -> bool:
    with Session(rt.engine) as session:
        return find_credentials(session, connector_id=connector_id, tenant=tenant) is not None


def tenant_client_credentials(rt: Runtime, connector: Connector, tenant: str) -> ClientCredentials:
    """``tenant``'s OAuth client for ``connector``. Missing, it is a configuration error
    whose message names neither the client nor any secret."""
    with Session(rt.engine) as session:
        row = find_credentials(session, connector_id=connector.id, tenant=tenant)
    if row is None:
        raise ConfigurationError(
            f"{connector.manifest.name} has no OAuth credentials for this tenant on this "
            "platform (they were deleted, or never registered)",
            details={"connector": connector.id, "tenant": tenant},
        )
    return ClientCredentials(
        client_id=row.client_id,
        client_secret=rt.vault.open(row.client_secret, connection_id=row.id, kind=SECRET_KIND),
    )


def reseal_client_secrets(rt: Runtime, session: Session) -> int:
    """Re-seal every stored client secret with the vault's active key (key rotation)."""
    count = 0
    for row in all_credentials_for_update(session):
        row.client_secret = rt.vault.reseal(
            row.client_secret, connection_id=row.id, kind=SECRET_KIND
        )
        session.add(row)
        count += 1
    return count
