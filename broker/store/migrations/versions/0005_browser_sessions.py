"""browser sessions

The sessions of the user's page (``/me``) and the auditor console (``/audit``)
become server-side records: the cookie holds a random id, ``browser_sessions``
its SHA-256, the expiry and when (if) it was ended; a console session names the
API key that opened it, so revoking the key ends it. ``rate_limit_counters``
holds the console's sign-in counters when several broker processes share the
database (``BROKER_RATE_LIMIT_STORAGE=database``).

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import broker.store.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "browser_sessions",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("api_key_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("created_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", broker.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_browser_sessions_api_key_id", "browser_sessions", ["api_key_id"])
    op.create_index("ix_browser_sessions_expires_at", "browser_sessions", ["expires_at"])
    op.create_table(
        "rate_limit_counters",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_counters")
    op.drop_index("ix_browser_sessions_expires_at", table_name="browser_sessions")
    op.drop_index("ix_browser_sessions_api_key_id", table_name="browser_sessions")
    op.drop_table("browser_sessions")
