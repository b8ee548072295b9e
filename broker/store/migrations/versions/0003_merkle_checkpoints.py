"""merkle tree and signed checkpoints

The RFC 9162 Merkle tree over the audit entries (``merkle_nodes``: the hash of every
complete subtree, keyed by its post-order position) and the signed checkpoints. The
tree of the entries already in the log is built here, in seq order, from each entry's
canonical content, so that the tree and the chain agree from the first entry on.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import broker.store.types

# The log format (the canonical encoding and RFC 9162 leaf and node hashes) is a fixed
# specification, pinned by its own tests and by outside reference code: imported.
from broker.core.audit_chain import canonical_bytes
from broker.core.merkle import Frontier, leaf_hash, node_position

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported from the live code: the audit_log columns an entry's content
# was made of at this revision. A field added to entries later must not make this
# migration read a column that a database at 0002 does not have.
ENTRY_FIELDS = (
    "seq", "time", "event", "actor", "user_id", "connector_id", "connection_id",
    "transfer_id", "consent_id", "categories", "field_paths", "purpose", "legal_basis",
    "payload_sha256", "payload_bytes", "destination", "outcome", "details",
)  # fmt: skip
_JSON = {"categories", "field_paths", "details"}
_BATCH = 5000


def upgrade() -> None:
    nodes = op.create_table(
        "merkle_nodes",
        sa.Column("pos", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("pos"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("time", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("origin", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("key_id", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", broker.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_checkpoints_tree_size", "checkpoints", ["tree_size"])
    _backfill(nodes)


def _backfill(nodes: sa.Table) -> None:
    log = sa.table(
        "audit_log", *(sa.column(f, sa.JSON() if f in _JSON else None) for f in ENTRY_FIELDS)
    )
    bind = op.get_bind()
    frontier = Frontier()
    after = 0
    while True:
        rows = bind.execute(
            sa.select(log).where(log.c.seq > after).order_by(log.c.seq).limit(_BATCH)
        ).all()
        if not rows:
            return
        batch = []
        for row in rows:
            content = {f: getattr(row, f) for f in ENTRY_FIELDS}
            for level, idx, h in frontier.append(leaf_hash(canonical_bytes(content))):
                batch.append({"pos": node_position((level, idx)), "hash": h})
        bind.execute(nodes.insert(), batch)
        after = rows[-1].seq


def downgrade() -> None:
    op.drop_index("ix_checkpoints_tree_size", table_name="checkpoints")
    op.drop_table("checkpoints")
    op.drop_table("merkle_nodes")
