"""connect sessions say whether they may re-authorise a live connection

``connect_sessions.reconnect`` (default true): approving the session for a user and
connector that already have a live connection re-authorises that connection (new
tokens, a new consent record, the same id) instead of making a second one (issue 12).

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connect_sessions") as batch_op:
        batch_op.add_column(
            sa.Column("reconnect", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("connect_sessions") as batch_op:
        batch_op.drop_column("reconnect")
