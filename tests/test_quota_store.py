"""One contract, every quota store: in process, SQL on SQLite, SQL on PostgreSQL, Redis — each on
its real backend. A store passes when it cannot be told apart from the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proxy.quotas.store import (
    Charge,
    CounterState,
    Entry,
    QuotaStore,
    Settlement,
    Sync,
    SyncResult,
)
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


# -- sync: leases, numbered batches, missing counters ------------------------------------------


def entry(counter: str, limit: int = 100, **kw: Any) -> Entry:
    kind = kw.pop("kind", "hold")
    return Entry(counter, kind, limit, LATER, **kw)


async def sync(
    store: QuotaStore, holder: str, *entries: Entry, calls: Any = (), batch: int | None = None,
    now: datetime = NOW, until: datetime = HOLD,
) -> SyncResult:  # fmt: skip
    return await store.sync(Sync(holder, entries, tuple(calls), batch), now=now, hold_until=until)


def held(result: SyncResult) -> list[tuple[int, int, int, int]]:
    return [(s.used, s.reserved, s.hold, s.granted) for s in result.states]


async def test_a_numbered_batch_applies_once_per_holder_and_counter(store: QuotaStore) -> None:
    """A retry after a lost reply, or a replay after a crash, never doubles a settlement."""
    first = await sync(store, "a", entry("t1:usd", want=50), batch=1)
    assert held(first) == [(0, 50, 50, 50)]
    paid = entry("t1:usd", spend=30, release=30)
    assert held(await sync(store, "a", paid, batch=2)) == [(30, 20, 20, 0)]
    assert held(await sync(store, "a", paid, batch=2)) == [(30, 20, 20, 0)]  # the same again
    assert held(await sync(store, "a", paid, batch=1)) == [(30, 20, 20, 0)]  # an older one
    # Another holder's batches are its own; an unnumbered sync applies every time.
    assert held(await sync(store, "b", entry("t1:usd", spend=5), batch=2)) == [(35, 20, 0, 0)]
    assert held(await sync(store, "b", entry("t1:usd", spend=5))) == [(40, 20, 0, 0)]
    assert held(await sync(store, "b", entry("t1:usd", spend=5))) == [(45, 20, 0, 0)]
    # A batch touching two counters, one of which it already reached, completes the other.
    both = (entry("t1:usd", spend=1), entry("t1:tok", spend=7))
    await sync(store, "a", both[0], batch=3)
    assert held(await sync(store, "a", *both, batch=3)) == [(45 + 1, 20, 20, 0), (7, 0, 0, 0)]


async def test_calls_are_admitted_in_order_each_all_or_nothing(store: QuotaStore) -> None:
    usd, rpm = entry("t1:usd", 100), entry("t1:rpm", 3, kind="count")
    calls = [((0, 40), (1, 1))] * 4  # room for two budgets' worth, three requests
    result = await sync(store, "a", usd, rpm, calls=calls)
    assert result.refused == (None, None, 0, 0)
    assert held(result) == [(0, 80, 80, 0), (2, 0, 0, 0)]  # requests count at once
    small = await sync(store, "b", usd, rpm, calls=[((0, 30), (1, 1)), ((0, 10), (1, 1))])
    assert small.refused == (0, None)  # the second fits where the first did not
    assert held(small) == [(0, 90, 10, 0), (3, 0, 0, 0)]
    assert (await sync(store, "b", usd, rpm, calls=[((0, 1), (1, 1))])).refused == (1,)


async def test_a_lease_grows_as_far_as_the_limit_and_shrinks_on_demand(store: QuotaStore) -> None:
    assert held(await sync(store, "a", entry("t1:usd", want=70))) == [(0, 70, 70, 70)]
    assert held(await sync(store, "b", entry("t1:usd", want=70))) == [(0, 100, 30, 30)]
    assert held(await sync(store, "b", entry("t1:usd", want=1))) == [(0, 100, 30, 0)]
    assert held(await sync(store, "a", entry("t1:usd", release=50))) == [(0, 50, 20, 0)]
    # Restoring coverage the store lost ignores the limit: those calls are in flight.
    assert held(await sync(store, "a", entry("t1:usd", force=90))) == [(0, 140, 110, 0)]
    assert held(await sync(store, "a", entry("t1:usd", drop=True))) == [(0, 30, 0, 0)]
    soft = entry("t1:soft", 10, kind="soft", spend=12, want=5)
    assert held(await sync(store, "a", soft)) == [(12, 0, 0, 0)]  # soft limits lease nothing
    assert (
        await sync(store, "a", entry("t1:soft", 10, kind="soft"), calls=[((0, 0),)])
    ).refused == (0,)


async def test_a_missing_period_counter_is_reported_and_nothing_applies(store: QuotaStore) -> None:
    """A counter lost (or never made) must be seeded from the ledger before it counts again."""
    made = entry("t1:rpm", kind="count", spend=2)
    period = entry("t1:usd", create=False, spend=5)
    result = await sync(store, "a", made, period, calls=[((0, 1),)], batch=1)
    assert result.missing == (1,) and result.states == ()
    assert await store.usage(["t1:rpm", "t1:usd"], now=NOW) == (S(0, 0), S(0, 0))
    await store.seed("t1:usd", 40, now=NOW, expires_at=LATER)
    result = await sync(store, "a", made, period, calls=[((0, 1),)], batch=1)
    assert result.refused == (None,) and held(result) == [(3, 0, 0, 0), (45, 0, 0, 0)]


async def test_rebuild_sets_used_and_keeps_the_holds(store: QuotaStore) -> None:
    await sync(store, "a", entry("t1:usd", 1000, spend=300, want=50))
    await store.rebuild("t1:usd", 120, now=NOW, expires_at=LATER)
    assert await store.usage(["t1:usd"], now=NOW) == (S(120, 50),)
    await store.rebuild("t1:new", 7, now=NOW, expires_at=LATER)  # made if missing
    assert await store.usage(["t1:new"], now=NOW) == (S(7, 0),)


async def test_a_sync_renews_the_holders_holds_and_never_shortens_them(store: QuotaStore) -> None:
    await sync(store, "a", entry("t1:usd", want=60), until=HOLD + timedelta(minutes=10))
    await sync(store, "a", entry("t1:usd", release=10), until=HOLD)  # a shorter renewal
    later = HOLD + timedelta(minutes=5)
    assert await store.usage(["t1:usd"], now=later) == (S(0, 50),)
    gone = HOLD + timedelta(minutes=11)
    assert held(await sync(store, "b", entry("t1:usd", want=100), now=gone)) == [(0, 100, 100, 100)]
