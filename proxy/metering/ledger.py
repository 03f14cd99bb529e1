"""The ledger: one event per metered call, queued in memory and written in batches.

Requests only append to an in-memory queue (no await, no I/O); one background task writes
batches in single transactions. A failed batch stays at the head of the queue and is retried
with backoff, and ids make the insert idempotent, so a retry never doubles a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .. import metrics
from ..db.queries import insert_usage_events, touch_keys

__all__ = ["LedgerEvent", "LedgerWriter"]

log = logging.getLogger("gemini_meter.ledger")


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class LedgerEvent:
    tenant_id: int
    key_id: int | None
    model: str
    operation: str
    route: str
    streamed: bool
    status: int
    latency_ms: float
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    tool_use_prompt_tokens: int = 0
    audio_prompt_tokens: int = 0
    cached_audio_tokens: int = 0
    output_image_tokens: int = 0
    output_audio_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False
    cost_usd: Decimal | None = None
    priced: bool = False
    price_list: str | None = None
    price_version: str | None = None
    ttfb_ms: float | None = None
    response_id: str | None = None
    model_version: str | None = None
    error_class: str | None = None
    end_user: str | None = None
    retries: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = field(default_factory=new_event_id)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


class LedgerWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_backoff: float = 5.0,
    ) -> None:
        self._engine = engine
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._queue: deque[LedgerEvent] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, event: LedgerEvent) -> None:
        """Queue one event. Never blocks and never raises on the request path."""
        self._queue.append(event)
        self._idle.clear()
        metrics.LEDGER_QUEUE_DEPTH.set(len(self._queue))
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued so far is written; False on timeout."""
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued (up to ``timeout``), then stop the writer."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._queue:
            log.error("ledger stopped with %d events unwritten", len(self._queue))

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval)
                continue
            batch = [self._queue[i] for i in range(min(self._batch_size, len(self._queue)))]
            try:
                await self._write(batch)
            except Exception:  # any database failure: keep the batch, back off, retry
                failures += 1
                metrics.LEDGER_WRITE_FAILURES.inc()
                log.exception("ledger write of %d events failed (attempt %d)", len(batch), failures)
                if self._closing and failures >= 3:
                    return
                await asyncio.sleep(min(self._max_backoff, 0.1 * 2**failures))
                continue
            failures = 0
            for _ in batch:
                self._queue.popleft()
            self.written += len(batch)
            metrics.LEDGER_BATCHES.inc()
            metrics.LEDGER_QUEUE_DEPTH.set(len(self._queue))

    async def _write(self, batch: list[LedgerEvent]) -> None:
        started = time.perf_counter()
        last_used: dict[int, datetime] = {}
        for e in batch:
            if e.key_id is not None:
                last_used[e.key_id] = max(e.created_at, last_used.get(e.key_id, e.created_at))
        async with self._engine.begin() as conn:
            await insert_usage_events(conn, [e.as_row() for e in batch])
            await touch_keys(conn, last_used)
        log.debug(
            "wrote %d ledger events in %.1f ms", len(batch), (time.perf_counter() - started) * 1e3
        )
