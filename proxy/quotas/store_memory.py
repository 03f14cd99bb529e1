"""The in-process quota store: the SQLite default, where one process serves every call.

No method awaits between reading and writing a counter, so on one event loop each call is
atomic without a lock. State lives in memory; what must survive a restart (a period's spend and
tokens) is re-seeded from the ledger by the service (see docs/quotas.md, "Stores").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .store import Charge, CounterState, ReserveResult, Settlement, apply, decide

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Counter:
    expires_at: datetime
    used: int = 0
    holds: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # rid -> amount, until

    def sweep(self, now: datetime) -> None:
        for rid in [r for r, (_, until) in self.holds.items() if until <= now]:
            del self.holds[rid]

    @property
    def state(self) -> CounterState:
        return CounterState(self.used, sum(a for a, _ in self.holds.values()))


class MemoryStore:
    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}

    def _get(self, counter: str, expires_at: datetime, now: datetime) -> _Counter:
        c = self._counters.get(counter)
        if c is None:
            c = self._counters[counter] = _Counter(expires_at)
        c.sweep(now)
        return c

    async def reserve(
        self, rid: str, charges: Sequence[Charge], *, now: datetime, hold_until: datetime
    ) -> ReserveResult:
        counters = [self._get(ch.counter, ch.expires_at, now) for ch in charges]
        states = [c.state for c in counters]
        refused = decide(charges, states)
        if refused is not None:
            return ReserveResult(refused, tuple(states))
        for ch, c in zip(charges, counters, strict=True):
            if ch.kind == "hold":
                c.holds[rid] = (ch.amount, hold_until)
            elif ch.kind == "count":
                c.used += ch.amount
        return ReserveResult(
            None, tuple(apply(ch, s) for ch, s in zip(charges, states, strict=True))
        )

    async def settle(
        self, rid: str, settlements: Sequence[Settlement], *, now: datetime
    ) -> tuple[CounterState, ...]:
        out = []
        for s in settlements:
            c = self._get(s.counter, s.expires_at, now)
            if s.release:
                c.holds.pop(rid, None)
            c.used = max(0, c.used + s.add)
            out.append(c.state)
        return tuple(out)

    async def extend(
        self, holds: Sequence[tuple[str, Sequence[str]]], *, now: datetime, until: datetime
    ) -> None:
        for rid, counters in holds:
            for name in counters:
                c = self._counters.get(name)
                if c is not None and rid in c.holds:
                    c.holds[rid] = (c.holds[rid][0], until)

    async def usage(self, counters: Sequence[str], *, now: datetime) -> tuple[CounterState, ...]:
        out = []
        for name in counters:
            c = self._counters.get(name)
            if c is None:
                out.append(CounterState())
            else:
                live = sum(a for a, until in c.holds.values() if until > now)
                out.append(CounterState(c.used, live))
        return tuple(out)

    async def seed(self, counter: str, used: int, *, now: datetime, expires_at: datetime) -> None:
        if counter not in self._counters:
            self._counters[counter] = _Counter(expires_at, used)

    async def collect(self, *, now: datetime) -> None:
        for name in [n for n, c in self._counters.items() if c.expires_at <= now]:
            del self._counters[name]

    async def aclose(self) -> None:
        self._counters.clear()
