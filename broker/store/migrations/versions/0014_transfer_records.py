"""transfer records for reports and filters: declared uses, category page order

Each transfer keeps the data uses its manifest declared for the categories sent
(``data_uses``), so reports say what was declared when it was sent, not what the
connector installed today declares (or nothing, once it is uninstalled). Rows of
earlier transfers keep ``NULL``: reports then fall back to the installed manifest.

``GET /v1/transfers?category=`` matched with ``id IN (every transfer id of the
category)`` and sorted all of them. The category table now carries its
transfer's ``created_at`` (copied at insert; filled in here for existing rows)
with an index on (category, created_at, transfer_id): a page of one category
reads only the rows it shows, like the other filters (migration 0007).

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported from the models).
INDEX = "ix_transfer_categories_page"
COLUMNS = ("category", "created_at", "transfer_id")


def upgrade() -> None:
    with op.batch_alter_table("transfers") as batch:
        batch.add_column(sa.Column("data_uses", sa.JSON(), nullable=True))
    with op.batch_alter_table("transfer_categories") as batch:
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE transfer_categories SET created_at = (SELECT transfers.created_at FROM "
        "transfers WHERE transfers.id = transfer_categories.transfer_id)"
    )
    op.create_index(INDEX, "transfer_categories", list(COLUMNS))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="transfer_categories")
    with op.batch_alter_table("transfer_categories") as batch:
        batch.drop_column("created_at")
    with op.batch_alter_table("transfers") as batch:
        batch.drop_column("data_uses")
