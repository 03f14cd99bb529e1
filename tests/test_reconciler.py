"""The reconciler's parts, on SQLite and PostgreSQL: claims two replicas never share, a claim
that lapses passes on, a resource not done keeps its claim until its next poll, metering that
fails or is not durable leaves it unmetered; derived ledger ids are written once; the pure
readers of batch and video results; a batch's worst case at batch rates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from proxy.caller import Caller
from proxy.db import queries
from proxy.db import resources as sql
from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.tables import Resource, UsageEvent, UsageRollup
from proxy.metering.ledger import LedgerWriter
from proxy.metering.ledger_event import LedgerEvent, derived_event_id, is_derived_id, new_event_id
from proxy.metering.spool import Spool
from proxy.pipeline.resources import (
    _lines,
    batch_results,
    generated_files,
    http_status_of,
    video_result,
)
from proxy.pricing.catalog import Catalog
from proxy.quotas.estimate import batch_estimate, batch_factor, estimate_call
from proxy.resources import Owners
from proxy.resources.reconciler import Reconciler, state_of
from proxy.usage import Usage

A = Caller(tenant_id=1, tenant_name="team-a", key_id=11)
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
CATALOG = Catalog.load("gemini-api", None, "vertex-ai")


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[AsyncSession]]]:
    engine = make_engine(db_url)
    try:
        yield engine, make_sessionmaker(engine)
    finally:
        await engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Upstream:
    """What the reconciler's poll and meter see: a state per name, and what was metered."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.metered: list[str] = []
        self.polls: list[str] = []
        self.durable = True
        self.fail = False

    async def poll(self, row: Resource) -> Mapping[str, Any] | None:
        self.polls.append(row.name)
        return {"name": row.name, "done": row.name in self.done}

    async def meter(self, row: Resource, op: Mapping[str, Any]) -> bool:
        if self.fail:
            raise RuntimeError("boom")
        self.metered.append(row.name)
        return self.durable


async def add_batches(sm: async_sessionmaker[AsyncSession], n: int) -> list[str]:
    owners = Owners(sm, timeout=5)
    names = [f"batches/b{i}" for i in range(n)]
    for name in names:
        await owners.add(name, "batch", A, model="gemini-2.5-flash")
    await owners.add("files/f", "file", A)  # never claimed: files are not metered
    return names


def replica(
    sm: async_sessionmaker[AsyncSession], up: Upstream, clock: Clock, holder: str
) -> Reconciler:
    return Reconciler(
        sm, poll=up.poll, meter=up.meter, holder=holder, clock=clock, repoll=30, lease=300,
        batch=50,
    )  # fmt: skip


async def test_two_replicas_never_claim_the_same_resource(
    db: tuple[AsyncEngine, async_sessionmaker[AsyncSession]],
) -> None:
    _, sm = db
    names = await add_batches(sm, 6)

    async def claim(holder: str) -> list[str]:
        async with sm() as session:
            rows = await sql.claim_due(session, holder, lease=timedelta(minutes=5), limit=4, now=T0)
            await session.commit()
            return [r.name for r in rows]

    first, second = await asyncio.gather(claim("r1"), claim("r2"))
    assert not set(first) & set(second) and set(first) | set(second) <= set(names)
    third = await claim("r3")
    assert sorted(first + second + third) == names  # every batch, once; the file never
    async with sm() as session:
        later = T0 + timedelta(minutes=6)  # the claims lapsed: another replica may take over
        rows = await sql.claim_due(session, "r4", lease=timedelta(minutes=5), limit=10, now=later)
        await session.commit()
    assert sorted(r.name for r in rows) == names and {r.claimed_by for r in rows} == {"r4"}


async def test_a_batch_is_polled_until_done_then_metered_once(
    db: tuple[AsyncEngine, async_sessionmaker[AsyncSession]],
) -> None:
    _, sm = db
    [name] = await add_batches(sm, 1)
    up, clock = Upstream(), Clock()
    r1, r2 = replica(sm, up, clock, "r1"), replica(sm, up, clock, "r2")
    assert await r1.tick() == 0 and up.polls == [name]
    assert await r2.tick() == 0 and up.polls == [name]  # r1 keeps it until its next poll
    async with sm() as session:
        row = await session.get(Resource, name)
        # Its next poll is scheduled; nobody meters it meanwhile, so a client's poll may.
        assert row is not None and row.state == "RUNNING" and row.claimed_by is None
        assert row.claimed_until is not None
    up.done.add(name)
    clock.now += timedelta(seconds=31)
    assert await r2.tick() == 1 and up.metered == [name]
    clock.now += timedelta(hours=1)
    assert await r1.tick() == 0 and await r2.tick() == 0 and up.metered == [name]
    assert not await r1.reconcile(name)  # a client's poll meters nothing more either
    async with sm() as session:
        row = await session.get(Resource, name)
        assert row is not None and row.metered_at is not None and row.state == "DONE"


async def test_a_clients_poll_need_not_wait_for_the_next_round(
    db: tuple[AsyncEngine, async_sessionmaker[AsyncSession]],
) -> None:
    _, sm = db
    [name] = await add_batches(sm, 1)
    up, clock = Upstream(), Clock()
    loop, client = replica(sm, up, clock, "r1"), replica(sm, up, clock, "r2")
    assert await loop.tick() == 0  # not done: next poll in 30 s
    up.done.add(name)
    assert await loop.tick() == 0 and up.metered == []  # the loop keeps to its schedule
    assert await client.reconcile(name) and up.metered == [name]  # a poll meters it now
    assert not await loop.reconcile(name) and up.metered == [name]
    async with sm() as session:
        row = await session.get(Resource, name)
        assert row is not None and row.metered_at is not None and row.state == "DONE"


async def test_metering_that_fails_or_is_not_durable_is_tried_again(
    db: tuple[AsyncEngine, async_sessionmaker[AsyncSession]],
) -> None:
    _, sm = db
    [name] = await add_batches(sm, 1)
    up, clock = Upstream(), Clock()
    up.done.add(name)
    r = replica(sm, up, clock, "r1")
    up.fail = True
    assert await r.tick() == 0
    clock.now += timedelta(minutes=6)  # the claim lapses
    up.fail, up.durable = False, False
    assert await r.tick() == 0 and up.metered == [name]
    clock.now += timedelta(seconds=31)
    up.durable = True
    assert await r.tick() == 1 and up.metered == [name, name]
    assert r.metered == 1


async def test_a_lost_claim_does_not_mark(
    db: tuple[AsyncEngine, async_sessionmaker[AsyncSession]],
) -> None:
    _, sm = db
    [name] = await add_batches(sm, 1)
    async with sm() as session:
        assert await sql.claim_one(session, name, "r1", lease=timedelta(minutes=5), now=T0)
        assert not await sql.claim_one(session, name, "r2", lease=timedelta(minutes=5), now=T0)
        await session.commit()
    async with sm() as session:
        assert not await sql.mark_metered(session, name, "r2", state="DONE", now=T0)
        assert await sql.mark_metered(session, name, "r1", state="DONE", now=T0)
        await session.commit()


# -- derived ids: the ledger writes a re-metered row once -------------------------------------


async def test_a_derived_id_is_written_once_and_never_set_aside(
    db: tuple[AsyncEngine, async_sessionmaker[AsyncSession]], tmp_path: Path
) -> None:
    engine, sm = db
    async with sm() as session:
        tenant = await queries.create_tenant(session, "derived")
        await session.commit()

    def event() -> LedgerEvent:
        return LedgerEvent(
            tenant_id=tenant.id, key_id=None, model="gemini-2.5-flash",
            operation="batchGenerateContent", route="reconciler", streamed=False, status=200,
            latency_ms=0.0, usage=Usage(prompt_tokens=3, output_tokens=4),
            cost_usd=Decimal("0.000001"), priced=True, resource="batches/x",
            id=derived_event_id("batches/x", 0),
        )  # fmt: skip

    dead = REGISTRY.get_sample_value("gemini_meter_ledger_dead_letter_events_total") or 0.0
    for _ in range(2):  # two runs (a crash, a second replica), each a fresh writer
        writer = LedgerWriter(engine, flush_interval=0.01, spool=Spool(tmp_path / "spool"))
        writer.start()
        writer.submit(event())
        assert await writer.flush(5)
        await writer.stop()
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(UsageEvent))).scalar_one() == 1
        assert (await conn.execute(select(func.sum(UsageRollup.requests)))).scalar_one() == 1
    assert (
        REGISTRY.get_sample_value("gemini_meter_ledger_dead_letter_events_total") or 0.0
    ) == dead


def test_derived_ids_are_stable_distinct_and_told_apart() -> None:
    a = derived_event_id("batches/x", 0)
    assert a == derived_event_id("batches/x", 0) and len(a) == 32 and is_derived_id(a)
    assert a != derived_event_id("batches/x", 1) != derived_event_id("batches/y", 1)
    assert derived_event_id("batches/x1", 0) != derived_event_id("batches/x", 10)
    assert not is_derived_id(new_event_id())


# -- pure readers ---------------------------------------------------------------------------

INLINE = [{"response": {"usageMetadata": {"promptTokenCount": 1}}}, {"error": {"code": 8}}]


@pytest.mark.parametrize(
    ("op", "results"),
    [
        ({"response": {"inlinedResponses": {"inlinedResponses": INLINE}}}, INLINE),
        ({"metadata": {"output": {"inlinedResponses": {"inlinedResponses": INLINE}}}}, INLINE),
        ({"response": {"responsesFile": "files/out"}}, "files/out"),
        ({"metadata": {"output": {"responsesFile": "files/out"}}}, "files/out"),
        ({"response": {"responsesFile": "https://elsewhere/x"}}, None),
        ({"done": True, "error": {"code": 1}}, None),  # cancelled before any result
        ({"response": {"inlinedResponses": "nope"}}, None),
    ],
)
def test_batch_results(op: dict[str, Any], results: Any) -> None:
    assert batch_results(op) == results


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ({"code": 3, "message": "bad"}, 400), ({"code": 8}, 429), ({"code": 5}, 404),
        ({"code": 13}, 500), ({"code": 404}, 404), ({"status": "PERMISSION_DENIED"}, 403),
        ({"status": "WHATEVER"}, 500), (None, 500), ({"code": True}, 500), ({"code": 99}, 500),
    ],
)  # fmt: skip
def test_http_status_of_an_rpc_status(error: Any, status: int) -> None:
    assert http_status_of(error) == status


@pytest.mark.parametrize(
    ("op", "videos"),
    [
        ({"response": {"generateVideoResponse": {"generatedSamples": [{}, {}]}}}, 2),
        ({"response": {"generateVideoResponse": {"raiMediaFilteredCount": 1}}}, 0),
        ({"response": {}}, 0),
        ({"error": {"code": 3}}, 0),
    ],
)
def test_video_result(op: dict[str, Any], videos: int) -> None:
    assert video_result(op) == videos


@pytest.mark.parametrize(
    ("op", "state"),
    [
        ({"metadata": {"state": "BATCH_STATE_RUNNING"}}, "BATCH_STATE_RUNNING"),
        ({"done": True}, "DONE"),
        ({"name": "x"}, "RUNNING"),
    ],
)
def test_state_of(op: dict[str, Any], state: str) -> None:
    assert state_of(op) == state


async def test_results_file_lines_as_they_download() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for c in (b'{"a"', b':1}\n\n{"b":2}\n{"c"', b":3}"):
            yield c

    assert [line async for line in _lines(chunks())] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


# -- a batch's worst case at batch rates ----------------------------------------------------

REQUEST = {
    "contents": [{"parts": [{"text": "x" * 400}]}],
    "generationConfig": {"maxOutputTokens": 100},
}


@pytest.mark.parametrize(
    ("model", "factor"),
    [
        ("gemini-2.5-flash", Decimal("0.5")),  # Vertex AI's batch columns: half price
        ("gemini-2.5-pro", Decimal("0.5")),
        ("gemini-2.0-flash", Decimal("0.75")),  # standard on gemini-api, batch on vertex-ai
        ("no-such-model", Decimal(1)),  # never held below its standard worst case
    ],
)
def test_batch_factor(model: str, factor: Decimal) -> None:
    assert batch_factor(CATALOG, model) == factor


def test_a_batch_holds_the_sum_of_its_requests_at_batch_rates() -> None:
    one = estimate_call(CATALOG, "gemini-2.5-flash", REQUEST)
    assert one.cost_usd is not None
    est = batch_estimate(CATALOG, "gemini-2.5-flash", [REQUEST] * 3, batch_factor=Decimal("0.5"))
    assert (est.prompt_tokens, est.max_output_tokens) == (300, 300)
    assert est.cost_usd == one.cost_usd * 3 / 2
    unpriced = batch_estimate(CATALOG, "no-such-model", [REQUEST], batch_factor=Decimal(1))
    assert unpriced.cost_usd is None and unpriced.prompt_tokens == 100


async def test_wait_durable_waits_for_the_rows_queued_before_it_only(
    db: tuple[AsyncEngine, async_sessionmaker[AsyncSession]], tmp_path: Path
) -> None:
    engine, sm = db
    async with sm() as session:
        tenant = await queries.create_tenant(session, "durable")
        await session.commit()

    def event() -> LedgerEvent:
        return LedgerEvent(
            tenant_id=tenant.id, key_id=None, model="gemini-2.5-flash", operation="x",
            route="reconciler", streamed=False, status=200, latency_ms=0.0,
        )  # fmt: skip

    writer = LedgerWriter(engine, flush_interval=30)  # only a waiter makes it write early
    writer.start()
    try:
        for _ in range(3):
            writer.submit(event())
        mark = writer.submitted
        writer.submit(event())  # queued after the mark
        assert await writer.wait_durable(mark, 5) and writer.durable >= mark == 3
        async with engine.connect() as conn:
            n = (await conn.execute(select(func.count()).select_from(UsageEvent))).scalar_one()
        assert n >= 3
    finally:
        await writer.stop()
    assert writer.durable == writer.submitted == 4


async def test_wait_durable_says_no_when_nothing_can_take_the_rows(tmp_path: Path) -> None:
    engine = make_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # nothing listens
    writer = LedgerWriter(engine, flush_interval=0.01)  # no spool, no database
    writer.start()
    try:
        writer.submit(
            LedgerEvent(
                tenant_id=1,
                key_id=None,
                model="m",
                operation="x",
                route="reconciler",
                streamed=False,
                status=200,
                latency_ms=0.0,
            )
        )
        assert not await writer.wait_durable(writer.submitted, 0.3)
    finally:
        await writer.stop(timeout=0.5)
        await engine.dispose()


VEO_URI = "https://generativelanguage.googleapis.com/v1beta/files/{}:download?alt=media"


@pytest.mark.parametrize(
    ("op", "files"),
    [
        ({"response": {"responsesFile": "files/out"}}, ["files/out"]),
        ({"response": {"inlinedResponses": {"inlinedResponses": INLINE}}}, []),
        (
            {"response": {"generateVideoResponse": {"generatedSamples": [
                {"video": {"uri": VEO_URI.format("abc123")}},
                {"video": {"uri": "https://elsewhere.example/v1beta/files/x9:download"}},
                {"video": {"uri": "https://x/none"}}, {"video": {}}, "junk",
            ]}}},
            ["files/abc123", "files/x9"],
        ),
        ({"done": True, "error": {"code": 3}}, []),
    ],
)  # fmt: skip
def test_generated_files(op: dict[str, Any], files: list[str]) -> None:
    assert generated_files(op) == files
