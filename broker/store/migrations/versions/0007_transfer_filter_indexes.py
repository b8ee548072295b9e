"""transfer filter indexes: each filter reads its matches in page order

Transfer lists are newest first (``created_at DESC, id DESC``). With only
single-column indexes, a filter on user, or on connector and status, found its
matches through one index and then sorted all of them. These composite indexes
end in the page order, so a page reads only the rows it shows.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported from the models), so a later model change cannot
# change what this migration did.
INDEXES = {
    "ix_transfers_user_page": ("user_id", "created_at", "id"),
    "ix_transfers_connector_status_page": ("connector_id", "status", "created_at", "id"),
    "ix_transfers_status_page": ("status", "created_at", "id"),
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "transfers", list(columns))


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="transfers")
