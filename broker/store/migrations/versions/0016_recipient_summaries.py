"""recipient summaries: per recipient, final status and category / field path

``recipient_summaries`` counts the final transfers of each recipient per status,
and per status and category and field path, with the first and last ``created_at``
(broker.store.summaries); the Recipients page, ``GET /v1/audit/recipients`` and
``broker audit report`` read it instead of every transfer. It is filled here from
the transfers already stored (``broker audit summary --check`` compares it with them
at any time, ``--rebuild`` rewrites it).

An index on ``consent_records`` (connector_id, recorded_at) finds a recipient's latest
consent record (its name and policy links as last agreed to) in one lookup.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported from the models).
TABLE = "recipient_summaries"
INDEX = "ix_consent_records_connector_recorded"
_TOTALS = (
    "INSERT INTO recipient_summaries (connector_id, status, kind, item, transfers, first_at, "
    "last_at) SELECT connector_id, status, 'transfer', '', count(*), min(created_at), "
    "max(created_at) FROM transfers WHERE status IN ('delivered', 'failed', 'blocked', "
    "'outcome_unknown', 'cancelled') GROUP BY connector_id, status"
)
# Per element of a transfer's JSON list of categories or of field paths; a
# transfer counts once per distinct element.
_ITEMS = (
    "INSERT INTO recipient_summaries (connector_id, status, kind, item, transfers, first_at, "
    "last_at) SELECT t.connector_id, t.status, :kind, j.value, count(DISTINCT t.id), "
    "min(t.created_at), max(t.created_at) FROM transfers AS t CROSS JOIN {each} "
    "WHERE t.status IN ('delivered', 'failed', 'blocked', 'outcome_unknown', 'cancelled') "
    "GROUP BY t.connector_id, t.status, j.value"
)
_EACH = {
    "sqlite": {
        "category": "json_each(t.categories) AS j",
        "field": "json_each(t.field_paths) AS j",
    },
    "postgresql": {
        "category": "LATERAL json_array_elements_text(t.categories::json) AS j(value)",
        "field": "LATERAL json_array_elements_text(t.field_paths::json) AS j(value)",
    },
}


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("connector_id", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("item", sa.Text(), nullable=False),
        sa.Column("transfers", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connector_id", "status", "kind", "item"),
    )
    op.create_index(INDEX, "consent_records", ["connector_id", "recorded_at"])
    bind = op.get_bind()
    op.execute(_TOTALS)
    for kind, each in _EACH[bind.dialect.name].items():
        bind.execute(sa.text(_ITEMS.replace("{each}", each)), {"kind": kind})


def downgrade() -> None:
    op.drop_index(INDEX, table_name="consent_records")
    op.drop_table(TABLE)
