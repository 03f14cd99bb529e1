"""The quota store: named integer counters with holds, changed all-or-nothing.

Every store (in process, SQL, Redis) implements :class:`QuotaStore` with the same semantics,
checked by one contract test suite (tests/test_quota_store.py):

- A counter has ``used`` (settled) and ``reserved`` (the sum of its holds), integers in the
  limit's unit. A *hold* belongs to a *holder* — a replica's lease on the counter, or one call —
  and has an expiry: a holder that stops renewing it (a crashed replica) stops holding.
- :meth:`QuotaStore.sync` is the one operation that changes counters. In one atomic step, for
  one holder: it adds settled use, shrinks or drops the holder's hold, admits calls (each
  all-or-nothing over the counters it needs), and grows the hold as far as the limit lets it.
  The deltas of a numbered *batch* apply once per (holder, batch, counter): a retry or a replay
  after a crash never doubles them (:func:`apply_sync`).
- Period counters are not created by a sync: a missing one (never used, or lost — Redis
  flushed, table truncated) is reported, so the service can seed it from the ledger first.

The rules are the pure functions below; the in-process and SQL stores call them on the state
they read (under a lock), the Redis store repeats them in Lua. :class:`HoldOps` builds the
one-call operations of the first version of this protocol (``reserve``, ``settle``, ``extend``)
on top of ``sync``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, Protocol

__all__ = [
    "NO_EXPIRY",
    "Charge",
    "ChargeKind",
    "CounterState",
    "Entry",
    "EntryState",
    "Found",
    "HoldOps",
    "QuotaStore",
    "ReserveResult",
    "Settlement",
    "StoreUnavailable",
    "Sync",
    "SyncResult",
    "apply_sync",
    "fits",
]

# hold:  a hard limit. A call fits if used + reserved + amount <= limit; the amount is held.
# soft:  a soft period limit. A call fits while used < limit; nothing is held.
# count: a request count. A call fits if used + reserved + amount <= limit; it is used at once.
ChargeKind = Literal["hold", "soft", "count"]

NO_EXPIRY = datetime.min.replace(tzinfo=UTC)  # an entry that must not move a counter's expiry


class StoreUnavailable(Exception):
    """The store could not be reached or failed; the service decides to refuse or admit."""


@dataclass(frozen=True, slots=True)
class CounterState:
    used: int = 0
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """One counter in a :class:`Sync`: what the holder changes on it, in this order."""

    counter: str
    kind: ChargeKind
    limit: int
    expires_at: datetime  # when the counter itself may be forgotten (only ever pushed later)
    create: bool = True  # False: a period counter, reported missing rather than made at zero
    spend: int = 0  # added to used (never below zero)                     } once per
    release: int = 0  # taken off the holder's hold (never below zero)      } (holder, batch)
    drop: bool = False  # the holder's hold ends                            } when the sync
    force: int = 0  # added to the holder's hold whatever the limit         } has a batch
    want: int = 0  # added to the holder's hold as far as the limit allows, after the calls


@dataclass(frozen=True, slots=True)
class Sync:
    holder: str
    entries: tuple[Entry, ...]
    # Calls to admit, in order: each a tuple of (entry index, amount), all of them or none.
    calls: tuple[tuple[tuple[int, int], ...], ...] = ()
    batch: int | None = None  # None: the deltas apply every time (one-off operations)


@dataclass(frozen=True, slots=True)
class EntryState:
    used: int
    reserved: int  # every holder's holds, this one's included
    hold: int  # this holder's hold after the sync
    granted: int = 0  # how much of ``want`` was granted

    @property
    def counter(self) -> CounterState:
        return CounterState(self.used, self.reserved)


@dataclass(frozen=True, slots=True)
class SyncResult:
    # Entries whose counter is missing and was not to be created: then nothing was applied.
    missing: tuple[int, ...] = ()
    # Per call: None if admitted, else the position (in the call) of the first amount that
    # did not fit.
    refused: tuple[int | None, ...] = ()
    states: tuple[EntryState, ...] = ()


@dataclass(slots=True)
class Found:
    """A counter as a store read it for one holder (expired holds already released)."""

    used: int = 0
    reserved: int = 0
    hold: int = 0  # the holder's own hold
    mark: int | None = None  # the last batch of this holder applied to the counter


def fits(kind: ChargeKind, limit: int, used: int, reserved: int, amount: int) -> bool:
    if kind == "soft":
        return used < limit
    return used + reserved + amount <= limit


def apply_sync(sync: Sync, found: Sequence[Found]) -> tuple[SyncResult, list[Found]]:
    """The rules every store applies, on the counters of ``sync.entries`` as found (none may
    be missing by then). Returns the result and each counter's new state for this holder."""
    state = [replace(f) for f in found]
    for e, s in zip(sync.entries, state, strict=True):
        if sync.batch is not None and s.mark is not None and s.mark >= sync.batch:
            continue  # this batch already reached this counter
        s.used = max(0, s.used + e.spend)
        cut = s.hold if e.drop else min(e.release, s.hold)
        s.hold += e.force - cut
        s.reserved += e.force - cut
        if sync.batch is not None:
            s.mark = sync.batch
    refused: list[int | None] = []
    for call in sync.calls:
        bad = next(
            (
                pos
                for pos, (i, amount) in enumerate(call)
                if not fits(
                    sync.entries[i].kind,
                    sync.entries[i].limit,
                    state[i].used,
                    state[i].reserved,
                    amount,
                )
            ),
            None,
        )
        refused.append(bad)
        if bad is None:
            for i, amount in call:
                kind = sync.entries[i].kind
                if kind == "hold":
                    state[i].hold += amount
                    state[i].reserved += amount
                elif kind == "count":
                    state[i].used += amount
    out = []
    for e, s in zip(sync.entries, state, strict=True):
        granted = 0
        if e.want > 0 and e.kind != "soft":
            granted = max(0, min(e.want, e.limit - s.used - s.reserved))
            s.hold += granted
            s.reserved += granted
        out.append(EntryState(s.used, s.reserved, s.hold, granted))
    return SyncResult((), tuple(refused), tuple(out)), state


class QuotaStore(Protocol):
    """What the service needs of a store. ``now`` comes from the service's clock, never from
    the store's host, so every replica and every test agrees on expiry."""

    async def sync(self, sync: Sync, *, now: datetime, hold_until: datetime) -> SyncResult:
        """Apply ``sync`` atomically. The holder's hold on each counter named, if any is left,
        lasts at least until ``hold_until`` (a sync renews it; it never shortens it)."""
        ...

    async def usage(self, counters: Sequence[str], *, now: datetime) -> tuple[CounterState, ...]:
        """Read-only: states as of ``now``, expired holds not counted."""
        ...

    async def seed(self, counter: str, used: int, *, now: datetime, expires_at: datetime) -> None:
        """Create the counter with ``used`` if it does not exist yet; otherwise do nothing."""
        ...

    async def rebuild(
        self, counter: str, used: int, *, now: datetime, expires_at: datetime
    ) -> None:
        """Set the counter's ``used`` (creating it if missing); its holds are kept."""
        ...

    async def collect(self, *, now: datetime) -> None:
        """Forget counters past their expiry (and their holds)."""
        ...

    async def aclose(self) -> None: ...

    # One call's holds, on top of sync (HoldOps).

    async def reserve(
        self, rid: str, charges: Sequence[Charge], *, now: datetime, hold_until: datetime
    ) -> ReserveResult: ...

    async def settle(
        self, rid: str, settlements: Sequence[Settlement], *, now: datetime
    ) -> tuple[CounterState, ...]: ...

    async def extend(
        self, holds: Sequence[tuple[str, Sequence[str]]], *, now: datetime, until: datetime
    ) -> None: ...


# -- one call's holds ---------------------------------------------------------------------------


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
class ReserveResult:
    refused: int | None  # index of the first charge that did not fit; None: all applied
    states: tuple[CounterState, ...] = field(default=())  # after, or as found when refused


class HoldOps:
    """``reserve``, ``settle`` and ``extend`` of one call (holder = the call's id), as syncs.
    Stores inherit them; the service itself works with replicas' leases through ``sync``."""

    async def sync(self, sync: Sync, *, now: datetime, hold_until: datetime) -> SyncResult:
        raise NotImplementedError

    async def reserve(
        self, rid: str, charges: Sequence[Charge], *, now: datetime, hold_until: datetime
    ) -> ReserveResult:
        entries = tuple(Entry(c.counter, c.kind, c.limit, c.expires_at) for c in charges)
        call = tuple((i, c.amount) for i, c in enumerate(charges))
        result = await self.sync(Sync(rid, entries, (call,)), now=now, hold_until=hold_until)
        return ReserveResult(result.refused[0], tuple(s.counter for s in result.states))

    async def settle(
        self, rid: str, settlements: Sequence[Settlement], *, now: datetime
    ) -> tuple[CounterState, ...]:
        entries = tuple(
            Entry(s.counter, "hold", 0, s.expires_at, spend=s.add, drop=s.release)
            for s in settlements
        )
        result = await self.sync(Sync(rid, entries), now=now, hold_until=now)
        return tuple(s.counter for s in result.states)

    async def extend(
        self, holds: Sequence[tuple[str, Sequence[str]]], *, now: datetime, until: datetime
    ) -> None:
        for rid, counters in holds:
            entries = tuple(Entry(c, "hold", 0, NO_EXPIRY, create=False) for c in counters)
            await self.sync(Sync(rid, entries), now=now, hold_until=until)
