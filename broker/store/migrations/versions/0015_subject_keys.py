"""subject keys, per-transfer salts, log format 2 (pseudonymous, erasable log)

``subject_keys``: one random key per user and the pseudonym it gives
(``HMAC-SHA256(key, user_id)``, broker.core.pseudonyms); audit entries of format 2 name
the user by it, and erasing the user deletes the row. ``transfers.payload_salt``: the
random salt of the transfer's payload digest (``HMAC-SHA256(salt, payload)``), kept
beside the transfer and outside the log. ``audit_formats``: from which entry on the
log is in format 2: entry 1 for an empty log; for a log with format-1 entries, the
``log.format`` handover entry the broker appends when it next starts (``first_seq``
null until then). Existing entries are not rewritten.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported from the models).
KEYS = "subject_keys"
FORMATS = "audit_formats"


def upgrade() -> None:
    op.create_table(
        KEYS,
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("subject_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
        sa.UniqueConstraint("pseudonym"),
    )
    op.create_table(
        FORMATS,
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    with op.batch_alter_table("transfers") as batch:
        batch.add_column(sa.Column("payload_salt", sa.LargeBinary(length=32), nullable=True))
    bind = op.get_bind()
    seq = bind.execute(sa.text("SELECT seq FROM audit_head WHERE id = 1")).scalar()
    bind.execute(
        sa.text(
            "INSERT INTO audit_formats (version, first_seq, recorded_at) "
            "VALUES (2, :first, CURRENT_TIMESTAMP)"
        ),
        {"first": 1 if not seq else None},
    )


def downgrade() -> None:
    with op.batch_alter_table("transfers") as batch:
        batch.drop_column("payload_salt")
    op.drop_table(FORMATS)
    op.drop_table(KEYS)
