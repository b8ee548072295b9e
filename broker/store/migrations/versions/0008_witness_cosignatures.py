"""witness cosignatures

Every C2SP ``cosignature/v1`` a configured witness returned for a checkpoint
(``checkpoint_cosignatures``), and on each checkpoint ``witnessed_time``: when the
quorum-th witness cosigned it (null until then, and for checkpoints signed before
witnessing). Existing rows are unchanged.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.store.types import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.add_column(sa.Column("witnessed_time", sa.String(length=40), nullable=True))
    op.create_table(
        "checkpoint_cosignatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), sa.ForeignKey("checkpoints.id"), nullable=False),
        sa.Column("witness", sa.String(length=255), nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("checkpoint_id", "key_id"),
    )
    op.create_index(
        "ix_checkpoint_cosignatures_checkpoint_id", "checkpoint_cosignatures", ["checkpoint_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_checkpoint_cosignatures_checkpoint_id", table_name="checkpoint_cosignatures")
    op.drop_table("checkpoint_cosignatures")
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.drop_column("witnessed_time")
