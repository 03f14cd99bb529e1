"""The one task that talks to the quota store for this replica: one sync at a time.

Each round is a single :meth:`QuotaStore.sync` (one Lua script, one SQL transaction) that
carries, for every counter with something to say:

- the head *batch*: use settled here, spare given back, holds to restore or drop — numbered,
  so the store applies it once however often it is sent (a retry after a timeout, a replay
  after a crash);
- the calls waiting for the store (their lease lacked room, or the counter is near its end),
  each admitted all-or-nothing;
- top-ups of leases, heartbeats of holds, fresh readings of soft limits.

A batch that fails is written to disk (:mod:`proxy.quotas.pending`) and sent again — never
dropped — until the store takes it; meanwhile the local accounts keep counting it, and its
holds stay, renewed by every later sync. Calls waiting for the store get an answer within the
timeout: refused, admitted, or "store unavailable" (the service turns it into 503 or an
uncounted admission). A counter the store does not have is seeded from the ledger first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from .account import Account, Delta
from .pending import Batch, SettlementSpool
from .store import Entry, EntryState, QuotaStore, StoreUnavailable, Sync, SyncResult

__all__ = ["Syncer"]

log = logging.getLogger("gemini_meter.quotas")

SYNC_INTERVAL = 0.25  # seconds between syncs while there is use to send or leases to adjust
SOFT_FRESH = 0.5  # a soft limit's reading older than this is refreshed at the next sync
FREEZE_INTERVAL = 0.2  # while the store fails: use settled since is batched and spooled
ORPHAN_INTERVAL = 30.0  # how often dead processes' spooled batches are looked for
MAX_BACKOFF = 2.0

Seed = Callable[[str, datetime, datetime], Awaitable[None]]  # counter, expires_at, now
Report = Callable[[Account, EntryState, int], None]  # account, state after, use it added


@dataclass(slots=True, eq=False)
class _Waiter:
    pairs: tuple[tuple[Account, int], ...]
    call: bool  # False: a reading only (status)
    future: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Round:
    sync: Sync
    batch: Batch | None
    waiters: list[_Waiter]
    accounts: list[Account | None]


class Syncer:
    def __init__(
        self,
        store: QuotaStore,
        holder: str,
        *,
        clock: Callable[[], datetime],
        hold: timedelta,
        timeout: float,
        seed: Seed,
        report: Report,
        synced: Callable[[bool, int], None] | None = None,
        spool: SettlementSpool | None = None,
    ) -> None:
        self.store = store
        self.holder = holder
        self.accounts: dict[str, Account] = {}
        self._clock = clock
        self._hold = hold
        self._timeout = timeout
        self._seed = seed
        self._report = report
        self._synced = synced or (lambda ok, n: None)
        self._spool = spool
        self._batches: deque[Batch] = deque()
        self._waiters: list[_Waiter] = []
        self._seq = 0
        self._wake = asyncio.Event()
        self._round_done = asyncio.Event()
        self._urgent = False
        self._release = False  # give back every spare unit (drain)
        self._failures = 0
        self._retry_at = 0.0
        self._last_freeze = 0.0
        self._beat_at = 0.0
        self._orphans_at = 0.0
        self._quiet_until = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- what the service asks ------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="quota-sync")

    def poke(self, urgent: bool = False) -> None:
        if urgent:
            self._urgent = True
            self._wake.set()

    async def admit(
        self, pairs: tuple[tuple[Account, int], ...], *, call: bool = True
    ) -> int | None:
        """Ask the store to admit a call needing ``pairs`` (account, amount): None if admitted
        (holds now cover it), else the position of the first pair that did not fit. Raises
        StoreUnavailable if the store gave no answer within the timeout."""
        w = _Waiter(pairs, call)
        self._waiters.append(w)
        self._urgent = True
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(w.future), self._timeout)
        except TimeoutError:
            raise StoreUnavailable("quota store: no answer in time") from None
        finally:
            if not w.future.done():
                w.future.cancel()  # a late grant becomes spare, given back at a later sync
            with contextlib.suppress(ValueError):
                self._waiters.remove(w)

    async def read(self, accounts: list[Account]) -> None:
        """Sync these counters once (seeding missing ones): a fresh reading for status."""
        if accounts:
            await self.admit(tuple((a, 0) for a in accounts), call=False)

    def idle(self, release: bool) -> bool:
        """Nothing left to send (and, with ``release``, no spare held)."""
        return not self._batches and not any(
            a.dirty() or a.sending or (release and a.kind != "soft" and a.spare > 0)
            for a in self.accounts.values()
        )

    async def flush(self, *, release: bool, timeout: float) -> bool:
        """Send every use settled so far (and give back every spare unit if ``release``);
        False if the store did not take it all within ``timeout``."""
        deadline = time.monotonic() + timeout
        self._release = self._release or release
        try:
            while not self.idle(release):
                left = deadline - time.monotonic()
                if left <= 0 or self._task is None or self._task.done():
                    return False
                self._round_done.clear()
                self._urgent = True
                self._wake.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._round_done.wait(), left)
            return True
        finally:
            if release:
                self._release = False

    async def close(self, timeout: float) -> None:
        """Flush and give back every lease; what the store cannot take goes to disk."""
        await self.flush(release=True, timeout=timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        now = time.monotonic()
        for a in self.accounts.values():
            a.plan(now, release=True)
        self._freeze(now, release=True)
        await self._spool_all()
        pending = sum(b.use for b in self._batches)
        if pending:
            log.error("quota: %d settlement batches not confirmed by the store at shutdown%s",
                      len(self._batches),
                      "; kept on disk for the next start" if self._spool else "")  # fmt: skip

    def pending_batches(self) -> int:
        return len(self._batches)

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            if not self._urgent:
                self._wake.clear()
                wait = max(SYNC_INTERVAL, self._retry_at - now) if self._failures else (
                    SYNC_INTERVAL)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            self._urgent = False
            # While failing, only waiting calls (or the backoff's end) bring the next attempt:
            # a call must get its answer, and a store that came back is used at once.
            if self._failures and not self._waiters and time.monotonic() < self._retry_at:
                await self._keep()
                continue
            try:
                await self._round()
                if time.monotonic() >= self._orphans_at and not self._failures:
                    await self._replay_orphans()
            except Exception:  # a bug here must not stop the quota accounting
                log.exception("quota: sync round failed")
                await asyncio.sleep(SYNC_INTERVAL)
            finally:
                self._round_done.set()

    async def _round(self) -> None:
        now_m, now = time.monotonic(), self._clock()
        self._housekeep(now)
        plans = {c: a.plan(now_m, release=self._release) for c, a in self.accounts.items()}
        if not self._batches or (self._failures and now_m - self._last_freeze >= FREEZE_INTERVAL):
            self._freeze(now_m, plans=plans)
        rnd = self._build(now, now_m, plans)
        if rnd is None:
            return
        try:
            result = await self._send(rnd.sync, now)
        except (StoreUnavailable, TimeoutError) as exc:
            await self._failed(exc, rnd)
            self._synced(False, len(self._batches))
            return
        self._apply(rnd, result, now_m)
        self._synced(True, len(self._batches))
        if self._batches:
            self._urgent = True  # the store is back with a backlog: send it without a pause

    async def _send(self, sync: Sync, now: datetime) -> SyncResult:
        """One sync, seeding counters the store reports missing (then sending it again)."""
        for _ in range(3):
            try:
                result = await asyncio.wait_for(
                    self.store.sync(sync, now=now, hold_until=now + self._hold), self._timeout
                )
            except TimeoutError:
                raise StoreUnavailable("quota store: no answer in time") from None
            if not result.missing:
                return result
            for i in result.missing:
                e = sync.entries[i]
                await asyncio.wait_for(self._seed(e.counter, e.expires_at, now), self._timeout)
        raise StoreUnavailable("quota store: counters missing after seeding")

    # -- building a round -------------------------------------------------------------------

    def _housekeep(self, now: datetime) -> None:
        for name, a in list(self.accounts.items()):
            over = a.line.resets_at <= now
            if over and a.line.charge.expires_at <= now:
                a.pending = a.force = 0  # the store has forgotten the counter: nothing to add
            if over and not a.calls and a.hold > 0:
                a.drop = True
            if not a.busy() and (over or time.monotonic() - a.last_use > 60.0):
                del self.accounts[name]

    def _freeze(
        self, now_m: float, *, plans: dict[str, tuple[int, int]] | None = None,
        release: bool = False,
    ) -> None:  # fmt: skip
        deltas: dict[str, Delta] = {}
        for name, a in self.accounts.items():
            give = (plans or {}).get(name, (0, 0))[0]
            if release and a.kind != "soft":
                give = max(0, a.spare)
            if a.dirty() or give > 0:
                deltas[name] = a.freeze(give)
        if deltas:
            self._seq += 1
            self._batches.append(Batch(self.holder, self._seq, deltas))
            self._last_freeze = now_m

    def _build(
        self, now: datetime, now_m: float, plans: dict[str, tuple[int, int]]
    ) -> _Round | None:
        batch = self._batches[0] if self._batches else None
        order: dict[str, int] = {}
        entries: list[Entry] = []
        accounts: list[Account | None] = []

        def add(name: str, account: Account | None, delta: Delta | None = None) -> int:
            if name in order:
                return order[name]
            expires = account.line.charge.expires_at if account is not None else None
            if delta is not None and (expires or delta.expires_at) <= now:
                return -1  # the store has forgotten this counter: nothing left to add to it
            order[name] = len(entries)
            want = plans.get(name, (0, 0))[1]
            if account is not None:
                c = account.line.charge
                # A window counter is made at zero; once known, it is not looked for again.
                make = account.line.period == "minute" and not account.known
                base = Entry(c.counter, c.kind, c.limit, c.expires_at, make, want=want)
                if delta is not None:
                    d = delta.entry()
                    base = replace(d, kind=base.kind, limit=base.limit, create=make, want=want)
            else:
                assert delta is not None
                base = delta.entry()
            entries.append(base)
            accounts.append(account)
            return order[name]

        if batch is not None:
            for name, d in batch.deltas.items():
                add(name, self.accounts.get(name), d)
        waiters = [w for w in self._waiters if not w.future.done()]
        calls = []
        for w in waiters:
            idx = [(add(a.counter, a), amount) for a, amount in w.pairs]
            if w.call:
                calls.append(tuple(idx))
        beat = now_m >= self._beat_at
        for name, a in self.accounts.items():
            stale = a.kind == "soft" and now_m - a.synced_at > SOFT_FRESH and (
                now_m - a.last_use < 5.0)  # fmt: skip
            if plans.get(name, (0, 0))[1] > 0 or stale or (beat and a.store_hold > 0):
                add(name, a)
        if beat:
            self._beat_at = now_m + self._hold.total_seconds() / 4
        if not entries:
            return None
        sync = Sync(self.holder, tuple(entries), tuple(calls), None if batch is None else batch.seq)
        return _Round(sync, batch, waiters, accounts)

    # -- results ------------------------------------------------------------------------------

    def _apply(self, rnd: _Round, result: SyncResult, now_m: float) -> None:
        self._failures = 0
        if rnd.batch is not None:
            self._batches.popleft()
            for name, d in rnd.batch.deltas.items():
                a = self.accounts.get(name)
                if a is not None:
                    a.applied(d)
            if rnd.batch.path is not None:
                self._spool_remove(rnd.batch)
        for a, st, e in zip(rnd.accounts, result.states, rnd.sync.entries, strict=True):
            if a is not None and self.accounts.get(a.counter) is a:
                a.synced(st, now_m)
                self._report(a, st, e.spend)
        calls = iter(result.refused)
        for w in rnd.waiters:
            refused = next(calls) if w.call else None
            if w.future.done():
                continue
            if refused is None and w.call:
                for a, amount in w.pairs:
                    if a.kind == "hold":
                        a.held += amount
            w.future.set_result(refused)
        for a in rnd.accounts:
            if a is not None:
                a.check_cover()

    async def _failed(self, exc: Exception, rnd: _Round) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + min(MAX_BACKOFF, 0.05 * 2**self._failures)
        for w in rnd.waiters:
            if not w.future.done():
                w.future.set_exception(StoreUnavailable(str(exc)))
                w.future.exception()  # retrieved: the waiter may have timed out already
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + 10.0
            log.error(
                "quota store unavailable (%s); %d settlement batch(es) waiting, kept until it "
                "answers", exc, len(self._batches),
            )  # fmt: skip
        await self._spool_all()

    async def _keep(self) -> None:
        """While the store fails: what settled since the last batch goes to disk too."""
        now = time.monotonic()
        if now - self._last_freeze >= FREEZE_INTERVAL:
            self._freeze(now)
        await self._spool_all()

    async def _spool_all(self) -> None:
        if self._spool is not None:
            for b in self._batches:
                if b.path is None and b.use:
                    await self._write(b)

    async def _write(self, b: Batch) -> None:
        assert self._spool is not None
        try:
            await asyncio.to_thread(self._spool.write, b)
        except OSError:
            log.exception("quota: could not write settlement batch %d to disk", b.seq)

    def _spool_remove(self, b: Batch) -> None:
        assert self._spool is not None and b.path is not None
        path, b.path = b.path, None
        self._spool.remove(path)

    # -- other processes' batches -------------------------------------------------------------

    async def _replay_orphans(self) -> None:
        """Batches that dead processes left on disk, in order per holder; each holder's holds
        are dropped with them (its calls are over)."""
        self._orphans_at = time.monotonic() + ORPHAN_INTERVAL
        if self._spool is None:
            return
        batches = await asyncio.to_thread(self._spool.orphans)
        stuck: set[str] = set()
        for b in batches:
            if b.holder in stuck:
                continue
            now = self._clock()
            live = tuple(d.entry() for d in b.deltas.values() if d.expires_at > now)
            try:
                if live:
                    await self._send(Sync(b.holder, live, (), b.seq), now)
            except StoreUnavailable as exc:
                stuck.add(b.holder)
                log.warning("quota: replaying batch %d of %s failed: %s", b.seq, b.holder, exc)
                continue
            assert b.path is not None
            await asyncio.to_thread(self._spool.remove, b.path)
            log.info("quota: replayed settlement batch %d of %s (%d units)", b.seq, b.holder,
                     b.use)  # fmt: skip
