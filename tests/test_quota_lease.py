"""Lease arithmetic (proxy/quotas/lease.py, pure functions) and one counter as a replica sees
it (proxy/quotas/account.py): tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.quotas.account import Account
from proxy.quotas.lease import (
    EXACT_CALLS,
    HORIZON_SECONDS,
    MIN_CALLS,
    SHARE,
    free_room,
    is_exact,
    lease_change,
    rate_update,
    target_free,
)
from proxy.quotas.plan import Line
from proxy.quotas.policy import Policy
from proxy.quotas.store import Charge, CounterState, EntryState


@pytest.mark.parametrize(
    ("limit", "used", "reserved", "own_spare", "free"),
    [
        (100, 0, 0, 0, 100),
        (100, 30, 50, 0, 20),
        (100, 30, 50, 10, 30),  # this replica's own spare counts as free
        (100, 90, 50, 0, 0),  # over (a call cost more than its worst case): never negative
    ],
)
def test_free_room(limit: int, used: int, reserved: int, own_spare: int, free: int) -> None:
    assert free_room(limit, used, reserved, own_spare) == free


@pytest.mark.parametrize(
    ("free", "typical", "exact"),
    [
        (EXACT_CALLS * 100 - 1, 100, True),  # less than EXACT_CALLS of the largest call: exact
        (EXACT_CALLS * 100, 100, False),
        (EXACT_CALLS - 1, 0, True),  # no call seen yet: one unit stands for it
        (10**15, 65_536, False),
    ],
)
def test_leases_stop_near_the_end(free: int, typical: int, exact: bool) -> None:
    assert is_exact(free, typical) is exact


@pytest.mark.parametrize(
    ("free", "typical", "rate", "target"),
    [
        (31 * 10, 10, 1000.0, 0),  # near the end: no spare at all
        (10**9, 10, 0.0, MIN_CALLS * 10),  # idle counter: a few calls' worth
        (10**9, 10, 5000.0, int(5000 * HORIZON_SECONDS)),  # busy: a horizon of its rate
        (4000, 10, 5000.0, 4000 // SHARE),  # capped at a share of the room left
        (400, 10, 0.0, 40),  # MIN_CALLS x 10 = 40 <= 400 // 4 = 100
    ],
)
def test_target_free(free: int, typical: int, rate: float, target: int) -> None:
    assert target_free(free, typical, rate) == target


@pytest.mark.parametrize(
    ("spare", "target", "idle", "exact", "change"),
    [
        (0, 100, False, False, (0, 100)),  # empty: fill to the target
        (40, 100, False, False, (0, 60)),  # under half: top up
        (60, 100, False, False, (0, 0)),  # between half and twice: leave it
        (200, 100, False, False, (0, 0)),
        (250, 100, False, False, (150, 0)),  # over twice (the room left fell): give back
        (250, 100, True, False, (250, 0)),  # idle: everything back
        (250, 0, False, True, (250, 0)),  # near the end: everything back
        (0, 0, False, True, (0, 0)),
    ],
)
def test_lease_change(
    spare: int, target: int, idle: bool, exact: bool, change: tuple[int, int]
) -> None:
    assert lease_change(spare, target, idle=idle, exact=exact) == change


@pytest.mark.parametrize(
    ("rate", "taken", "seconds", "expected"),
    [
        (0.0, 100, 2.0, 25.0),  # one half-life: half of the new rate (50/s)
        (100.0, 0, 2.0, 50.0),  # decays by half per half-life
        (100.0, 10, 0.0, 100.0),  # no time passed: unchanged
        (10.0, 1000, 200.0, 5.0),  # long ago: the new rate alone
    ],
)
def test_rate_update(rate: float, taken: int, seconds: float, expected: float) -> None:
    assert rate_update(rate, taken, seconds) == pytest.approx(expected, rel=1e-6)


# -- one counter as a replica sees it (proxy/quotas/account.py) ------------------------------


def account(kind: str = "hold", limit: int = 1000) -> Account:
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    policy = Policy(1, 1, "t", None, None, "hard", "month", None, limit, None, None, None, now)
    charge = Charge("t1:*:tokens:m2026-03", kind, limit, 0, now + timedelta(days=30))  # type: ignore[arg-type]
    return Account(Line(policy, "tokens", charge, "month", now, now + timedelta(days=21)), True)


def test_calls_are_admitted_against_the_lease_only() -> None:
    a = account()
    assert not a.take(1)  # never synced: the store decides
    a.synced(EntryState(used=100, reserved=300, hold=200), now=0.0)
    assert (a.hold, a.spare) == (200, 200)
    assert a.take(150) and not a.take(51) and a.take(50)
    assert (a.held, a.spare) == (200, 0)
    # The state a call is told: others' holds (100) plus this replica's calls in flight.
    assert a.state() == CounterState(100, 100 + 200)


def test_a_settlement_moves_through_pending_sending_and_the_store() -> None:
    a = account()
    a.synced(EntryState(used=0, reserved=200, hold=200), now=0.0)
    a.take(120)
    a.calls = 1
    a.settle("hold", 120, 30)  # held 120 gives way to 30 used: 90 spare again
    assert (a.held, a.pending, a.spare) == (0, 30, 170)
    d = a.freeze(give_back=100)
    assert (d.spend, d.give_back, d.entry().release) == (30, 100, 130)
    assert (a.pending, a.sending, a.shrinking, a.hold, a.spare) == (0, 30, 100, 100, 70)
    assert a.state() == CounterState(30, 0)
    a.applied(d)
    a.synced(EntryState(used=30, reserved=70, hold=70), now=1.0)
    assert (a.sending, a.shrinking, a.hold, a.spare) == (0, 0, 70, 70)
    a.check_cover()
    assert a.force == 0


@pytest.mark.parametrize(
    ("store_hold", "held", "pending", "force"),
    [
        (200, 150, 0, 0),  # covered
        (0, 150, 20, 170),  # the store lost the hold (expired, Redis flushed): restore it all
        (100, 150, 0, 50),  # a call cost more than its worst case
    ],
)
def test_what_the_store_lost_is_restored(
    store_hold: int, held: int, pending: int, force: int
) -> None:
    a = account()
    a.synced(EntryState(used=0, reserved=store_hold, hold=store_hold), now=0.0)
    a.held, a.pending = held, pending
    a.check_cover()
    assert a.force == force
