"""Per-tenant OAuth client credentials of a connector (migration 0018).

A host serving several customers may register, per customer (*tenant*), the OAuth
app that customer owns at the third party. ``client_id`` is not secret and is kept
as given; ``client_secret`` is sealed by the vault, bound to the row's id (kind
``oauth_client_secret``), and re-sealed by ``broker keys rotate``. A connect session
that names a tenant makes a connection that remembers it (``connections.tenant``):
its authorization, token refreshes and revocation use that tenant's client. Without
a tenant, the manifest's environment references are used, as before.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from broker.store.types import UTCDateTime, utcnow

__all__ = ["ConnectorCredential"]


class ConnectorCredential(SQLModel, table=True):
    __tablename__ = "connector_credentials"
    __table_args__ = (
        UniqueConstraint("connector_id", "tenant", name="uq_connector_credentials_tenant"),
    )

    id: str = Field(primary_key=True, max_length=40)  # occ_…
    connector_id: str = Field(max_length=63)
    tenant: str = Field(max_length=100)
    client_id: str = Field(sa_type=Text)
    client_secret: str = Field(sa_type=Text, repr=False)  # sealed by the vault
    created_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    updated_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
