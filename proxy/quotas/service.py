"""QuotaService: admit a call before it goes upstream, settle it after; policies cached.

    admission = await quotas.admit(key, model=model, request=body)   # may raise 429 / 403 / 503
    ... upstream ...
    quotas.settle(admission, cost_usd=cost, tokens=usage.total_tokens)  # sync, schedules I/O

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
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..caller import Caller
from ..errors import Forbidden, ServiceUnavailable
from ..model_ids import ANY_MODEL, ModelId
from ..pricing.catalog import Catalog
from ..settings import Settings
from .estimate import UNMETERED_OPERATIONS, Estimate, estimate_call
from .manage import load_policies
from .plan import ADJECTIVE, Line, amount, plan, rate_headers, refusal, settlements, status_of
from .policy import LimitStatus, Policy, crossed, usd_to_units, utc, window_index
from .seed import Seeder
from .store import CounterState, QuotaStore, StoreUnavailable
from .store_memory import MemoryStore
from .store_redis import RedisStore
from .store_sql import SqlStore

__all__ = ["Admission", "QuotaHooks", "QuotaService"]

log = logging.getLogger("gemini_meter.quotas")

HOLD_SECONDS = 120.0  # a hold's life without a heartbeat: how long a crashed replica's holds last
MAX_HOLD = timedelta(hours=4)  # a call never settled (a bug) stops holding after this
COLLECT_SECONDS = 60.0
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True)
class QuotaHooks:
    """Callbacks for metrics; each runs in the event loop and must not block."""

    on_usage: Callable[[LimitStatus], None] | None = None  # after each change of a counter
    on_threshold: Callable[[LimitStatus, Decimal], None] | None = None  # passed 0.8 or 1
    on_refusal: Callable[[LimitStatus], None] | None = None  # a call refused by this limit


@dataclass(slots=True, eq=False)
class Admission:
    """A call let through, with what it holds. ``headers`` go on the reply (x-ratelimit-*)."""

    id: str
    tenant: str
    lines: tuple[Line, ...] = ()
    estimate: Estimate | None = None
    worst_units: int | None = None  # the held worst-case cost, 1e-10 USD; None: not priceable
    window: int = 0
    admitted_at: datetime = _NEVER  # set when it holds anything
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


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
    ) -> None:
        self.store = store
        self.hooks = hooks or QuotaHooks()
        self._engine = engine
        self._catalog = catalog
        self._clock = clock or (lambda: datetime.now(UTC))
        self._hold = timedelta(seconds=hold_seconds)
        self._by_tenant: dict[int, tuple[Policy, ...]] = {}
        self._seeder = Seeder(engine, store)
        self._live: dict[str, Admission] = {}
        self._tasks: set[asyncio.Task[None]] = set()
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
        """Redis if configured, else the SQL store on PostgreSQL, else in process (SQLite) —
        unless several worker processes share the SQLite file: then the SQL store there."""
        if store is None:
            if settings.redis_url:
                store = RedisStore.from_url(settings.redis_url, prefix=redis_prefix)
            elif engine.dialect.name == "postgresql" or getattr(settings, "workers", 1) > 1:
                store = SqlStore(engine)
            else:
                store = MemoryStore()
        svc = cls(
            store, engine, catalog, clock=clock, hooks=hooks,
            hold_seconds=hold_seconds, refresh_interval=refresh_interval,
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
        svc._loops = [
            asyncio.create_task(svc._every(refresh_interval, svc.refresh), name="quota-refresh"),
            asyncio.create_task(svc._every(hold_seconds / 4, svc._heartbeat), name="quota-hold"),
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
    ) -> Admission:
        """Refuse (QuotaExceeded 429, Forbidden 403) or hold the call's worst case."""
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
        if operation in UNMETERED_OPERATIONS:
            return Admission("", key.tenant_name)
        now = self._now()
        est = estimate_call(self._catalog, model.name, request, operation)
        worst = None if est.cost_usd is None else usd_to_units(est.cost_usd)
        if worst is None and model.name not in self._unpriced_logged:
            self._unpriced_logged.add(model.name)
            log.warning("quota: model %r has no price; its calls hold $0 of budgets", model.name)
        lines = plan(policies, est, worst, now)
        if not lines:
            return Admission("", key.tenant_name)
        rid = uuid.uuid4().hex
        try:
            await self._seeder.ensure(lines, now)
            result = await self.store.reserve(
                rid, [ln.charge for ln in lines], now=now, hold_until=now + self._hold
            )
        except StoreUnavailable as exc:
            return self._unavailable(exc, lines, key.tenant_name)
        headers = rate_headers(lines, result.states, now)
        if result.refused is not None:
            line, state = lines[result.refused], result.states[result.refused]
            self._call(self.hooks.on_refusal, status_of(line, state))
            raise refusal(line, state, now, headers)
        for line, state in zip(lines, result.states, strict=True):
            if line.period == "minute":
                self._call(self.hooks.on_usage, status_of(line, state))
        adm = Admission(rid, key.tenant_name, tuple(lines), est, worst, window_index(now), now,
                        headers)  # fmt: skip
        if any(ln.charge.kind == "hold" for ln in lines):
            self._live[rid] = adm
        return adm

    def _unavailable(self, exc: StoreUnavailable, lines: Sequence[Line], tenant: str) -> Admission:
        # A hard limit cannot be promised without its store: refuse. Soft limits and rate
        # limits prefer availability: admit, uncounted, and say so in the log.
        self._log_throttled("store", "quota store unavailable: %s", exc)
        if any(ln.charge.kind == "hold" for ln in lines):
            raise ServiceUnavailable(
                "Quota accounting is unavailable; the call was not sent. Retry shortly.",
                headers={"Retry-After": "1"},
            )
        return Admission("", tenant)

    # -- settlement -----------------------------------------------------------------------------

    def settle(self, admission: Admission, *, cost_usd: Decimal | None, tokens: int) -> None:
        """Replace the call's holds by what it used. Non-blocking: the store I/O runs as a task
        (``drain`` awaits them). Idempotent. ``cost_usd`` None (unpriced) settles the held worst
        case, so an unpriceable call still counts against the budget."""
        if admission.settled or not admission.lines:
            return
        admission.settled = True
        self._live.pop(admission.id, None)
        try:
            task = asyncio.get_running_loop().create_task(
                self._settle(admission, cost_usd, max(0, tokens))
            )
        except RuntimeError:
            log.error("quota: settle outside the event loop; holds expire in %s", self._hold)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, adm: Admission, cost_usd: Decimal | None, tokens: int) -> None:
        now = self._now()
        cost = (adm.worst_units or 0) if cost_usd is None else usd_to_units(cost_usd)
        items = settlements(adm.lines, window=adm.window, now=now, cost_units=cost, tokens=tokens)
        if not items:
            return
        states: tuple[CounterState, ...] = ()
        for attempt in range(3):
            try:
                states = await self.store.settle(adm.id, [s for _, s in items], now=now)
                break
            except StoreUnavailable as exc:
                if attempt == 2:
                    log.error("quota: settling %s failed, its holds expire: %s", adm.id, exc)
                    return
                await asyncio.sleep(0.1 * 4**attempt)
        for (period_line, s), st in zip(items, states, strict=True):
            if period_line is not None:
                self._report(period_line, st, st.used - s.add)

    def _report(self, line: Line, state: CounterState, before: int) -> None:
        status = status_of(line, state)
        self._call(self.hooks.on_usage, status)
        for t in crossed(before, state.used, line.charge.limit):
            what = "budget" if line.limit == "budget_usd" else "token quota"
            log.warning(
                "quota: %s passed %s%% of its %s %s: %s of %s used, resets at %s",
                line.policy.scope, int(t * 100), ADJECTIVE[line.period], what,
                amount(line, state.used), amount(line, line.charge.limit),
                utc(status.resets_at).isoformat(),
            )  # fmt: skip
            self._call(self.hooks.on_threshold, status, t)

    async def drain(self) -> None:
        """Wait for every scheduled settlement (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- status ---------------------------------------------------------------------------------

    async def status(self, tenant: str) -> list[LimitStatus]:
        """Use of every limit of a tenant's policies (tenant-wide first), with reset times."""
        policies = [p for ps in self._by_tenant.values() for p in ps if p.tenant == tenant]
        if not policies:
            return []
        now = self._now()
        lines = plan(policies, Estimate(0, 0, 0, Decimal(0)), 0, now)
        await self._seeder.ensure(lines, now)
        states = await self.store.usage([ln.charge.counter for ln in lines], now=now)
        return [status_of(ln, st) for ln, st in zip(lines, states, strict=True)]

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
        self._seeder.saw(policies, self._now())
        self._by_tenant = {t: tuple(ps) for t, ps in by_tenant.items()}
        self.loaded = True

    async def _heartbeat(self) -> None:
        now = self._now()
        holds = []
        for rid, adm in list(self._live.items()):
            if adm.settled or now - adm.admitted_at > MAX_HOLD:
                if not adm.settled:
                    log.warning("quota: call %s never settled; its holds now expire", rid)
                del self._live[rid]
                continue
            holds.append((rid, [ln.charge.counter for ln in adm.lines if ln.charge.kind == "hold"]))
        if holds:
            await self.store.extend(holds, now=now, until=now + self._hold)

    async def _collect(self) -> None:
        now = self._now()
        self._seeder.forget(now)
        await self.store.collect(now=now)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:  # one failed round must not end the loop
                # Keep the last good state and try again; the log is rate-limited.
                self._log_throttled(getattr(job, "__name__", "job"), "quota: %r", exc)

    async def aclose(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        await self.drain()
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
