"""delivery engine: the transfer row is the job

A pending transfer carries its schedule and lease (``next_attempt_at``,
``lease_owner``, ``lease_until``, ``runs``) and, until its outcome is final, the
granted payload sealed by the token vault (``payload_sealed``), so any worker can
deliver it. The payload is erased when the transfer ends.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.store.types import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("transfers") as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("runs", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("payload_sealed", sa.Text(), nullable=True))
        batch_op.create_index("ix_transfers_queue", ["status", "next_attempt_at"])
        batch_op.create_index("ix_transfers_lease", ["status", "lease_until"])


def downgrade() -> None:
    with op.batch_alter_table("transfers") as batch_op:
        batch_op.drop_index("ix_transfers_lease")
        batch_op.drop_index("ix_transfers_queue")
        for name in ("payload_sealed", "runs", "lease_until", "lease_owner", "next_attempt_at"):
            batch_op.drop_column(name)
