"""The in-process quota store: the SQLite default, where one process serves every call.

No method awaits between reading and writing a counter, so on one event loop each call is
atomic without a lock. State lives in memory; what must survive a restart (a period's spend and
tokens) is seeded from the ledger by the service when a counter turns out to be missing (see
docs/quotas.md, "Stores").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .store import CounterState, Found, HoldOps, Sync, SyncResult, apply_sync

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Counter:
    expires_at: datetime
    used: int = 0
    holds: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # holder -> amount, until
    marks: dict[str, int] = field(default_factory=dict)  # holder -> last batch applied

    def sweep(self, now: datetime) -> None:
        for rid in [r for r, (_, until) in self.holds.items() if until <= now]:
            del self.holds[rid]

    def reserved(self, now: datetime | None = None) -> int:
        return sum(a for a, until in self.holds.values() if now is None or until > now)


class MemoryStore(HoldOps):
    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}

    def _live(self, name: str, now: datetime) -> _Counter | None:
        c = self._counters.get(name)
        if c is not None and c.expires_at <= now:  # past its expiry: as if forgotten
            del self._counters[name]
            return None
        return c

    async def sync(self, sync: Sync, *, now: datetime, hold_until: datetime) -> SyncResult:
        missing = tuple(
            i
            for i, e in enumerate(sync.entries)
            if not e.create and self._live(e.counter, now) is None
        )
        if missing:
            return SyncResult(missing=missing)
        counters = []
        for e in sync.entries:
            c = self._live(e.counter, now) or self._counters.setdefault(
                e.counter, _Counter(e.expires_at)
            )
            c.sweep(now)
            c.expires_at = max(c.expires_at, e.expires_at)
            counters.append(c)
        found = [
            Found(c.used, c.reserved(), c.holds.get(sync.holder, (0, now))[0],
                  c.marks.get(sync.holder))
            for c in counters
        ]  # fmt: skip
        result, after = apply_sync(sync, found)
        for c, s in zip(counters, after, strict=True):
            c.used = s.used
            if s.mark is not None:
                c.marks[sync.holder] = s.mark
            if s.hold > 0:
                until = max(hold_until, c.holds.get(sync.holder, (0, hold_until))[1])
                c.holds[sync.holder] = (s.hold, until)
            else:
                c.holds.pop(sync.holder, None)
        return result

    async def usage(self, counters: Sequence[str], *, now: datetime) -> tuple[CounterState, ...]:
        out = []
        for name in counters:
            c = self._live(name, now)
            out.append(CounterState() if c is None else CounterState(c.used, c.reserved(now)))
        return tuple(out)

    async def seed(self, counter: str, used: int, *, now: datetime, expires_at: datetime) -> None:
        if self._live(counter, now) is None:
            self._counters[counter] = _Counter(expires_at, used)

    async def rebuild(
        self, counter: str, used: int, *, now: datetime, expires_at: datetime
    ) -> None:
        c = self._live(counter, now) or self._counters.setdefault(counter, _Counter(expires_at))
        c.used = used
        c.expires_at = max(c.expires_at, expires_at)

    async def collect(self, *, now: datetime) -> None:
        for name in [n for n, c in self._counters.items() if c.expires_at <= now]:
            del self._counters[name]

    async def aclose(self) -> None:
        self._counters.clear()
