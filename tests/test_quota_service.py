"""QuotaService on every store: hard budgets under concurrency, replicas sharing limits, RPM/TPM
windows and their headers, period rollover, soft mode, thresholds, expiry of a crashed replica's
holds, and the ledger seeding a period's spend."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select

from proxy.db.engine import make_engine
from proxy.db.tables import ApiKey, UsageEvent
from proxy.errors import Forbidden, QuotaExceeded, ServiceUnavailable
from proxy.model_ids import model_id
from proxy.quotas.estimate import Estimate, prompt_tokens
from proxy.quotas.policy import LimitStatus
from proxy.quotas.service import Admission, QuotaHooks, QuotaService
from proxy.quotas.store_redis import RedisStore
from proxy.settings import Settings
from tests.test_quota_fixtures import (
    MODEL,
    STORE_KINDS,
    Clock,
    add_policy,
    body,
    budget_for,
    catalog,
    make_key,
    resolve_backend,
    service,
)

TENANT = "team-a"


@pytest.fixture(params=STORE_KINDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    return resolve_backend(request)


@pytest.fixture(params=["sql-postgresql", "redis"])
def shared_backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The stores that several replicas share."""
    return resolve_backend(request)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def refused(svc: QuotaService, key: Any, **kw: Any) -> QuotaExceeded | None:
    try:
        adm = await svc.admit(
            key,
            model=model_id(kw.pop("model", MODEL), prefixed=True),
            request=kw.pop("request", body()),
        )
    except QuotaExceeded as exc:
        return exc
    svc.settle(adm, cost_usd=kw.get("cost", Decimal(0)), tokens=kw.get("tokens", 0))
    await svc.drain()
    return None


def limit(statuses: list[LimitStatus], name: str) -> LimitStatus:
    return next(s for s in statuses if s.limit == name)


async def test_no_policy_costs_nothing(backend: tuple[str, str], clock: Clock) -> None:
    kind, url = backend
    key = await make_key(url, TENANT)
    async with service(kind, url, clock) as svc:
        adm = await svc.admit(key, model=model_id(MODEL), request=body())
        assert adm.lines == () and adm.headers == {}
        svc.settle(adm, cost_usd=Decimal(1), tokens=10)
        assert await svc.status(TENANT) == []


@pytest.mark.parametrize("spend", ["worst", "random"])
async def test_hard_budget_holds_under_50_concurrent_calls(
    backend: tuple[str, str], clock: Clock, spend: str
) -> None:
    kind, url = backend
    key = await make_key(url, TENANT)
    budget = budget_for(10.5, body())
    await add_policy(url, TENANT, budget_usd=budget, period="day")
    rng = random.Random(5)
    async with service(kind, url, clock) as svc:

        async def call() -> Admission | QuotaExceeded:
            try:
                adm = await svc.admit(key, model=model_id(MODEL), request=body())
            except QuotaExceeded as exc:
                return exc
            await asyncio.sleep(rng.random() / 100)  # the upstream call
            assert adm.worst_units is not None
            worst = Decimal(adm.worst_units).scaleb(-10)
            cost = (
                worst
                if spend == "worst"
                else worst * Decimal(rng.random()).quantize(Decimal("0.001"))
            )
            svc.settle(adm, cost_usd=cost.quantize(Decimal("1e-10")), tokens=500)
            return adm

        results = await asyncio.gather(*(call() for _ in range(50)))
        await svc.drain()
        admitted = [r for r in results if isinstance(r, Admission)]
        refusals = [r for r in results if isinstance(r, QuotaExceeded)]
        if spend == "worst":
            assert len(admitted) == 10  # the budget fits 10.5 worst cases, each spent in full
        assert refusals and len(admitted) + len(refusals) == 50
        for exc in refusals:
            assert exc.status_code == 429 and exc.code == "insufficient_quota"
            assert int(exc.headers["Retry-After"]) >= 1
            assert exc.gemini_body()["error"]["status"] == "RESOURCE_EXHAUSTED"
        status = limit(await svc.status(TENANT), "budget_usd")
        assert status.used <= budget and status.reserved == 0
        assert status.limit_value == budget


async def test_two_replicas_enforce_one_budget_and_one_rpm(
    shared_backend: tuple[str, str], clock: Clock
) -> None:
    kind, url = shared_backend
    key = await make_key(url, TENANT)
    other = await make_key(url, "team-b")
    budget = budget_for(10.5, body())
    await add_policy(url, TENANT, budget_usd=budget, period="month")
    await add_policy(url, "team-b", rpm=7)
    prefix = f"gm-test:{random.randrange(1 << 40):x}:"
    async with (
        service(kind, url, clock, redis_prefix=prefix) as one,
        service(kind, url, clock, redis_prefix=prefix) as two,
    ):

        async def call(svc: QuotaService, k: Any) -> bool:
            try:
                adm = await svc.admit(k, model=model_id(MODEL), request=body())
            except QuotaExceeded:
                return False
            svc.settle(adm, cost_usd=Decimal(adm.worst_units or 0).scaleb(-10), tokens=1)
            return True

        spent = await asyncio.gather(*(call((one, two)[i % 2], key) for i in range(50)))
        rated = await asyncio.gather(*(call((one, two)[i % 2], other) for i in range(20)))
        await one.drain()
        await two.drain()
        assert sum(spent) == 10 and sum(rated) == 7
        for svc in (one, two):
            status = limit(await svc.status(TENANT), "budget_usd")
            assert status.used <= budget and status.reserved == 0
            assert limit(await svc.status("team-b"), "rpm").used == 7


async def test_rpm_window_refuses_then_admits_after_the_reset(
    backend: tuple[str, str], clock: Clock
) -> None:
    kind, url = backend
    key = await make_key(url, TENANT)
    await add_policy(url, TENANT, rpm=2)
    async with service(kind, url, clock) as svc:
        first = await svc.admit(key, model=model_id(MODEL), request=body())
        assert first.headers == {
            "x-ratelimit-limit-requests": "2",
            "x-ratelimit-remaining-requests": "1",
            "x-ratelimit-reset-requests": "50s",  # the clock is at 12:00:10
        }
        await svc.admit(key, model=model_id(MODEL), request=body())
        clock.advance(20.5)
        exc = await refused(svc, key)
        assert exc is not None and exc.code == "rate_limit_exceeded"
        assert exc.headers["Retry-After"] == "30"
        assert exc.headers["x-ratelimit-remaining-requests"] == "0"
        assert exc.headers["x-ratelimit-reset-requests"] == "29.5s"
        assert "2 of 2 requests per minute" in exc.message
        clock.advance(29.5)  # 12:01:00, a new window
        again = await svc.admit(key, model=model_id(MODEL), request=body())
        assert again.headers["x-ratelimit-remaining-requests"] == "1"
        assert again.headers["x-ratelimit-reset-requests"] == "1m0s"


async def test_a_given_estimate_is_held_and_need_not_count_a_request(
    backend: tuple[str, str], clock: Clock
) -> None:
    """What a cache's storage, a batch or a Live turn commits to: the caller's estimate is the
    hold, and a charge inside a counted request does not count another against RPM."""
    kind, url = backend
    key = await make_key(url, TENANT)
    await add_policy(url, TENANT, rpm=1, budget_usd=Decimal("1"))
    model = model_id(MODEL)
    async with service(kind, url, clock) as svc:
        session = await svc.admit(key, model=model, request=body())
        svc.settle(session, cost_usd=Decimal(0), tokens=0)
        big = Estimate(0, 0, 0, Decimal("0.6"))
        turn = await svc.admit(key, model=model, request={}, estimate=big, count_request=False)
        assert turn.worst_units == 6 * 10**9
        assert "x-ratelimit-limit-requests" not in turn.headers
        with pytest.raises(QuotaExceeded):  # 0.6 held: another 0.6 does not fit $1
            await svc.admit(key, model=model, request={}, estimate=big, count_request=False)
        svc.settle(turn, cost_usd=Decimal("0.1"), tokens=0)
        await svc.drain()
        again = await svc.admit(key, model=model, request={}, estimate=big, count_request=False)
        svc.settle(again, cost_usd=Decimal("0.6"), tokens=0)
        exc = await refused(svc, key)
        assert exc is not None and exc.code == "rate_limit_exceeded"  # the session's RPM


async def test_tpm_window_holds_the_worst_case_then_real_tokens(
    backend: tuple[str, str], clock: Clock
) -> None:
    """TPM is strict like a hard budget: a call holds its prompt and maximum output in the
    window it is admitted in, and its real tokens replace the hold when it ends — in that
    window, whenever it ends."""
    kind, url = backend
    key = await make_key(url, TENANT)
    await add_policy(url, TENANT, tpm=1000)
    req = body(400, 300)
    worst = prompt_tokens(req)[0] + 300
    async with service(kind, url, clock) as svc:
        adm = await svc.admit(key, model=model_id(MODEL), request=req)
        assert adm.headers["x-ratelimit-remaining-tokens"] == str(1000 - worst)
        svc.settle(adm, cost_usd=Decimal(0), tokens=150)  # the real total replaces the hold
        await svc.drain()
        tpm = limit(await svc.status(TENANT), "tpm")
        assert (tpm.used, tpm.reserved) == (Decimal(150), Decimal(0))
        flight = [await svc.admit(key, model=model_id(MODEL), request=req) for _ in range(2)]
        exc = await refused(svc, key, request=req)  # 150 + 2 held + this one > 1000
        assert exc is not None and exc.code == "rate_limit_exceeded"
        assert exc.headers["x-ratelimit-remaining-tokens"] == str(1000 - 150 - 2 * worst)
        assert exc.headers["Retry-After"] == "1"  # only calls in flight stand in the way
        assert f"may use up to {worst:,}" in exc.message
        for a in flight:
            svc.settle(a, cost_usd=Decimal(0), tokens=100)
        await svc.drain()
        assert await refused(svc, key, request=req, tokens=100) is None
        assert limit(await svc.status(TENANT), "tpm").used == 450
        clock.advance(49.9)
        late = await svc.admit(key, model=model_id(MODEL), request=req)
        clock.advance(0.2)  # a new window: the late call's tokens stay in the one it began in
        assert limit(await svc.status(TENANT), "tpm").used == 0
        svc.settle(late, cost_usd=Decimal(0), tokens=worst)
        await svc.drain()
        assert limit(await svc.status(TENANT), "tpm").used == 0


async def test_budget_spent_yesterday_does_not_block_today(
    backend: tuple[str, str], clock: Clock
) -> None:
    kind, url = backend
    key = await make_key(url, TENANT)
    await add_policy(url, TENANT, budget_usd=Decimal("0.05"), period="day")
    async with service(kind, url, clock) as svc:
        assert await refused(svc, key, cost=Decimal("0.05")) is None
        exc = await refused(svc, key)
        assert exc is not None and exc.code == "insufficient_quota"
        assert exc.headers["Retry-After"] == str(12 * 3600 - 10)  # until midnight UTC
        assert "resets at 2026-03-11T00:00:00+00:00" in exc.message
        clock.now = datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC)
        assert await refused(svc, key) is None
        status = limit(await svc.status(TENANT), "budget_usd")
        assert status.used == 0 and status.resets_at == datetime(2026, 3, 12, tzinfo=UTC)


async def test_soft_budget_checks_spend_and_holds_nothing(
    backend: tuple[str, str], clock: Clock
) -> None:
    kind, url = backend
    key = await make_key(url, TENANT)
    await add_policy(url, TENANT, budget_usd=Decimal("0.001"), period="week", mode="soft")
    async with service(kind, url, clock) as svc:
        # Each worst case ($0.0035) exceeds the budget, but soft mode only asks: is any left?
        calls = [await svc.admit(key, model=model_id(MODEL), request=body()) for _ in range(3)]
        for adm in calls:
            svc.settle(adm, cost_usd=Decimal("0.0004"), tokens=10)
        await svc.drain()
        status = limit(await svc.status(TENANT), "budget_usd")
        assert status.used == Decimal("0.0012") and status.reserved == 0
        exc = await refused(svc, key)
        assert exc is not None and "weekly budget" in exc.message
        assert status.resets_at == datetime(2026, 3, 16, tzinfo=UTC)  # Monday


async def test_token_quota_holds_prompt_and_maximum_output(
    backend: tuple[str, str], clock: Clock
) -> None:
    kind, url = backend
    key = await make_key(url, TENANT)
    prompt, _ = prompt_tokens(body())
    await add_policy(url, TENANT, tokens=2 * (prompt + 1000) + 10, period="month")
    async with service(kind, url, clock) as svc:
        held = [await svc.admit(key, model=model_id(MODEL), request=body()) for _ in range(2)]
        exc = await refused(svc, key)
        assert exc is not None and exc.code == "insufficient_quota"
        assert "token quota" in exc.message and "Retry-After" in exc.headers
        assert exc.headers["Retry-After"] == "1"  # only calls in flight stand in the way
        for adm in held:
            svc.settle(adm, cost_usd=Decimal(0), tokens=100)
        await svc.drain()
        assert await refused(svc, key) is None


async def test_allowed_models_and_key_policies(backend: tuple[str, str], clock: Clock) -> None:
    kind, url = backend
    key = await make_key(url, TENANT)
    other = await make_key(url, TENANT)
    await add_policy(url, TENANT, allowed_models=["gemini-2.5-*"])
    prefix = await _prefix(url, key.key_id)
    await add_policy(url, TENANT, key_prefix=prefix, rpm=1, allowed_models=["gemini-2.5-flash"])
    async with service(kind, url, clock) as svc:
        with pytest.raises(Forbidden) as denied:
            await svc.admit(
                other, model=model_id("gemini-2.0-flash", prefixed=True), request=body()
            )
        assert denied.value.status_code == 403 and denied.value.code == "model_not_allowed"
        assert "tenant 'team-a'" in denied.value.message
        with pytest.raises(Forbidden):
            await svc.admit(
                key, model=model_id("models/gemini-2.5-pro", prefixed=True), request=body()
            )
        assert (
            await svc.admit(other, model=model_id("gemini-2.5-pro", prefixed=True), request=body())
        ).lines == ()
        await svc.admit(key, model=model_id("gemini-2.5-flash", prefixed=True), request=body())
        exc = await refused(svc, key)
        assert exc is not None and f"key {prefix}" in exc.message
        assert await refused(svc, other) is None  # the rpm is the key's alone
        labels = {s.label for s in await svc.status(TENANT)}
        assert labels == {f"rpm:key={prefix}"}


async def test_a_soft_key_token_quota_beside_the_tenants_rpm(
    backend: tuple[str, str], clock: Clock
) -> None:
    """A key's soft quota admits while its spend is under the limit, whatever the call's size;
    the tenant's RPM counts the calls admitted and not the one refused (all or nothing)."""
    kind, url = backend
    key = await make_key(url, TENANT)
    prefix = await _prefix(url, key.key_id)
    await add_policy(url, TENANT, rpm=10)
    await add_policy(url, TENANT, key_prefix=prefix, tokens=1, mode="soft")
    async with service(kind, url, clock) as svc:
        assert await refused(svc, key, tokens=50) is None  # 0 spent < 1: admitted
        exc = await refused(svc, key)
        assert exc is not None and exc.code == "insufficient_quota"
        assert f"key {prefix}" in exc.message and "50 tokens used" in exc.message
        statuses = {s.label: s for s in await svc.status(TENANT)}
        assert statuses["rpm"].used == 1
        assert statuses[f"tokens:key={prefix}"].used == 50


async def test_a_crashed_replicas_holds_expire(
    shared_backend: tuple[str, str], clock: Clock
) -> None:
    kind, url = shared_backend
    key = await make_key(url, TENANT)
    await add_policy(url, TENANT, budget_usd=budget_for(1.5, body()))
    prefix = f"gm-test:{random.randrange(1 << 40):x}:"
    async with (
        service(kind, url, clock, redis_prefix=prefix) as crashed,
        service(kind, url, clock, redis_prefix=prefix, hold_seconds=120) as survivor,
    ):
        await crashed.admit(
            key, model=model_id(MODEL), request=body()
        )  # then it dies: never settled
        exc = await refused(survivor, key)
        assert exc is not None and exc.headers["Retry-After"] == "1"
        clock.advance(121)
        assert await refused(survivor, key) is None
        assert limit(await survivor.status(TENANT), "budget_usd").reserved == 0


async def test_thresholds_fire_once_each(
    backend: tuple[str, str], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    kind, url = backend
    key = await make_key(url, TENANT)
    await add_policy(url, TENANT, budget_usd=Decimal("0.01"), period="month", mode="soft")
    seen: list[tuple[str, Decimal]] = []
    usage: list[float] = []
    hooks = QuotaHooks(
        on_usage=lambda s: usage.append(s.ratio),
        on_threshold=lambda s, t: seen.append((s.label, t)),
    )
    async with service(kind, url, clock, hooks=hooks) as svc:
        for cost in ("0.005", "0.0029", "0.0001", "0.0005", "0.0015"):
            assert await refused(svc, key, cost=Decimal(cost)) is None
        assert seen == [("budget_usd", Decimal("0.8")), ("budget_usd", Decimal("1"))]
        lines = [r.getMessage() for r in caplog.records if "passed" in r.getMessage()]
        assert lines == [
            "quota: tenant 'team-a' passed 80% of its monthly budget: $0.008 of $0.01 used, "
            "resets at 2026-04-01T00:00:00+00:00",
            "quota: tenant 'team-a' passed 100% of its monthly budget: $0.01 of $0.01 used, "
            "resets at 2026-04-01T00:00:00+00:00",
        ]
        assert usage[-1] == pytest.approx(1.0)
        assert await refused(svc, key) is not None


async def test_a_restart_keeps_the_periods_spend(backend: tuple[str, str], clock: Clock) -> None:
    """The ledger seeds a period's counters: in-process state, or a policy created mid-month."""
    kind, url = backend
    key = await make_key(url, TENANT)
    await _ledger(url, key.tenant_id, key.key_id, clock.now - timedelta(hours=1), "0.03", 700)
    await _ledger(url, key.tenant_id, key.key_id, clock.now - timedelta(days=40), "5", 9000)
    await add_policy(url, TENANT, budget_usd=Decimal("0.0325"), tokens=1_000_000)
    async with service(kind, url, clock) as svc:
        statuses = await svc.status(TENANT)
        assert limit(statuses, "budget_usd").used == Decimal("0.03")
        assert limit(statuses, "tokens").used == 700
        exc = await refused(svc, key)  # $0.0025 left, the worst case is $0.0035
        assert exc is not None and "$0.03 used of the $0.0325 monthly budget" in exc.message


async def test_unpriced_models_hold_nothing_but_count_when_settled(
    backend: tuple[str, str], clock: Clock
) -> None:
    kind, url = backend
    key = await make_key(url, TENANT)
    await add_policy(url, TENANT, budget_usd=Decimal("0.01"))
    async with service(kind, url, clock) as svc:
        adm = await svc.admit(
            key, model=model_id("gemini-unknown-9", prefixed=True), request=body()
        )
        assert adm.worst_units is None
        svc.settle(adm, cost_usd=None, tokens=5)
        priced = await svc.admit(key, model=model_id(MODEL), request=body())
        svc.settle(priced, cost_usd=None, tokens=5)  # unpriced at close: the held worst case
        await svc.drain()
        used = limit(await svc.status(TENANT), "budget_usd").used
        assert used == Decimal(priced.worst_units or 0).scaleb(-10)


async def test_policy_changes_apply_within_the_refresh(sqlite_url: str, clock: Clock) -> None:
    key = await make_key(sqlite_url, TENANT)
    async with service("memory", sqlite_url, clock) as svc:
        assert (await svc.admit(key, model=model_id(MODEL), request=body())).lines == ()
        await add_policy(sqlite_url, TENANT, rpm=1)
        for _ in range(100):
            if (await svc.admit(key, model=model_id(MODEL), request=body())).lines:
                break
            await asyncio.sleep(0.01)
        assert await refused(svc, key) is not None


async def test_an_unreachable_store_refuses_hard_limits_only(sqlite_url: str, clock: Clock) -> None:
    key = await make_key(sqlite_url, TENANT)
    other = await make_key(sqlite_url, "team-b")
    await add_policy(sqlite_url, TENANT, budget_usd=Decimal(1))
    await add_policy(sqlite_url, "team-b", budget_usd=Decimal(1), mode="soft", rpm=5)
    engine = make_engine(sqlite_url)
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    svc = await QuotaService.create(Settings(), engine, catalog(), clock=clock, store=store)
    try:
        with pytest.raises(ServiceUnavailable) as exc:
            await svc.admit(key, model=model_id(MODEL), request=body())
        assert exc.value.status_code == 503 and exc.value.headers["Retry-After"] == "1"
        assert (await svc.admit(other, model=model_id(MODEL), request=body())).lines == ()
    finally:
        await svc.aclose()
        await engine.dispose()


async def _prefix(url: str, key_id: int | None) -> str:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            prefix = await conn.scalar(select(ApiKey.prefix).where(ApiKey.id == key_id))
            return str(prefix)
    finally:
        await engine.dispose()


async def _ledger(
    url: str, tenant_id: int, key_id: int | None, at: datetime, cost: str, tokens: int
) -> None:
    row: dict[str, Any] = {
        "id": f"{random.randrange(1 << 64):032x}", "created_at": at, "tenant_id": tenant_id,
        "key_id": key_id, "model": MODEL, "operation": "generateContent", "route": "native",
        "streamed": False, "status": 200, "prompt_tokens": tokens, "cached_tokens": 0,
        "output_tokens": 0, "thinking_tokens": 0, "tool_use_prompt_tokens": 0,
        "audio_prompt_tokens": 0, "cached_audio_tokens": 0, "output_image_tokens": 0,
        "output_audio_tokens": 0, "total_tokens": tokens, "estimated": False,
        "cost_usd": Decimal(cost), "priced": True, "latency_ms": 1.0, "retries": 0,
    }  # fmt: skip
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(UsageEvent), [row])
    finally:
        await engine.dispose()


async def test_live_calls_keep_their_holds(backend: tuple[str, str], clock: Clock) -> None:
    """A long call's holds are renewed while it runs (heartbeat every hold/4), so only a dead
    replica's holds expire."""
    kind, url = backend
    key = await make_key(url, TENANT)
    await add_policy(url, TENANT, budget_usd=budget_for(1.5, body()))
    refusals: list[str] = []
    hooks = QuotaHooks(on_refusal=lambda s: refusals.append(s.label))
    async with service(kind, url, clock, hooks=hooks, hold_seconds=0.4) as svc:
        long_call = await svc.admit(key, model=model_id(MODEL), request=body())
        for _ in range(3):
            clock.advance(0.3)  # past the first hold's expiry by the second round
            await asyncio.sleep(0.25)  # a heartbeat runs (every 0.1 s)
        assert await refused(svc, key) is not None
        assert refusals == ["budget_usd"]
        svc.settle(long_call, cost_usd=Decimal(0), tokens=0)
        await svc.drain()
        assert await refused(svc, key) is None


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "MemoryStore"),
        ({"workers": 2}, "SqlStore"),  # several processes on one SQLite file share it
        ({"redis_url": "redis://127.0.0.1:6379/0"}, "RedisStore"),
    ],
)
async def test_the_store_follows_the_deployment(
    sqlite_url: str, settings: dict[str, Any], expected: str
) -> None:
    engine = make_engine(sqlite_url)
    try:
        svc = await QuotaService.create(
            Settings(database_url=sqlite_url, **settings), engine, catalog()
        )
        await svc.aclose()
        assert type(svc.store).__name__ == expected
    finally:
        await engine.dispose()
