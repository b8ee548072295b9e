"""oauth browser binding

Binds every OAuth attempt to the browser that approved it (RFC 9700 §4.7):
``oauth_attempts.browser_hash`` keeps the SHA-256 of the nonce set in that
browser's cookie. Spent PKCE verifiers are deleted, so ``code_verifier``
becomes nullable. A connect session may carry the platform account's display
name and ask for host confirmation (``confirm``); a connection waiting for it
has a deadline (``connections.confirm_by``).

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import broker.store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_attempts") as batch_op:
        batch_op.add_column(
            sa.Column("browser_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.alter_column("code_verifier", existing_type=sa.Text(), nullable=True)
    with op.batch_alter_table("connect_sessions") as batch_op:
        batch_op.add_column(
            sa.Column("display_name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
        batch_op.add_column(
            sa.Column("confirm", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("connections") as batch_op:
        batch_op.add_column(
            sa.Column("confirm_by", broker.store.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch_op:
        batch_op.drop_column("confirm_by")
    with op.batch_alter_table("connect_sessions") as batch_op:
        batch_op.drop_column("confirm")
        batch_op.drop_column("display_name")
    op.execute("UPDATE oauth_attempts SET code_verifier = '' WHERE code_verifier IS NULL")
    with op.batch_alter_table("oauth_attempts") as batch_op:
        batch_op.alter_column("code_verifier", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("browser_hash")
