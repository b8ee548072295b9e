"""user objections

``user_preferences``: one row per user with ``object_to``, the data-use keys the user
objects to (GDPR Art. 21(2)-(3): marketing, and the uses the operator lists in
``BROKER_OBJECTABLE_USES``); the gateway refuses those uses for that user. Read by its
primary key (the user id) before each transfer. No existing table changes.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import broker.store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_preferences",
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("object_to", sa.JSON(), nullable=False),
        sa.Column("updated_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade() -> None:
    op.drop_table("user_preferences")
