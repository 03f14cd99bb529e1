"""Retention: drop raw ledger rows older than N days; the hourly rollups keep their sums."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ..db.queries import delete_events_before

__all__ = ["Retention"]

log = logging.getLogger("gemini_meter.retention")

CHUNK = 10_000  # rows per transaction: short locks, no long-running delete


class Retention:
    def __init__(self, engine: AsyncEngine, days: int, *, every: float = 3600.0) -> None:
        self._engine = engine
        self._days = days
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="ledger-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self, now: datetime | None = None) -> int:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self._days)
        total = 0
        while True:
            async with self._engine.begin() as conn:
                n = await delete_events_before(conn, cutoff, CHUNK)
            total += n
            if n < CHUNK:
                break
        if total:
            log.info("retention: dropped %d ledger rows older than %s", total, cutoff.isoformat())
        return total

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # the database may be down: the next round tries again
                log.exception("retention run failed")
            await asyncio.sleep(self._every)
