"""resources: files, context caches, batches and operations, each owned by a tenant; the
resource a ledger row concerns and what it measured besides tokens

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("detail", sa.JSON(), nullable=True))
    op.create_table(
        "resources",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.BigInteger(), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_count", sa.BigInteger(), nullable=True),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("billed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=48), nullable=True),
        sa.Column("metered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_resources")),
    )
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.create_index(
            "ix_resources_tenant_kind_created", ["tenant_id", "kind", "created_at"], unique=False
        )
        batch_op.create_index("ix_resources_kind_metered", ["kind", "metered_at"], unique=False)


def downgrade() -> None:
    op.drop_table("resources")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_column("detail")
        batch_op.drop_column("resource")
