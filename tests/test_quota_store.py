"""One contract, every quota store: in process, SQL on SQLite, SQL on PostgreSQL, Redis — each on
its real backend. A store passes when it cannot be told apart from the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from proxy.quotas.store import Charge, CounterState, QuotaStore, Settlement
from tests.test_quota_fixtures import STORE_KINDS, open_store, resolve_backend

NOW = datetime(2026, 3, 10, 12, 0, 10, tzinfo=UTC)
LATER = NOW + timedelta(days=2)  # counters' expiry
HOLD = NOW + timedelta(minutes=2)
S = CounterState


@pytest.fixture(params=STORE_KINDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    return resolve_backend(request)


@pytest.fixture
async def store(backend: tuple[str, str]) -> AsyncIterator[QuotaStore]:
    async with open_store(*backend) as s:
        yield s


def hold(counter: str, limit: int, amount: int) -> Charge:
    return Charge(counter, "hold", limit, amount, LATER)


def count(counter: str, limit: int, amount: int = 1) -> Charge:
    return Charge(counter, "count", limit, amount, LATER)


def soft(counter: str, limit: int) -> Charge:
    return Charge(counter, "soft", limit, 0, LATER)


def pay(counter: str, add: int, release: bool = True) -> Settlement:
    return Settlement(counter, add, release, LATER)


async def refused(
    store: QuotaStore, rid: str, *charges: Charge, now: datetime = NOW, until: datetime = HOLD
) -> int | None:
    """Reserve; the index of the charge that did not fit, None when all applied."""
    return (await store.reserve(rid, charges, now=now, hold_until=until)).refused


async def test_holds_fit_until_the_limit(store: QuotaStore) -> None:
    first = await store.reserve("r1", [hold("t1:usd", 100, 60)], now=NOW, hold_until=HOLD)
    assert first.refused is None and first.states == (S(0, 60),)
    second = await store.reserve("r2", [hold("t1:usd", 100, 41)], now=NOW, hold_until=HOLD)
    assert second.refused == 0 and second.states == (S(0, 60),)  # as found
    third = await store.reserve("r3", [hold("t1:usd", 100, 40)], now=NOW, hold_until=HOLD)
    assert third.refused is None and third.states == (S(0, 100),)
    assert await store.usage(["t1:usd", "t1:none"], now=NOW) == (S(0, 100), S(0, 0))


async def test_settle_replaces_the_hold_by_the_real_use(store: QuotaStore) -> None:
    await refused(store, "r1", hold("t1:usd", 100, 60))
    assert await store.settle("r1", [pay("t1:usd", 25)], now=NOW) == (S(25, 0),)
    # A second release of the same reservation frees nothing more.
    await refused(store, "r2", hold("t1:usd", 100, 70))
    assert await store.settle("r1", [pay("t1:usd", 0)], now=NOW) == (S(25, 70),)
    assert await refused(store, "r3", hold("t1:usd", 100, 6)) == 0


async def test_charges_apply_all_or_nothing(store: QuotaStore) -> None:
    charges = [hold("t1:usd", 100, 10), count("t1:rpm", 1), hold("t1:tok", 50, 60)]
    assert await refused(store, "r1", *charges) == 2
    assert await store.usage(["t1:usd", "t1:rpm", "t1:tok"], now=NOW) == (S(),) * 3
    ok = await store.reserve("r2", charges[:2], now=NOW, hold_until=HOLD)
    assert ok.refused is None and ok.states == (S(0, 10), S(1, 0))


async def test_counts_are_used_at_once_and_refuse_past_the_limit(store: QuotaStore) -> None:
    for i in range(3):
        result = await store.reserve(f"r{i}", [count("t1:rpm", 3)], now=NOW, hold_until=HOLD)
        assert result.refused is None and result.states == (S(i + 1, 0),)
    assert await refused(store, "r9", count("t1:rpm", 3)) == 0
    # A token count fits only whole; a later correction may lower it, never below zero.
    assert await refused(store, "a", count("t1:tpm", 100, 80)) is None
    assert await refused(store, "b", count("t1:tpm", 100, 30)) == 0
    assert await store.settle("a", [pay("t1:tpm", -50, False)], now=NOW) == (S(30, 0),)
    assert await store.settle("a", [pay("t1:tpm", -500, False)], now=NOW) == (S(0, 0),)


async def test_soft_limits_check_spent_only_and_hold_nothing(store: QuotaStore) -> None:
    assert await refused(store, "r1", soft("t1:usd", 100)) is None
    assert await store.settle("r1", [pay("t1:usd", 150, False)], now=NOW) == (S(150, 0),)
    assert await refused(store, "r2", soft("t1:usd", 100)) == 0


async def test_expired_holds_are_released(store: QuotaStore) -> None:
    """A crashed replica never settles: its holds stop counting at their expiry."""
    await refused(store, "dead", hold("t1:usd", 100, 90))
    await refused(store, "live", hold("t1:usd", 100, 10), until=HOLD + timedelta(hours=1))
    assert await refused(store, "x", hold("t1:usd", 100, 50)) == 0
    after = HOLD + timedelta(seconds=1)
    assert await store.usage(["t1:usd"], now=after) == (S(0, 10),)
    result = await store.reserve(
        "y", [hold("t1:usd", 100, 50)], now=after, hold_until=after + timedelta(minutes=2)
    )
    assert result.refused is None and result.states == (S(0, 60),)
    # The dead call settling late still counts what it used, but frees nothing twice.
    assert await store.settle("dead", [pay("t1:usd", 5)], now=after) == (S(5, 60),)


async def test_extend_keeps_live_holds(store: QuotaStore) -> None:
    await refused(store, "r1", hold("t1:usd", 100, 70))
    await store.extend([("r1", ["t1:usd"])], now=NOW, until=HOLD + timedelta(minutes=5))
    after = HOLD + timedelta(minutes=1)
    assert await store.usage(["t1:usd"], now=after) == (S(0, 70),)
    assert await refused(store, "r2", hold("t1:usd", 100, 40), now=after, until=after) == 0


async def test_seed_only_creates(store: QuotaStore) -> None:
    await store.seed("t1:usd", 40, now=NOW, expires_at=LATER)
    await store.seed("t1:usd", 99, now=NOW, expires_at=LATER)
    assert await store.usage(["t1:usd"], now=NOW) == (S(40, 0),)
    assert await refused(store, "r1", hold("t1:usd", 100, 61)) == 0


async def test_collect_forgets_expired_counters(store: QuotaStore) -> None:
    await refused(store, "r1", hold("t1:old", 100, 5))
    await store.settle("r1", [pay("t1:old", 5)], now=NOW)
    gone = LATER + timedelta(seconds=1)
    await store.collect(now=gone)
    assert await store.usage(["t1:old"], now=gone) == (S(),)


async def test_concurrent_reservations_never_overcommit(store: QuotaStore) -> None:
    """50 at once against room for 10: exactly 10 fit, whatever the interleaving."""
    charges = (hold("t1:usd", 1000, 100), count("t1:rpm", 10_000))
    results = await asyncio.gather(*(refused(store, f"r{i}", *charges) for i in range(50)))
    admitted = [i for i, r in enumerate(results) if r is None]
    assert len(admitted) == 10 and set(results) == {None, 0}
    assert await store.usage(["t1:usd", "t1:rpm"], now=NOW) == (S(0, 1000), S(10, 0))
    settles = (store.settle(f"r{i}", [pay("t1:usd", 100)], now=NOW) for i in admitted)
    await asyncio.gather(*settles)
    assert await store.usage(["t1:usd"], now=NOW) == (S(1000, 0),)
