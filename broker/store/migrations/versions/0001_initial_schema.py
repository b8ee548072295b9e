"""initial schema

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import broker.store.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Every table of the first release, and the audit chain's genesis head."""
    op.create_table(
        "api_keys",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("created_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", broker.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("time", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("connector_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=True),
        sa.Column("connection_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("transfer_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("consent_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("field_paths", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=True),
        sa.Column("legal_basis", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("payload_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("payload_bytes", sa.Integer(), nullable=True),
        sa.Column("destination", sa.Text(), nullable=True),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_event"), ["event"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_user_id"), ["user_id"], unique=False)

    op.create_table(
        "connect_sessions",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("connector_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=True),
        sa.Column("return_url", sa.Text(), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("created_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", broker.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("connect_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_connect_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "connections",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("connector_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
        sa.Column("created_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("activated_at", broker.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", broker.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("consent_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_connections_connector_id"), ["connector_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_connections_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_connections_user_id"), ["user_id"], unique=False)

    op.create_table(
        "connection_tokens",
        sa.Column("connection_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("key_id", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("expires_at", broker.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("updated_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
        ),
        sa.PrimaryKeyConstraint("connection_id"),
    )
    op.create_table(
        "consent_records",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("connection_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("connector_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("connector_name", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("granted_categories", sa.JSON(), nullable=False),
        sa.Column("declined_categories", sa.JSON(), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("privacy_policy_url", sa.Text(), nullable=False),
        sa.Column("terms_url", sa.Text(), nullable=False),
        sa.Column("policy_digests", sa.JSON(), nullable=True),
        sa.Column("manifest_digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column(
            "platform_policy_version", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False
        ),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("client_ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("consented_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_records_connection_id"), ["connection_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_consent_records_user_id"), ["user_id"], unique=False)

    op.create_table(
        "oauth_attempts",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("state_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("connection_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("session_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("code_verifier", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("consent", sa.JSON(), nullable=False),
        sa.Column("created_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", broker.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["connect_sessions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("state_hash"),
    )
    op.create_table(
        "transfers",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("connection_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("connector_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=True),
        sa.Column("legal_basis", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("consent_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("mode", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("field_paths", sa.JSON(), nullable=False),
        sa.Column("dropped", sa.JSON(), nullable=False),
        sa.Column("payload_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("payload_bytes", sa.Integer(), nullable=True),
        sa.Column("destination", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("attempts", sa.JSON(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("created_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", broker.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id", "idempotency_key"),
    )
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transfers_connection_id"), ["connection_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_transfers_connector_id"), ["connector_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_transfers_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_transfers_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_transfers_user_id"), ["user_id"], unique=False)

    op.create_table(
        "transfer_categories",
        sa.Column("transfer_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("category", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["transfer_id"],
            ["transfers.id"],
        ),
        sa.PrimaryKeyConstraint("transfer_id", "category"),
    )
    with op.batch_alter_table("transfer_categories", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transfer_categories_category"), ["category"], unique=False
        )
    op.bulk_insert(
        sa.table(
            "audit_head",
            sa.column("id", sa.Integer),
            sa.column("seq", sa.Integer),
            sa.column("hash", sa.String),
        ),
        [{"id": 1, "seq": 0, "hash": "0" * 64}],
    )


def downgrade() -> None:
    with op.batch_alter_table("transfer_categories", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfer_categories_category"))

    op.drop_table("transfer_categories")
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfers_user_id"))
        batch_op.drop_index(batch_op.f("ix_transfers_status"))
        batch_op.drop_index(batch_op.f("ix_transfers_created_at"))
        batch_op.drop_index(batch_op.f("ix_transfers_connector_id"))
        batch_op.drop_index(batch_op.f("ix_transfers_connection_id"))

    op.drop_table("transfers")
    op.drop_table("oauth_attempts")
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_records_user_id"))
        batch_op.drop_index(batch_op.f("ix_consent_records_connection_id"))

    op.drop_table("consent_records")
    op.drop_table("connection_tokens")
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connections_user_id"))
        batch_op.drop_index(batch_op.f("ix_connections_status"))
        batch_op.drop_index(batch_op.f("ix_connections_connector_id"))

    op.drop_table("connections")
    with op.batch_alter_table("connect_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connect_sessions_user_id"))

    op.drop_table("connect_sessions")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_user_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_event"))

    op.drop_table("audit_log")
    op.drop_table("audit_head")
    op.drop_table("api_keys")
