"""The quota store: named integer counters with reservations, changed all-or-nothing.

Every store (in process, SQL, Redis) implements :class:`QuotaStore` with the same semantics,
checked by one contract test suite (tests/test_quota_store.py):

- A counter has ``used`` (settled) and ``reserved`` (held by calls in flight), both integers in
  the limit's unit. It is created at zero on first use and may be forgotten after ``expires_at``.
- :meth:`QuotaStore.reserve` applies a call's charges atomically: either every charge fits and
  all apply, or none does and the first that did not fit is reported. Expired holds on the
  counters involved are released first, in the same atomic step.
- :meth:`QuotaStore.settle` releases the call's holds and adds what it really used.

The rules of fitting and applying are the pure functions below; the in-process and SQL stores
call them on the state they read (under a lock), the Redis store repeats them in Lua.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

__all__ = [
    "Charge",
    "ChargeKind",
    "CounterState",
    "QuotaStore",
    "ReserveResult",
    "Settlement",
    "StoreUnavailable",
    "apply",
    "decide",
    "fits",
]

# hold:  a hard period limit. Fits if used + reserved + amount <= limit; amount is held.
# soft:  a soft period limit. Fits while used < limit; nothing is held, settle adds the real use.
# count: a rate window. Fits if used + amount <= limit; amount is added to used at once.
ChargeKind = Literal["hold", "soft", "count"]


class StoreUnavailable(Exception):
    """The store could not be reached or failed; the service decides to refuse or admit."""


@dataclass(frozen=True, slots=True)
class Charge:
    counter: str
    kind: ChargeKind
    limit: int
    amount: int
    expires_at: datetime  # when the counter itself may be forgotten


@dataclass(frozen=True, slots=True)
class Settlement:
    counter: str
    add: int  # added to used; a negative amount corrects an over-count, never below zero
    release: bool  # drop this reservation's hold on the counter, if it still has one
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CounterState:
    used: int = 0
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class ReserveResult:
    refused: int | None  # index of the first charge that did not fit; None: all applied
    states: tuple[CounterState, ...]  # per charge: after applying, or as found when refused


def fits(charge: Charge, state: CounterState) -> bool:
    if charge.kind == "hold":
        return state.used + state.reserved + charge.amount <= charge.limit
    if charge.kind == "soft":
        return state.used < charge.limit
    return state.used + charge.amount <= charge.limit


def decide(charges: Sequence[Charge], states: Sequence[CounterState]) -> int | None:
    for i, (charge, state) in enumerate(zip(charges, states, strict=True)):
        if not fits(charge, state):
            return i
    return None


def apply(charge: Charge, state: CounterState) -> CounterState:
    if charge.kind == "hold":
        return CounterState(state.used, state.reserved + charge.amount)
    if charge.kind == "count":
        return CounterState(state.used + charge.amount, state.reserved)
    return state


class QuotaStore(Protocol):
    """What the service needs of a store. ``now`` comes from the service's clock, never from
    the store's host, so every replica and every test agrees on expiry."""

    async def reserve(
        self, rid: str, charges: Sequence[Charge], *, now: datetime, hold_until: datetime
    ) -> ReserveResult: ...

    async def settle(
        self, rid: str, settlements: Sequence[Settlement], *, now: datetime
    ) -> tuple[CounterState, ...]:
        """Release ``rid``'s holds where asked and add the use; the states after, in order."""
        ...

    async def extend(
        self, holds: Sequence[tuple[str, Sequence[str]]], *, now: datetime, until: datetime
    ) -> None:
        """Push the expiry of live holds ``(rid, counters)`` to ``until`` (a heartbeat)."""
        ...

    async def usage(self, counters: Sequence[str], *, now: datetime) -> tuple[CounterState, ...]:
        """Read-only: states as of ``now``, expired holds not counted."""
        ...

    async def seed(self, counter: str, used: int, *, now: datetime, expires_at: datetime) -> None:
        """Create the counter with ``used`` if it does not exist yet; otherwise do nothing."""
        ...

    async def collect(self, *, now: datetime) -> None:
        """Forget counters past their expiry (and their holds)."""
        ...

    async def aclose(self) -> None: ...
