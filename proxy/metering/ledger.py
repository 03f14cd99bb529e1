"""The ledger writer: events queued in memory, written in batches, spooled when the DB is down.

Requests only append to an in-memory queue (no await, no I/O). One background task writes
batches, each in one transaction. When a write fails because the database did not answer, the
batch goes to a durable local spool (see spool.py) and the writer backs off; spooled batches are
replayed once the database answers again, at start-up too. Event ids make every insert
idempotent, so a retry or a replay never doubles a row.

When the database answers but refuses the data (proxy/db/faults.py), the batch is split in
halves until the refused rows stand alone: the others are written, the refused ones set aside
in the spool's dead-letter directory, counted and logged — one bad row never takes its batch
down, and no spool file can hold up the ones behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from .. import metrics
from ..db.faults import rows_refused
from ..db.queries import insert_usage_events, touch_keys
from .ledger_event import LedgerEvent, is_derived_id
from .spool import Spool

__all__ = ["LedgerEvent", "LedgerWriter"]

log = logging.getLogger("gemini_meter.ledger")


class LedgerWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_backoff: float = 5.0,
        spool: Spool | None = None,
    ) -> None:
        self._engine = engine
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._spool = spool
        self._queue: deque[LedgerEvent] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._urgent = False  # a flush is waiting: write what is queued without delay
        self._failures = 0
        self._retry_at = 0.0  # monotonic time before which the database is not tried again
        self._spooled = 0  # events in the spool, as far as this process knows
        # Events at the head of the queue that a failed write offered to the database: it may
        # have committed them anyway, so they are written the slower, duplicate-proof way.
        self._offered = 0
        self._tried: set[Path] = set()  # spool files whose replay failed in this round
        self.written = 0
        # Events ever queued, and how many of them (a prefix: the queue is first in, first
        # out) are durable — written, spooled or set aside. See wait_durable.
        self.submitted = 0
        self.durable = 0
        self._progress = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, event: LedgerEvent) -> None:
        """Queue one event. Never blocks and never raises on the request path."""
        self._queue.append(event)
        self.submitted += 1
        self._idle.clear()
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._closing = False  # (a writer may be started again after a stop)
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued so far is written or spooled; False on timeout."""
        self._urgent = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_durable(self, mark: int, timeout: float) -> bool:
        """Wait until the first ``mark`` events ever submitted are durable (written, spooled
        or set aside) — those queued before reading ``submitted``, however busy the writer
        stays after them; False on timeout."""
        self._urgent = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.durable < mark:
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), deadline - loop.time())
            except TimeoutError:
                return self.durable >= mark
        return True

    def _made_durable(self, n: int) -> None:
        if n > 0:
            self.durable += n
            self._progress.set()

    async def stop(self, timeout: float = 30.0) -> None:
        """Write (or spool) what is queued, then stop the writer."""
        self._closing = True
        self._retry_at = 0.0  # one last attempt at the database, backoff or not
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._queue and self._spool is not None:
            await self._to_spool(list(self._queue))
            self._made_durable(len(self._queue))
            self._queue.clear()
        if self._queue:
            log.error("ledger stopped with %d events unwritten", len(self._queue))

    # -- the writer task ---------------------------------------------------------------------

    async def _run(self) -> None:
        if self._spool is not None:  # batches a previous run left behind
            await asyncio.to_thread(self._spool.discard_partial)
            self._spooled = await self.spool_depth()
            metrics.LEDGER_SPOOL_DEPTH.set(self._spooled)
        while True:
            if not self._queue:
                if not self._closing:
                    await self._replay_one()
                if not self._queue:  # (events may have come while the replay ran)
                    self._urgent = False
                    self._idle.set()
                    if self._closing:
                        return
            metrics.LEDGER_QUEUE_DEPTH.set(len(self._queue))
            if len(self._queue) < self._batch_size and not (self._closing or self._urgent):
                # One write per interval, not one per handful of events: each write has a fixed
                # cost (transaction, statements, commit) on the loop that serves the calls.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval)
                if not self._queue:
                    continue
            batch = [self._queue[i] for i in range(min(self._batch_size, len(self._queue)))]
            try:
                rest = await self._write_or_spool(batch)
            except Exception:  # a bug must not stop the ledger: keep the events, retry later
                log.exception("ledger writer failed on a batch of %d events", len(batch))
                self._failures += 1
                rest = batch
            for _ in batch:
                self._queue.popleft()
            # What is not durable yet goes back to the head of the queue, for the next attempt.
            self._queue.extendleft(reversed(rest))
            self._made_durable(len(batch) - len(rest))
            self._offered = len(rest) + max(0, self._offered - len(batch))
            if rest:
                if self._closing:
                    return  # the last attempt failed and there is no spool: stop() reports it
                await asyncio.sleep(self._backoff())

    async def _write_or_spool(self, batch: list[LedgerEvent]) -> list[LedgerEvent]:
        """Make the batch durable — in the database, set aside, or else in the spool; returns
        the events that are none of these (the spool too failed, or there is none)."""
        rest = batch
        if time.monotonic() >= self._retry_at:
            rest = await self._write_isolating(batch, fresh=self._offered == 0)
        if not rest or self._spool is None:
            return rest  # without a spool the rest stays queued; retried after the backoff
        try:
            await self._to_spool(rest)
        except OSError:
            log.exception("ledger spool write failed; %d events stay in memory", len(rest))
            return rest
        return []

    async def _write_isolating(
        self, events: list[LedgerEvent], *, fresh: bool = False
    ) -> list[LedgerEvent]:
        """Write ``events``; rows the database refuses are isolated (halving the batch until
        they stand alone) and set aside. Returns the events left unwritten because the
        database failed (an outage): the caller spools or keeps them."""
        todo = [events]
        refused: list[tuple[LedgerEvent, str]] = []
        unwritten: list[LedgerEvent] = []
        while todo:
            part = todo.pop()
            try:
                # Only the whole first attempt may be fresh: after a refusal a part may hold an
                # id already written (a duplicate is a refusal too), which the slow way skips.
                # A derived id (a batch's response) may be in the table already: never fresh.
                plain = fresh and part is events and not any(is_derived_id(e.id) for e in part)
                await self._write(part, fresh=plain)
            except Exception as exc:
                if not rows_refused(exc):
                    unwritten = [*part, *(e for p in reversed(todo) for e in p)]
                    self._failed(exc, len(unwritten))
                    break
                if len(part) == 1:
                    refused.append((part[0], _reason(exc)))
                else:
                    half = len(part) // 2
                    todo += [part[half:], part[:half]]
                continue
            self._failures = 0
            self.written += len(part)
            metrics.LEDGER_BATCHES.inc()
        if refused and not await self._set_aside(refused):
            unwritten += [e for e, _ in refused]
        return unwritten

    async def _set_aside(self, refused: list[tuple[LedgerEvent, str]]) -> bool:
        """Keep refused rows in the dead-letter directory (or, with no spool, in the log)."""
        ids = ", ".join(e.id for e, _ in refused[:10]) + (", ..." if len(refused) > 10 else "")
        where = "the log (no spool)"
        if self._spool is not None:
            try:
                where = str(await asyncio.to_thread(self._spool.set_aside, refused))
            except OSError:
                log.exception("cannot set aside %d refused ledger rows; kept", len(refused))
                return False
        else:
            for event, reason in refused:
                log.error("refused ledger row (%s): %s", reason, event.as_row())
        metrics.LEDGER_DEAD_LETTERED.inc(len(refused))
        log.error(
            "the database refused %d ledger row(s) (%s): set aside in %s — ids %s; "
            "see docs/operations.md to repair and replay them",
            len(refused), refused[0][1], where, ids,
        )  # fmt: skip
        return True

    async def _replay_one(self) -> None:
        """Replay one spooled batch if the database is thought to be up: the oldest one not
        tried since the last round, so a file that keeps failing never holds up later ones."""
        if self._spool is None or time.monotonic() < self._retry_at:
            return
        files = [f for f in await asyncio.to_thread(self._spool.files) if f not in self._tried]
        if not files:
            self._tried.clear()  # every file had its turn: the next round starts over
            return
        path = files[0]
        try:
            events = await asyncio.to_thread(self._spool.read, path)
        except FileNotFoundError:
            return
        except Exception:  # not JSON lines of events (a torn or hand-edited file)
            log.exception("unreadable spool file %s; moved aside", path.name)
            await asyncio.to_thread(path.rename, path.with_suffix(".bad"))
            return
        written = self.written
        unwritten: list[LedgerEvent] = []
        for i in range(0, len(events), self._batch_size):
            unwritten = await self._write_isolating(events[i : i + self._batch_size])
            if unwritten:
                unwritten += events[i + self._batch_size :]
                break
        done = len(events) - len(unwritten)
        if done:  # written or set aside: never offered again
            await asyncio.to_thread(self._spool.replace, path, unwritten)
        if unwritten:
            self._tried.add(path)
        metrics.LEDGER_REPLAYED.inc(self.written - written)
        self._spooled = max(0, self._spooled - done)
        metrics.LEDGER_SPOOL_DEPTH.set(self._spooled)
        if done:
            log.info("replayed %d spooled ledger events from %s", done, path.name)

    async def _to_spool(self, batch: list[LedgerEvent]) -> None:
        assert self._spool is not None
        await asyncio.to_thread(self._spool.append, batch)
        metrics.LEDGER_SPOOLED.inc(len(batch))
        self._spooled += len(batch)
        metrics.LEDGER_SPOOL_DEPTH.set(self._spooled)

    def _failed(self, exc: Exception, n: int) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + self._backoff()
        metrics.LEDGER_WRITE_FAILURES.inc()
        # One traceback per outage, not one per batch.
        log.error(
            "ledger write of %d events failed (%s: %s), attempt %d",
            n, type(exc).__name__, str(exc)[:200], self._failures,
            exc_info=self._failures == 1,
        )  # fmt: skip

    def _backoff(self) -> float:
        return float(min(self._max_backoff, 0.1 * 2 ** max(0, self._failures - 1)))

    async def _write(self, batch: list[LedgerEvent], *, fresh: bool = False) -> None:
        last_used: dict[int, datetime] = {}
        for e in batch:
            if e.key_id is not None:
                last_used[e.key_id] = max(e.created_at, last_used.get(e.key_id, e.created_at))
        async with self._engine.begin() as conn:
            await insert_usage_events(conn, [e.as_row() for e in batch], fresh=fresh)
            await touch_keys(conn, last_used)

    async def spool_depth(self) -> int:
        return 0 if self._spool is None else await asyncio.to_thread(self._spool.depth)


def _reason(exc: BaseException) -> str:
    """The database's one-line reason for refusing a row (no SQL, no parameters)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {text}"[:300]
