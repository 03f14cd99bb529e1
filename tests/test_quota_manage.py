"""Quota policies in the database (the CLI's and admin API's functions), on SQLite and PostgreSQL;
and migration 0002, up and down, matching the tables."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.migrate import alembic_config
from proxy.db.tables import Base
from proxy.quotas import QuotaPolicyError, delete_policy, get_policies, set_policy
from tests.conftest import PG_ADMIN_URL, run_sync
from tests.test_quota_fixtures import clear_quota_tables, make_key

QUOTA_TABLES = {"quota_policies", "quota_counters", "quota_reservations"}


@pytest.fixture
async def session(db_url: str) -> AsyncIterator[AsyncSession]:
    await clear_quota_tables(db_url)
    await make_key(db_url, "team-a")
    await make_key(db_url, "team-b")
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as s:
            yield s
    finally:
        await engine.dispose()


async def test_set_replaces_and_lists_policies(session: AsyncSession) -> None:
    first = await set_policy(session, "team-a", budget_usd="10.50", period="day", rpm=60)
    again = await set_policy(session, "team-a", tokens=1_000_000, allowed_models=["gemini-2.5-*"])
    await session.commit()
    assert again.id == first.id  # one tenant-wide policy, replaced whole
    assert again.budget_usd is None and again.rpm is None and again.period == "month"
    key = (await session.execute(text("SELECT prefix FROM api_keys LIMIT 1"))).scalar_one()
    narrow = await set_policy(session, "team-a", key_prefix=key, tpm=5000, mode="soft")
    await set_policy(session, "team-b", budget_usd=Decimal("0.0000000001"))
    await session.commit()
    listed = await get_policies(session, "team-a")
    assert [(p.key_prefix, p.tokens, p.tpm) for p in listed] == [
        (None, 1_000_000, None),
        (key, None, 5000),
    ]
    assert listed[1] == narrow and narrow.scope == f"key {key}"
    assert listed[0].to_dict() == {
        "tenant": "team-a", "key": None, "mode": "hard", "period": "month", "budget_usd": None,
        "tokens": 1_000_000, "rpm": None, "tpm": None, "allowed_models": ["gemini-2.5-*"],
        "updated_at": listed[0].to_dict()["updated_at"],
    }  # fmt: skip
    tiny = (await get_policies(session, "team-b"))[0]
    assert tiny.budget_usd == Decimal("0.0000000001")
    assert len(await get_policies(session)) == 3
    assert await delete_policy(session, "team-a", key) is True
    assert await delete_policy(session, "team-a", key) is False
    await session.commit()
    assert [p.key_prefix for p in await get_policies(session)] == [None, None]


@pytest.mark.parametrize(
    ("tenant", "kwargs", "message"),
    [
        ("nobody", {"rpm": 1}, "no tenant named 'nobody'"),
        ("team-a", {}, "a policy needs"),
        ("team-a", {"rpm": 0}, "rpm must be a positive whole number"),
        ("team-a", {"tpm": 1.5}, "tpm must be a positive whole number"),
        ("team-a", {"budget_usd": "-1"}, "budget must be a positive amount"),
        ("team-a", {"budget_usd": "ten"}, "budget must be a decimal amount"),
        ("team-a", {"budget_usd": "0.00000000001"}, "more than 10 decimal places"),
        ("team-a", {"rpm": 1, "period": "year"}, "period must be one of day, week, month"),
        ("team-a", {"rpm": 1, "mode": "strict"}, "mode must be one of hard, soft"),
        ("team-a", {"rpm": 1, "key_prefix": "gm-nope"}, "has no key 'gm-nope'"),
    ],
)
async def test_invalid_policies_are_refused(
    session: AsyncSession, tenant: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(QuotaPolicyError, match=message):
        await set_policy(session, tenant, **kwargs)


async def test_a_key_of_another_tenant_is_refused(session: AsyncSession) -> None:
    sql = (
        "SELECT k.prefix FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
        "WHERE t.name = 'team-b'"
    )
    other = (await session.execute(text(sql))).scalar_one()
    with pytest.raises(QuotaPolicyError, match="has no key"):
        await set_policy(session, "team-a", key_prefix=other, rpm=1)


# -- migration 0002 ----------------------------------------------------------------------------


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return [d for d in compare_metadata(ctx, Base.metadata) if "quota" in repr(d)]


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) & QUOTA_TABLES


async def _check(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == QUOTA_TABLES
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


def _round_trip(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    run_sync(lambda: _check(url))
    command.downgrade(cfg, "0001")
    command.upgrade(cfg, "head")
    run_sync(lambda: _check(url))


def test_migration_round_trip_on_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")


def test_migration_round_trip_on_postgresql() -> None:
    name = f"gemini_meter_quota_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        engine = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    run_sync(lambda: admin(f'CREATE DATABASE "{name}"'))
    try:
        _round_trip(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    finally:
        run_sync(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
