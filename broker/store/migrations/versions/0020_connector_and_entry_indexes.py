"""two reads that scanned: the connector-only transfer filter, a transfer's log entries

``GET /v1/transfers?connector_id=`` (without a status) had no index ending in the page
order: the (connector_id, status, created_at, id) index of 0007 serves it only with a
status, so the filter sorted every transfer of the connector (121-132 ms at 10^5 in
bench/audit_scale.py). The console's transfer page reads the audit entries of one
transfer, which had no index on ``transfer_id``: a scan of the whole log per page.

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported from the models).
INDEXES = {
    "ix_transfers_connector_page": ("transfers", ("connector_id", "created_at", "id")),
    "ix_audit_log_transfer": ("audit_log", ("transfer_id", "seq")),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, list(columns))


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
