"""The tables the code declares are the tables the migrations make, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from proxy.db.engine import make_engine
from proxy.db.tables import Base
from tests.conftest import run_sync


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    # alembic_version is the migrations' own table, not the code's.
    return [d for d in compare_metadata(ctx, Base.metadata) if "alembic_version" not in repr(d)]


def test_code_and_migrations_declare_the_same_schema(db_url: str) -> None:
    async def diff() -> list[Any]:
        engine = make_engine(db_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(_diff)
        finally:
            await engine.dispose()

    assert run_sync(diff) == []
