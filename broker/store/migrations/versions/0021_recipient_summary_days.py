"""recipient summaries per day: the Recipients charts read counts, not transfers

The console's charts of delivered, failed and blocked transfers per recipient per UTC
day read every transfer of the period (376-547 ms at 10^5 transfers in
bench/audit_scale.py, linear in the log). ``recipient_summaries`` now also keeps a row
of ``kind`` ``day`` per recipient, final status and UTC day of ``created_at`` (``item``
the ISO date), added to in the transaction of the outcome it counts like the others;
it is filled here from the transfers already stored (``broker audit summary --check``
compares, ``--rebuild`` rewrites).

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported from the models). SQLite keeps UTC datetimes as sortable
# text ("YYYY-MM-DD HH:MM:SS..."); PostgreSQL as timestamptz.
_DAY = {
    "sqlite": "substr(created_at, 1, 10)",
    "postgresql": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
_DAYS = (
    "INSERT INTO recipient_summaries (connector_id, status, kind, item, transfers, first_at, "
    "last_at) SELECT connector_id, status, 'day', {day}, count(*), min(created_at), "
    "max(created_at) FROM transfers WHERE status IN ('delivered', 'failed', 'blocked', "
    "'outcome_unknown', 'cancelled') GROUP BY connector_id, status, {day}"
)


def upgrade() -> None:
    day = _DAY[op.get_bind().dialect.name]
    op.execute(_DAYS.replace("{day}", day))


def downgrade() -> None:
    op.execute("DELETE FROM recipient_summaries WHERE kind = 'day'")
