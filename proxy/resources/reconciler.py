"""The reconciler: meters every batch and long-running operation made through the proxy once it
is done upstream — exactly once, whether or not its client ever polls, from any replica.

Every ``interval`` seconds each replica claims a few unmetered resources whose claim has lapsed
(:func:`proxy.db.resources.claim_due`: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a conditional
``UPDATE`` on SQLite), polls each upstream, and when one is done has its rows written
(``meter``), then marks it metered. A resource not done yet keeps its claim until the next poll
is due (``repoll``): the claim doubles as the poll's schedule. A client polling ``batches.get``
runs the same code on that one resource (:meth:`Reconciler.kick`).

Exactly once: only the claim's holder meters, and the rows' ids are derived from the resource's
name and the response's index, so a holder that crashed after its rows were queued but before
``metered_at`` was set leaves nothing a second run would double (the ledger skips known ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .. import metrics
from ..db import resources as sql
from ..db.tables import Resource

__all__ = ["Meter", "Poll", "Reconciler", "Settled", "state_of"]

log = logging.getLogger("gemini_meter.reconciler")

# The upstream's resource (a batch's or a video's operation), or None: not readable now.
Poll = Callable[[Resource], Awaitable[Mapping[str, Any] | None]]
# Write the rows of a finished resource; True once they are durably queued (written or spooled).
Meter = Callable[[Resource, Mapping[str, Any]], Awaitable[bool]]
# After a resource is marked metered by this replica (its budget correction).
Settled = Callable[[Resource], Awaitable[None]]


def state_of(op: Mapping[str, Any]) -> str:
    """A batch's state (``metadata.state``), else DONE / RUNNING for an operation."""
    meta = op.get("metadata")
    state = meta.get("state") if isinstance(meta, Mapping) else None
    if isinstance(state, str):
        return state[:48]
    return "DONE" if op.get("done") is True else "RUNNING"


class Reconciler:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        poll: Poll,
        meter: Meter,
        settled: Settled | None = None,
        interval: float = 30.0,
        repoll: float = 30.0,
        lease: float = 300.0,
        batch: int = 20,
        timeout: float = 5.0,
        holder: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._poll = poll
        self._meter = meter
        self._settled = settled
        self._interval = interval
        self._repoll = timedelta(seconds=repoll)
        self._lease = timedelta(seconds=lease)
        self._batch = batch
        self._timeout = timeout
        self.holder = holder or uuid.uuid4().hex  # this replica's claims
        self._clock = clock or (lambda: datetime.now(UTC))
        self._task: asyncio.Task[None] | None = None
        self._kicked: set[asyncio.Task[bool]] = set()
        self._running: dict[str, asyncio.Task[bool]] = {}  # kicked, by name
        self.metered = 0  # resources this replica metered (for tests and logs)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="resource-reconciler")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._kicked) if t is not None]
        self._task = None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bug or an outage must not stop the loop: next round
                log.exception("reconciler round failed")
            await asyncio.sleep(self._interval)

    # -- work -----------------------------------------------------------------------------

    async def tick(self) -> int:
        """One round: claim what is due, poll it, meter what is done. Returns how many."""
        now = self._clock()

        async def claim(session: AsyncSession) -> list[Resource]:
            return await sql.claim_due(
                session, self.holder, lease=self._lease, limit=self._batch, now=now
            )

        rows = await self._db(claim)
        done = 0
        for row in rows or ():
            done += await self._handle(row)
        backlog = await self._db(sql.count_unmetered)
        for kind, n in (backlog or {}).items():
            metrics.UNMETERED.labels(kind).set(n)
        return done

    def kick(self, name: str) -> None:
        """Meter ``name`` now if it is done and nobody holds it (a client polled it): in the
        background, so the client's reply never waits on it."""
        if name in self._running:
            return
        task = asyncio.create_task(self._reconcile(name), name="reconcile-one")
        self._running[name] = task
        self._kicked.add(task)
        task.add_done_callback(self._kicked.discard)
        task.add_done_callback(lambda _: self._running.pop(name, None))

    async def reconcile(self, name: str) -> bool:
        """Claim one resource and meter it if done; False if claimed elsewhere or not done.
        If this replica is metering it already (a client's poll kicked it), wait for that."""
        running = self._running.get(name)
        if running is not None:
            return await asyncio.shield(running)
        return await self._reconcile(name)

    async def _reconcile(self, name: str) -> bool:
        now = self._clock()

        async def claim(session: AsyncSession) -> Resource | None:
            if not await sql.claim_one(session, name, self.holder, lease=self._lease, now=now):
                return None
            return await session.get(Resource, name)

        row = await self._db(claim)
        return row is not None and await self._handle(row)

    async def _handle(self, row: Resource) -> bool:
        try:
            op = await self._poll(row)
        except Exception:
            log.exception("polling %s failed", row.name)
            op = None
        outcome = metrics.RECONCILED.labels
        if op is None or op.get("done") is not True:
            state = None if op is None else state_of(op)
            await self._later(row.name, state)
            outcome(row.kind, "pending" if op is not None else "failed").inc()
            return False
        try:
            durable = await self._meter(row, op)
        except Exception:
            log.exception("metering %s failed; retried after its claim lapses", row.name)
            outcome(row.kind, "failed").inc()
            return False
        if not durable:
            log.warning("rows of %s not durable yet; metered again later", row.name)
            await self._later(row.name, state_of(op))
            outcome(row.kind, "failed").inc()
            return False
        now = self._clock()

        async def mark(session: AsyncSession) -> bool:
            return await sql.mark_metered(
                session, row.name, self.holder, state=state_of(op), now=now
            )

        if await self._db(mark):
            self.metered += 1
            outcome(row.kind, "metered").inc()
            if self._settled is not None:
                try:
                    await self._settled(row)
                except Exception:
                    log.exception("settling %s failed", row.name)
            return True
        return False

    async def _later(self, name: str, state: str | None) -> None:
        """Schedule the next poll (and remember the state seen): ``claimed_until`` keeps other
        replicas' loops away until then; ``claimed_by`` is cleared, so a client's poll may
        meter it sooner."""
        values: dict[str, Any] = {"claimed_until": self._clock() + self._repoll, "claimed_by": None}
        if state is not None:
            values["state"] = state

        async def job(session: AsyncSession) -> None:
            await session.execute(
                update(Resource)
                .where(Resource.name == name, Resource.claimed_by == self.holder)
                .values(**values)
            )

        await self._db(job)

    async def _db(self, job: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        """Run ``job`` in a committed transaction; None if the database did not answer."""
        try:
            async with asyncio.timeout(self._timeout), self._sessionmaker() as session:
                result = await job(session)
                await session.commit()
                return result
        except (TimeoutError, SQLAlchemyError, OSError) as exc:
            log.warning("reconciler: database unavailable (%s)", type(exc).__name__)
            return None
