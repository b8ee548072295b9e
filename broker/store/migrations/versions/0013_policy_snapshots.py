"""policy snapshots, terms versions and policy changes

Snapshots of third parties' privacy policy and terms pages (one row per distinct
SHA-256 of the normalised text), every fetch of them (retrieved or not), every distinct
set of a connector's terms (``terms_versions``) and each change between them
(``policy_changes``). Consent records and transfers gain a nullable ``terms_version``:
the terms agreed to / sent under (null on rows from before this revision).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.store.types import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policy_snapshots",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("etag", sa.String(length=200), nullable=True),
        sa.Column("last_modified", sa.String(length=100), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_table(
        "policy_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connector_id", sa.String(length=63), nullable=False),
        sa.Column("page", sa.String(length=20), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("checked_at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("etag", sa.String(length=200), nullable=True),
        sa.Column("last_modified", sa.String(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_policy_checks_page", "policy_checks", ["connector_id", "page", "checked_at"]
    )
    op.create_table(
        "terms_versions",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("connector_id", sa.String(length=63), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("current_since", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_index("ix_terms_versions_connector_id", "terms_versions", ["connector_id"])
    op.create_table(
        "policy_changes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("connector_id", sa.String(length=63), nullable=False),
        sa.Column("before_version", sa.String(length=64), nullable=False),
        sa.Column("after_version", sa.String(length=64), nullable=False),
        sa.Column("detected_at", UTCDateTime(), nullable=False),
        sa.Column("detected_by", sa.String(length=200), nullable=False),
        sa.Column("classification", sa.String(length=20), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("digests", sa.JSON(), nullable=False),
        sa.Column("paused", sa.JSON(), nullable=False),
        sa.Column("classified_by", sa.String(length=200), nullable=True),
        sa.Column("classified_at", UTCDateTime(), nullable=True),
        sa.Column("classified_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_policy_changes_connector_id", "policy_changes", ["connector_id"])
    op.add_column("consent_records", sa.Column("terms_version", sa.String(length=64)))
    op.add_column("transfers", sa.Column("terms_version", sa.String(length=64)))


def downgrade() -> None:
    with op.batch_alter_table("transfers") as batch:
        batch.drop_column("terms_version")
    with op.batch_alter_table("consent_records") as batch:
        batch.drop_column("terms_version")
    op.drop_index("ix_policy_changes_connector_id", table_name="policy_changes")
    op.drop_table("policy_changes")
    op.drop_index("ix_terms_versions_connector_id", table_name="terms_versions")
    op.drop_table("terms_versions")
    op.drop_index("ix_policy_checks_page", table_name="policy_checks")
    op.drop_table("policy_checks")
    op.drop_table("policy_snapshots")
