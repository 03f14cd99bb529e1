"""quotas: policies, and the SQL quota store's counters and reservations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 02:37:19.728908
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Money as this revision creates it, frozen here rather than imported from the live tables:
# exact NUMERIC(20, 10) on PostgreSQL, an integer count of 1e-10 USD on SQLite.
MONEY = sa.Numeric(20, 10).with_variant(sa.BigInteger(), "sqlite")

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "quota_policies",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("key_id", _ID, nullable=True),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("budget_usd", MONEY, nullable=True),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("rpm", sa.BigInteger(), nullable=True),
        sa.Column("tpm", sa.BigInteger(), nullable=True),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_quota_policies_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_quota_policies_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_policies")),
    )
    with op.batch_alter_table("quota_policies", schema=None) as batch_op:
        batch_op.create_index("uq_quota_policies_key_id", ["key_id"], unique=True)
        # One tenant-wide policy per tenant: NULL key ids are distinct in a plain unique index.
        batch_op.create_index(
            "uq_quota_policies_tenant_wide",
            ["tenant_id"],
            unique=True,
            sqlite_where=sa.text("key_id IS NULL"),
            postgresql_where=sa.text("key_id IS NULL"),
        )

    op.create_table(
        "quota_counters",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_quota_counters")),
    )
    with op.batch_alter_table("quota_counters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quota_counters_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "quota_reservations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("counter_key", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", "counter_key", name=op.f("pk_quota_reservations")),
    )
    with op.batch_alter_table("quota_reservations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_quota_reservations_counter_expires", ["counter_key", "expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("quota_reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_quota_reservations_counter_expires")
    op.drop_table("quota_reservations")

    with op.batch_alter_table("quota_counters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quota_counters_expires_at"))
    op.drop_table("quota_counters")

    with op.batch_alter_table("quota_policies", schema=None) as batch_op:
        batch_op.drop_index("uq_quota_policies_tenant_wide")
        batch_op.drop_index("uq_quota_policies_key_id")
    op.drop_table("quota_policies")
