"""usage rollups: usage per hour, tenant, key and model, backfilled from the ledger

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 03:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Money as this revision creates it, frozen here rather than imported from the live tables:
# exact NUMERIC(20, 10) on PostgreSQL, an integer count of 1e-10 USD on SQLite.
MONEY = sa.Numeric(20, 10).with_variant(sa.BigInteger(), "sqlite")

_SUMS = (
    "prompt_tokens",
    "cached_tokens",
    "output_tokens",
    "thinking_tokens",
    "tool_use_prompt_tokens",
    "audio_prompt_tokens",
    "total_tokens",
)


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in _SUMS),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("unpriced", sa.BigInteger(), nullable=False),
        sa.Column("estimated", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "tenant_id", "key_id", "model", name="pk_usage_rollups"),
    )
    op.create_index("ix_usage_rollups_tenant_bucket", "usage_rollups", ["tenant_id", "bucket"])
    # Backfill from rows written before this revision. The hour is computed in SQL, in UTC.
    if op.get_bind().dialect.name == "postgresql":
        hour = "date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        cost = "COALESCE(SUM(cost_usd), 0)"
    else:  # SQLite stores naive UTC text and the cost as integer 1e-10 USD units
        hour = "strftime('%Y-%m-%d %H:00:00.000000', created_at)"
        cost = "COALESCE(SUM(cost_usd), 0)"
    sums = ", ".join(f"SUM({c})" for c in _SUMS)
    op.execute(
        f"""
        INSERT INTO usage_rollups (bucket, tenant_id, key_id, model, requests, {", ".join(_SUMS)},
                                   cost_usd, unpriced, estimated, errors)
        SELECT {hour}, tenant_id, COALESCE(key_id, 0), model, COUNT(*), {sums}, {cost},
               SUM(CASE WHEN priced THEN 0 ELSE 1 END), SUM(CASE WHEN estimated THEN 1 ELSE 0 END),
               SUM(CASE WHEN status = 200 THEN 0 ELSE 1 END)
        FROM usage_events
        GROUP BY {hour}, tenant_id, COALESCE(key_id, 0), model
        """
    )


def downgrade() -> None:
    op.drop_index("ix_usage_rollups_tenant_bucket", table_name="usage_rollups")
    op.drop_table("usage_rollups")
