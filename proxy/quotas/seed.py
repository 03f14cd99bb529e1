"""Period counters start from the ledger when the period began before anyone was counting.

A process that restarts mid-month (the in-process store forgets everything), or a policy set
mid-month (no counter existed), must not forget the spend the ledger already holds for that
period. So before a process first uses a period counter, it seeds it with the ledger's totals
since the period's start — but only when the period began before this process first saw the
policy (in its current version). A period that begins while the process runs is counted from
zero, as every call in it is counted as it settles. ``QuotaStore.seed`` only creates, so a
counter another replica already keeps is left as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from .manage import ledger_totals
from .plan import Line
from .policy import Policy, usd_to_units
from .store import QuotaStore, StoreUnavailable

__all__ = ["PERIOD_LIMITS", "Seeder"]

PERIOD_LIMITS = ("budget_usd", "tokens")


class Seeder:
    def __init__(self, engine: AsyncEngine, store: QuotaStore) -> None:
        self._engine = engine
        self._store = store
        self._first_seen: dict[tuple[int, datetime], datetime] = {}  # policy version -> time
        self._done: dict[str, datetime] = {}  # counter -> its expiry
        self._locks: dict[str, asyncio.Lock] = {}

    def saw(self, policies: Sequence[Policy], now: datetime) -> None:
        """Note when each policy version was first seen (the service's refresh calls this)."""
        self._first_seen = {
            (p.id, p.updated_at): self._first_seen.get((p.id, p.updated_at), now) for p in policies
        }

    async def ensure(self, lines: Sequence[Line], now: datetime) -> None:
        """Seed the period counters of ``lines`` this process has not used yet."""
        for line in lines:
            name = line.charge.counter
            if line.limit not in PERIOD_LIMITS or name in self._done:
                continue
            # Concurrent first calls on one counter: one reads the ledger, the others wait.
            async with self._locks.setdefault(name, asyncio.Lock()):
                if name not in self._done:
                    await self._seed(line, now)
                    self._done[name] = line.charge.expires_at
            self._locks.pop(name, None)

    async def _seed(self, line: Line, now: datetime) -> None:
        p = line.policy
        if line.period_start >= self._first_seen.get((p.id, p.updated_at), now):
            return
        try:
            async with self._engine.connect() as conn:
                usd, tokens = await ledger_totals(
                    conn, p.tenant_id, p.key_id, line.period_start, now
                )
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"ledger: {exc}") from exc
        used = usd_to_units(usd) if line.limit == "budget_usd" else tokens
        await self._store.seed(
            line.charge.counter, used, now=now, expires_at=line.charge.expires_at
        )

    def forget(self, now: datetime) -> None:
        self._done = {n: exp for n, exp in self._done.items() if exp > now}
