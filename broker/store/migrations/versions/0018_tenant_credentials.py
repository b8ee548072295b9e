"""per-tenant OAuth client credentials; connections and connect sessions name a tenant

``connector_credentials``: a connector's OAuth client per tenant (the secret sealed by
the vault). ``connections.tenant`` and ``connect_sessions.tenant``: the tenant whose
client a connection uses (null: the manifest's environment references; issue 12).

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.store.types import UTCDateTime

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connector_credentials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("connector_id", sa.String(length=63), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("client_secret", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connector_id", "tenant", name="uq_connector_credentials_tenant"),
    )
    for table in ("connections", "connect_sessions"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("tenant", sa.String(length=100), nullable=True))


def downgrade() -> None:
    for table in ("connect_sessions", "connections"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("tenant")
    op.drop_table("connector_credentials")
