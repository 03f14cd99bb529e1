"""Helpers for the quota tests (no tests here): a settable clock, each store on its real backend,
tenants and keys, and services. Also meant for end-to-end tests through the proxy:
:func:`add_policy`, :func:`clear_quota_tables` and :func:`budget_for`."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from proxy.caller import Caller
from proxy.db import queries
from proxy.db.engine import make_engine, make_sessionmaker
from proxy.pricing.catalog import Catalog
from proxy.quotas.estimate import estimate_call
from proxy.quotas.manage import set_policy
from proxy.quotas.policy import Policy
from proxy.quotas.service import QuotaHooks, QuotaService
from proxy.quotas.store import QuotaStore
from proxy.quotas.store_memory import MemoryStore
from proxy.quotas.store_redis import RedisStore
from proxy.quotas.store_sql import SqlStore
from proxy.settings import Settings
from tests.conftest import run_sync

REDIS_URL = os.environ.get("GEMINI_METER_TEST_REDIS", "redis://127.0.0.1:6379/0")
STORE_KINDS = ("memory", "sql-sqlite", "sql-postgresql", "redis")
QUOTA_TABLES = "quota_reservations, quota_counters, quota_policies"
MODEL = "gemini-2.5-flash"

_CATALOG: Catalog | None = None
_PROXY_CATALOG: Catalog | None = None


def catalog() -> Catalog:
    global _CATALOG
    if _CATALOG is None:
        _CATALOG = Catalog.load()
    return _CATALOG


def proxy_catalog() -> Catalog:
    """The catalog a proxy started with the default settings prices with (the default list,
    then the fallback): what budgets for running proxies are computed with."""
    global _PROXY_CATALOG
    if _PROXY_CATALOG is None:
        defaults = Settings()
        _PROXY_CATALOG = Catalog.load(defaults.price_list, None, defaults.price_list_fallback)
    return _PROXY_CATALOG


class Clock:
    """The service's injectable clock: call it for now, move it with ``advance`` or ``at``."""

    def __init__(self, now: datetime = datetime(2026, 3, 10, 12, 0, 10, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def clear_quota_tables(url: str) -> None:
    """``pg_url`` truncates the ledger tables only; quota counters are keyed by tenant id, which
    ``RESTART IDENTITY`` reuses, so they must go too."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execute(text(f"TRUNCATE {QUOTA_TABLES}"))
            else:
                for table in QUOTA_TABLES.split(", "):
                    await conn.execute(text(f"DELETE FROM {table}"))
    finally:
        await engine.dispose()


def resolve_backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """For a fixture parametrized over STORE_KINDS: (store kind, database url), the database
    clean. Memory and Redis stores still use a database: the ledger and the policies."""
    kind: str = request.param
    if kind in ("memory", "redis"):
        return kind, request.getfixturevalue("sqlite_url")
    url: str = request.getfixturevalue("sqlite_url" if kind == "sql-sqlite" else "pg_url")
    run_sync(lambda: clear_quota_tables(url))
    return kind, url


@asynccontextmanager
async def redis_store(prefix: str | None = None) -> AsyncIterator[RedisStore]:
    """A Redis store under a unique key prefix, its keys deleted afterwards."""
    prefix = prefix or f"gm-test:{uuid.uuid4().hex[:12]}:"
    store = RedisStore(Redis.from_url(REDIS_URL), prefix=prefix)
    try:
        yield store
    finally:
        cleaner = Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in cleaner.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await cleaner.delete(*keys)
        finally:
            await cleaner.aclose()
        await store.aclose()


@asynccontextmanager
async def open_store(
    kind: str, url: str, redis_prefix: str | None = None
) -> AsyncIterator[QuotaStore]:
    """``kind`` on its real backend; ``url`` is the database of the SQL kinds."""
    if kind == "redis":
        async with redis_store(redis_prefix) as store:
            yield store
    elif kind == "memory":
        yield MemoryStore()
    else:
        engine = make_engine(url)
        try:
            yield SqlStore(engine)
        finally:
            await engine.dispose()


async def make_key(url: str, tenant: str) -> Caller:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            t = await queries.get_tenant(session, tenant) or await queries.create_tenant(
                session, tenant
            )
            secret, _ = await queries.create_key(session, t)
            await session.commit()
            info = await queries.lookup_key(session, queries.hash_key(secret))
            assert info is not None
            return info.caller
    finally:
        await engine.dispose()


async def add_policy(url: str, tenant: str, **limits: Any) -> Policy:
    """``set_policy`` in its own committed session (what ``gemini-meter quotas set`` does)."""
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            policy = await set_policy(session, tenant, **limits)
            await session.commit()
            return policy
    finally:
        await engine.dispose()


def budget_for(
    n: float, body: Mapping[str, Any], model: str = MODEL, cat: Catalog | None = None
) -> Decimal:
    """A budget that holds the worst case of about ``n`` calls of this body."""
    cost = estimate_call(cat or catalog(), model, body).cost_usd
    assert cost is not None
    return (cost * Decimal(str(n))).quantize(Decimal("1e-10"))


def body(chars: int = 400, max_output: int | None = 1000) -> dict[str, Any]:
    """A generateContent body of ``chars`` characters of text (``chars / 4`` tokens)."""
    out: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "x" * chars}]}]}
    if max_output is not None:
        out["generationConfig"] = {"maxOutputTokens": max_output}
    return out


@asynccontextmanager
async def service(
    kind: str,
    url: str,
    clock: Clock,
    *,
    redis_prefix: str | None = None,
    hooks: QuotaHooks | None = None,
    hold_seconds: float = 120.0,
    spool_dir: Path | None = None,
) -> AsyncIterator[QuotaService]:
    """A QuotaService on store ``kind``, with its own engine (a replica of its own); settlement
    batches a failing store did not take go to ``spool_dir``/quota (a new temporary one)."""
    engine = make_engine(url)
    spool = spool_dir or Path(tempfile.mkdtemp(prefix="gm-quota-spool-"))
    try:
        async with open_store(kind, url, redis_prefix) as store:
            svc = await QuotaService.create(
                Settings(database_url=url, spool_dir=spool), engine, catalog(), clock=clock,
                hooks=hooks, store=store, hold_seconds=hold_seconds, refresh_interval=0.05,
            )  # fmt: skip
            try:
                yield svc
            finally:
                await svc.aclose()
    finally:
        await engine.dispose()
