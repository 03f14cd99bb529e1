"""The ledger writer's cadence: events trickling in become one batch per interval, and a flush
writes at once — on SQLite and PostgreSQL; and batches of any size reach the drivers as a few
statement shapes (each shape is prepared and cached per connection)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, func, select

from proxy.db import queries
from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.tables import UsageEvent, UsageRollup
from proxy.metering.ledger import LedgerWriter
from proxy.metering.ledger_event import LedgerEvent
from proxy.usage import Usage


def _batches() -> float:
    return REGISTRY.get_sample_value("gemini_meter_ledger_batches_total") or 0.0


async def _tenant(engine_url: str) -> int:
    engine = make_engine(engine_url)
    try:
        async with make_sessionmaker(engine)() as session:
            t = await queries.create_tenant(session, "cadence")
            await session.commit()
            return t.id
    finally:
        await engine.dispose()


def _event(tenant_id: int) -> LedgerEvent:
    return LedgerEvent(
        tenant_id=tenant_id, key_id=None, model="gemini-2.5-flash", operation="generateContent",
        route="native", streamed=False, status=200, latency_ms=1.0,
        usage=Usage(prompt_tokens=3, output_tokens=4), cost_usd=Decimal("0.0000021"), priced=True,
    )  # fmt: skip


async def _count(engine_url: str) -> tuple[int, int]:
    engine = make_engine(engine_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(UsageEvent))).scalar_one()
            rolled = (await conn.execute(select(func.sum(UsageRollup.requests)))).scalar_one()
            return int(rows), int(rolled or 0)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def running_writer(url: str, **options: Any) -> AsyncIterator[tuple[LedgerWriter, int]]:
    """A started writer on ``url`` and a tenant to write for; stopped (and flushed) on exit."""
    tenant_id = await _tenant(url)
    engine = make_engine(url)
    writer = LedgerWriter(engine, **options)
    writer.start()
    try:
        yield writer, tenant_id
    finally:
        await writer.stop()
        await engine.dispose()


async def test_trickle_is_written_as_one_batch_per_interval(db_url: str) -> None:
    async with running_writer(db_url, batch_size=500, flush_interval=0.5) as (writer, tenant):
        before = _batches()
        # A busy proxy's pace for ~2 s: events keep coming while each batch is being written.
        for _ in range(1000):
            writer.submit(_event(tenant))
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.7)  # the interval has passed: written without a flush
        assert writer.pending == 0
        batches = _batches() - before
        assert batches <= 8, f"{batches} writes for 1,000 events: one per few events"
        assert await _count(db_url) == (1000, 1000)


async def test_flush_writes_without_waiting_for_the_interval(db_url: str) -> None:
    async with running_writer(db_url, batch_size=500, flush_interval=60.0) as (writer, tenant):
        for _ in range(5):
            writer.submit(_event(tenant))
        assert await writer.flush(timeout=10.0)
        assert await _count(db_url) == (5, 5)
        writer.submit(_event(tenant))  # and again, after the writer went back to waiting
        assert await writer.flush(timeout=10.0)
        assert await _count(db_url) == (6, 6)


async def test_a_full_batch_is_written_before_the_interval(sqlite_url: str) -> None:
    async with running_writer(sqlite_url, batch_size=10, flush_interval=60.0) as (writer, tenant):
        for _ in range(25):
            writer.submit(_event(tenant))
        for _ in range(200):  # two full batches go at once; the last 5 wait for the interval
            if writer.pending <= 5:
                break
            await asyncio.sleep(0.05)
        assert writer.pending == 5
        assert await _count(sqlite_url) == (20, 20)
    assert await _count(sqlite_url) == (25, 25)  # stop writes what is left


async def test_stop_with_the_database_down_and_no_spool_returns() -> None:
    # Nowhere durable to put the events: stop makes one last attempt and gives up, rather than
    # spinning on a database it is backing off from. (Nothing listens on port 9.)
    engine = make_engine("postgresql+asyncpg://postgres@127.0.0.1:9/gone")
    writer = LedgerWriter(engine, batch_size=500, flush_interval=0.05, max_backoff=60.0)
    writer.start()
    try:
        writer.submit(_event(1))
        for _ in range(100):  # the first write fails and the writer backs off
            await asyncio.sleep(0.02)
            if writer._failures:
                break
        assert writer._failures >= 1
        await asyncio.wait_for(writer.stop(timeout=60.0), 10.0)  # not held to its timeout
        assert writer.pending == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("n", "sizes"),
    [
        (0, []),
        (1, [1]),
        (7, [4, 2, 1]),
        (128, [128]),
        (129, [128, 1]),
        (500, [128, 128, 128, 64, 32, 16, 4]),
    ],
)
def test_insert_chunks_are_pages_then_powers_of_two(n: int, sizes: list[int]) -> None:
    rows = list(range(n))
    chunks = list(queries.insert_chunks(rows))
    assert [len(c) for c in chunks] == sizes
    assert [r for c in chunks for r in c] == rows  # all of them, in order


async def test_batches_of_every_size_use_a_few_insert_statements(db_url: str) -> None:
    """Before, each batch size was its own SQL: the drivers cached up to 128 of them per
    connection, ~100 MB of prepared statements on SQLite after half an hour of varying load."""
    tenant = await _tenant(db_url)
    engine = make_engine(db_url)
    shapes: dict[bool, set[str]] = {True: set(), False: set()}
    fresh = True

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if re.match(r"\s*INSERT INTO usage_events", statement):
            shapes[fresh].add(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        for fresh in (True, False):
            for n in range(1, 201):
                rows = [_event(tenant).as_row() for _ in range(n)]
                async with engine.begin() as conn:
                    await queries.insert_usage_events(conn, rows, fresh=fresh)
    finally:
        await engine.dispose()
    assert len(shapes[True]) == 1  # the driver's executemany
    assert 1 < len(shapes[False]) <= 8  # multi-row INSERT ... RETURNING, power-of-two chunks
    assert await _count(db_url) == (2 * sum(range(1, 201)), 2 * sum(range(1, 201)))


async def test_a_batch_committed_by_a_write_that_failed_is_not_doubled(db_url: str) -> None:
    """A write that committed but reported a failure (the connection dropped before the
    commit's answer) leaves its rows queued; the retry skips what is already there."""
    failed_once = False

    def commit_then_fail(conn: Any) -> None:
        nonlocal failed_once
        if not failed_once:
            failed_once = True
            conn.connection.dbapi_connection.commit()
            raise ConnectionResetError("connection lost after the commit")

    async with running_writer(db_url, batch_size=500, flush_interval=0.05) as (writer, tenant):
        event.listen(writer._engine.sync_engine, "commit", commit_then_fail)
        for _ in range(30):
            writer.submit(_event(tenant))
        for _ in range(200):
            if writer.pending == 0:
                break
            await asyncio.sleep(0.05)
        assert failed_once and writer.pending == 0
        for _ in range(20):
            writer.submit(_event(tenant))  # and the next batch is fresh again
        assert await writer.flush(timeout=10.0)
        assert writer._offered == 0
    assert await _count(db_url) == (50, 50)


async def test_a_rows_resource_and_detail_are_kept(db_url: str) -> None:
    """An upload's row names its file and keeps what it measured besides tokens."""
    detail = {"bytes": 12_000_000, "mimeType": "video/mp4"}
    async with running_writer(db_url, batch_size=500, flush_interval=60.0) as (writer, tenant):
        event = _event(tenant)
        event.resource, event.detail = "files/abc-123", detail
        writer.submit(event)
        assert await writer.flush(timeout=10.0)
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(select(UsageEvent.__table__))).mappings().one()
    finally:
        await engine.dispose()
    assert (row["resource"], row["detail"]) == ("files/abc-123", detail)
    assert LedgerEvent.from_row(event.as_row()).detail == detail  # as the spool replays it
