"""QuotaService: admit a call before it goes upstream, settle it after; policies cached.

    admission = await quotas.admit(key, model=model, request=body)   # may raise 429 / 403 / 503
    ... upstream ...
    quotas.settle(admission, cost_usd=cost, tokens=usage.total_tokens)  # sync, no I/O

A call is admitted against this replica's lease on each counter it needs (proxy.quotas.account)
with no I/O; only when a lease lacks room — the first call of a minute, a burst, the last
dollars of a budget — does it wait for the store, through the one task that talks to it
(proxy.quotas.syncer), for at most ``quota_store_timeout``. Settling only counts locally: the
syncer sends it, batched, within 0.25 s, and keeps it until the store has it.

Policies are loaded from the database every ``refresh_interval`` (1 s), so a change applies
within a second on every replica and a tenant without a policy costs a dict lookup. See
docs/quotas.md for the semantics.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..caller import Caller
from ..errors import Forbidden, ServiceUnavailable
from ..model_ids import ANY_MODEL, ModelId
from ..pricing.catalog import Catalog
from ..settings import Settings
from .account import Account
from .estimate import UNMETERED_OPERATIONS, Estimate, estimate_call
from .manage import load_policies
from .pending import SettlementSpool
from .plan import ADJECTIVE, Line, amount, plan, rate_headers, refusal, status_of
from .policy import LimitStatus, Policy, crossed, usd_to_units, utc
from .seed import seed
from .store import EntryState, QuotaStore, StoreUnavailable
from .store_memory import MemoryStore
from .store_redis import RedisStore
from .store_sql import SqlStore
from .syncer import Syncer

__all__ = ["Admission", "QuotaHooks", "QuotaService", "make_store"]

log = logging.getLogger("gemini_meter.quotas")

HOLD_SECONDS = 120.0  # a hold's life without a renewal: how long a crashed replica's holds last
COLLECT_SECONDS = 60.0
SOFT_FRESH = 5.0  # a soft limit is checked against a reading at most this old (else the store)
STORE_TIMEOUT = 1.0


@dataclass(slots=True)
class QuotaHooks:
    """Callbacks for metrics; each runs in the event loop and must not block."""

    on_usage: Callable[[LimitStatus], None] | None = None  # after each change of a counter
    on_threshold: Callable[[LimitStatus, Decimal], None] | None = None  # passed 0.8 or 1
    on_refusal: Callable[[LimitStatus], None] | None = None  # a call refused by this limit
    # After each sync with the store: whether it answered, and the settlement batches it has
    # not confirmed yet (kept on disk while it fails).
    on_sync: Callable[[bool, int], None] | None = None


@dataclass(slots=True, eq=False)
class Admission:
    """A call let through, with what it holds. ``headers`` go on the reply (x-ratelimit-*)."""

    id: str
    tenant: str
    lines: tuple[Line, ...] = ()
    estimate: Estimate | None = None
    worst_units: int | None = None  # the held worst-case cost, 1e-10 USD; None: not priceable
    accounts: tuple[Account, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


def make_store(settings: Settings, engine: AsyncEngine, redis_prefix: str) -> QuotaStore:
    """Redis if configured, else the SQL store on PostgreSQL, else in process (SQLite) —
    unless several worker processes share the SQLite file: then the SQL store there."""
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url, prefix=redis_prefix,
                                   timeout=settings.quota_store_timeout)  # fmt: skip
    if engine.dialect.name == "postgresql" or settings.workers > 1:
        return SqlStore(engine)
    return MemoryStore()


class QuotaService:
    def __init__(
        self,
        store: QuotaStore,
        engine: AsyncEngine,
        catalog: Catalog,
        *,
        clock: Callable[[], datetime] | None = None,
        hooks: QuotaHooks | None = None,
        hold_seconds: float = HOLD_SECONDS,
        refresh_interval: float = 1.0,
        timeout: float = STORE_TIMEOUT,
        spool_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.hooks = hooks or QuotaHooks()
        self.holder = uuid.uuid4().hex  # this process's leases
        self._engine = engine
        self._catalog = catalog
        self._clock = clock or (lambda: datetime.now(UTC))
        self._timeout = timeout
        self._by_tenant: dict[int, tuple[Policy, ...]] = {}
        self._syncer = Syncer(
            store, self.holder, clock=self._now, hold=timedelta(seconds=hold_seconds),
            timeout=timeout, seed=self._seed, report=self._report,
            synced=lambda ok, n: self._call(self.hooks.on_sync, ok, n),
            spool=None if spool_dir is None else SettlementSpool(spool_dir),
        )  # fmt: skip
        self._loops: list[asyncio.Task[None]] = []
        self._unpriced_logged: set[str] = set()
        self.loaded = False  # policies read at least once
        self._quiet_until: dict[str, float] = {}

    @classmethod
    async def create(
        cls,
        settings: Settings,
        engine: AsyncEngine,
        catalog: Catalog,
        *,
        clock: Callable[[], datetime] | None = None,
        hooks: QuotaHooks | None = None,
        store: QuotaStore | None = None,
        redis_prefix: str = "gemini-meter:quota:",
        hold_seconds: float = HOLD_SECONDS,
        refresh_interval: float = 1.0,
    ) -> QuotaService:
        """A service on the deployment's store (:func:`make_store`), its sync started."""
        timeout = settings.quota_store_timeout
        store = store or make_store(settings, engine, redis_prefix)
        svc = cls(
            store, engine, catalog, clock=clock, hooks=hooks, hold_seconds=hold_seconds,
            refresh_interval=refresh_interval, timeout=timeout,
            spool_dir=settings.spool_dir / "quota",
        )  # fmt: skip
        try:
            await svc.refresh()
        except (OperationalError, InterfaceError, OSError) as exc:
            # Database unreachable at start: serve anyway (the ledger spools), but refuse calls
            # until the policies are loaded, so no budget is overshot meanwhile.
            log.error("quota policies not loaded (%s); retrying every %ss", exc, refresh_interval)
        except BaseException:
            await store.aclose()
            raise
        svc._syncer.start()
        svc._loops = [
            asyncio.create_task(svc._every(refresh_interval, svc.refresh), name="quota-refresh"),
            asyncio.create_task(svc._every(COLLECT_SECONDS, svc._collect), name="quota-collect"),
        ]
        return svc

    # -- admission ------------------------------------------------------------------------------

    async def admit(
        self,
        key: Caller,
        *,
        model: ModelId,
        request: Mapping[str, Any],
        operation: str = "generateContent",
        estimate: Estimate | None = None,
        count_request: bool = True,
    ) -> Admission:
        """Refuse (QuotaExceeded 429, Forbidden 403, ServiceUnavailable 503) or admit the call,
        holding its worst case.

        ``estimate`` replaces the worst case read from ``request`` (what a cache's storage, a
        batch or a Live turn commits to); ``count_request=False`` holds it without counting
        another request against RPM (see :func:`plan`)."""
        if not self.loaded:
            raise ServiceUnavailable(
                "Quota policies are not loaded yet (database unreachable); retry shortly.",
                headers={"Retry-After": "1"},
            )
        policies = [
            p
            for p in self._by_tenant.get(key.tenant_id, ())
            if p.key_id is None or p.key_id == key.key_id
        ]
        if not policies:
            return Admission("", key.tenant_name)
        for p in policies:
            if model is not ANY_MODEL and not p.allows(model):
                raise Forbidden(f"Model {model.name!r} is not allowed for {p.scope}.",
                                code="model_not_allowed")  # fmt: skip
        if operation in UNMETERED_OPERATIONS and estimate is None:
            return Admission("", key.tenant_name)
        now = self._now()
        est = estimate or estimate_call(self._catalog, model.name, request, operation)
        worst = None if est.cost_usd is None else usd_to_units(est.cost_usd)
        if worst is None and model.name not in self._unpriced_logged:
            self._unpriced_logged.add(model.name)
            log.warning("quota: model %r has no price; its calls hold $0 of budgets", model.name)
        lines = plan(policies, est, worst, now, count_request=count_request)
        if not lines:
            return Admission("", key.tenant_name)
        mono = time.monotonic()
        accounts = [self._account(line, mono) for line in lines]
        taken: list[int] = []  # admitted here, against the lease
        remote: list[int] = []  # for the store to decide
        for i, (line, a) in enumerate(zip(lines, accounts, strict=True)):
            a.note(line.charge.amount, mono)
            if a.kind == "soft":
                if not (a.known and mono - a.synced_at < SOFT_FRESH):
                    remote.append(i)
                elif a.state().used >= a.limit:
                    self._untake(lines, accounts, taken)
                    raise self._refusal(lines, accounts, i, now)
            elif a.take(line.charge.amount):
                taken.append(i)
            else:
                remote.append(i)
        if remote:
            pairs = tuple((accounts[i], lines[i].charge.amount) for i in remote)
            try:
                bad = await self._syncer.admit(pairs)
            except StoreUnavailable as exc:
                self._untake(lines, accounts, taken)
                return self._unavailable(exc, lines, key.tenant_name)
            if bad is not None:
                self._untake(lines, accounts, taken)
                raise self._refusal(lines, accounts, remote[bad], now)
        for a in accounts:
            a.calls += 1
        headers = rate_headers(lines, [a.state() for a in accounts], now)
        return Admission("", key.tenant_name, tuple(lines), est, worst, tuple(accounts), headers)

    def _account(self, line: Line, mono: float) -> Account:
        accounts = self._syncer.accounts
        a = accounts.get(line.charge.counter)
        if a is None:
            a = accounts[line.charge.counter] = Account(line, line.strict, last_use=mono)
            return a
        if line.charge.limit < a.limit or line.charge.kind != a.kind:
            # A lower limit (or another mode): the lease was sized for the old one. Calls ask
            # the store until the next sync has shrunk it.
            a.known = False
            self._syncer.poke(urgent=True)
        a.line = line
        return a

    @staticmethod
    def _untake(lines: Sequence[Line], accounts: Sequence[Account], taken: list[int]) -> None:
        for i in taken:
            accounts[i].untake(lines[i].charge.amount)

    def _refusal(
        self, lines: Sequence[Line], accounts: Sequence[Account], i: int, now: datetime
    ) -> Exception:
        states = [a.state() for a in accounts]
        self._call(self.hooks.on_refusal, status_of(lines[i], states[i]))
        return refusal(lines[i], states[i], now, rate_headers(lines, states, now))

    def _unavailable(self, exc: StoreUnavailable, lines: Sequence[Line], tenant: str) -> Admission:
        # A hard limit cannot be promised without its store: refuse. Soft limits and rate
        # limits prefer availability: admit, uncounted, and say so in the log.
        self._log_throttled("store", "quota store unavailable: %s", exc)
        if any(ln.strict for ln in lines):
            raise ServiceUnavailable(
                "Quota accounting is unavailable; the call was not sent. Retry shortly.",
                headers={"Retry-After": "1"},
            )
        return Admission("", tenant)

    # -- settlement -----------------------------------------------------------------------------

    def settle(self, admission: Admission, *, cost_usd: Decimal | None, tokens: int) -> None:
        """Replace the call's holds by what it used: counted here at once, sent to the store by
        the syncer (batched), kept until the store has it. Idempotent. ``cost_usd`` None
        (unpriced) settles the held worst case, so an unpriceable call still counts."""
        if admission.settled or not admission.lines:
            return
        admission.settled = True
        cost = (admission.worst_units or 0) if cost_usd is None else usd_to_units(cost_usd)
        tokens = max(0, tokens)
        urgent = False
        for line, a in zip(admission.lines, admission.accounts, strict=True):
            used = 0 if line.limit == "rpm" else cost if line.limit == "budget_usd" else tokens
            a.settle(line.charge.kind, line.charge.amount, used)
            urgent = urgent or a.exact  # near the end, what it gives back is wanted at once
        if urgent:
            self._syncer.poke(urgent=True)

    def _report(self, a: Account, st: EntryState, added: int) -> None:
        line = a.line
        status = status_of(line, a.state())
        self._call(self.hooks.on_usage, status)
        if added <= 0 or line.period == "minute":
            return
        for t in crossed(st.used - added, st.used, line.charge.limit):
            what = "budget" if line.limit == "budget_usd" else "token quota"
            log.warning(
                "quota: %s passed %s%% of its %s %s: %s of %s used, resets at %s",
                line.policy.scope, int(t * 100), ADJECTIVE[line.period], what,
                amount(line, st.used), amount(line, line.charge.limit),
                utc(line.resets_at).isoformat(),
            )  # fmt: skip
            self._call(self.hooks.on_threshold, status, t)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Send every settlement and give back every spare unit (shutdown, tests)."""
        return await self._syncer.flush(release=True, timeout=timeout)

    @property
    def pending_batches(self) -> int:
        """Settlement batches the store has not confirmed yet (on disk while it fails)."""
        return self._syncer.pending_batches()

    # -- status ---------------------------------------------------------------------------------

    async def status(self, tenant: str) -> list[LimitStatus]:
        """Use of every limit of a tenant's policies (tenant-wide first), with reset times. This
        replica's settlements are sent first; ``reserved`` counts calls in flight here and
        every other replica's holds (their calls in flight and their leases' spare room)."""
        policies = [p for ps in self._by_tenant.values() for p in ps if p.tenant == tenant]
        if not policies:
            return []
        now = self._now()
        lines = plan(policies, Estimate(0, 0, 0, Decimal(0)), 0, now)
        await self._syncer.flush(release=False, timeout=self._timeout * 4)
        accounts = [self._account(line, time.monotonic()) for line in lines]
        try:
            await self._syncer.read(accounts)
        except StoreUnavailable as exc:
            raise ServiceUnavailable(
                f"The quota store did not answer: {exc}", headers={"Retry-After": "1"}
            ) from exc
        return [status_of(ln, a.state()) for ln, a in zip(lines, accounts, strict=True)]

    async def status_all(self) -> list[LimitStatus]:
        """Every tenant's limits: for a gauge refresh at scrape time or the admin API."""
        names = sorted({p.tenant for ps in self._by_tenant.values() for p in ps})
        return [s for name in names for s in await self.status(name)]

    def policies(self) -> list[Policy]:
        return [p for ps in self._by_tenant.values() for p in ps]

    # -- background -----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Reload every policy (each second in the background; call it after a change)."""
        policies = await load_policies(self._engine)
        by_tenant: dict[int, list[Policy]] = {}
        for p in policies:
            by_tenant.setdefault(p.tenant_id, []).append(p)
        self._by_tenant = {t: tuple(ps) for t, ps in by_tenant.items()}
        self.loaded = True

    async def _seed(self, counter: str, expires_at: datetime, now: datetime) -> None:
        await seed(self._engine, self.store, counter, expires_at, now)

    async def _collect(self) -> None:
        await self.store.collect(now=self._now())

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:  # one failed round must not end the loop
                # Keep the last good state and try again; the log is rate-limited.
                self._log_throttled(getattr(job, "__name__", "job"), "quota: %r", exc)

    async def aclose(self, timeout: float = 10.0) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        await self._syncer.close(timeout)
        await self.store.aclose()

    # -- helpers --------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return utc(self._clock())

    def _log_throttled(self, topic: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if self._quiet_until.get(topic, 0.0) <= now:
            self._quiet_until[topic] = now + 10.0
            log.error(msg, *args)

    @staticmethod
    def _call(hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:  # a metrics callback must never fail a call
            log.exception("quota hook %r failed", hook)
