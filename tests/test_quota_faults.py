"""Quota-store faults, drilled as an operator would: the store (PostgreSQL or Redis) cut or frozen
behind a TCP line while replicas admit and settle, a replica killed with settlements pending,
counters lost, bursts. A settlement is money: never dropped, never doubled; a hard budget is
never overshot; a call never hangs on the store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from redis import Redis
from sqlalchemy import text

from proxy.db.engine import make_engine
from proxy.errors import QuotaExceeded
from proxy.model_ids import model_id
from proxy.quotas.account import Delta
from proxy.quotas.estimate import estimate_call
from proxy.quotas.pending import Batch, SettlementSpool
from proxy.quotas.policy import period_label, usd_to_units
from proxy.quotas.store import Charge
from tests.conftest import UPSTREAM_KEY, RunningProxy, fetch_rows, make_tenant_key, run_sync
from tests.fakes.gemini import (
    FakeGemini,
    JsonReply,
    StreamReply,
    stream_events,
    text_response,
    usage_metadata,
)
from tests.fakes.tcpcut import TcpCut
from tests.test_cli import free_port
from tests.test_quota_fixtures import (
    MODEL,
    REDIS_URL,
    Clock,
    add_policy,
    body,
    budget_for,
    make_key,
    open_store,
    proxy_catalog,
    resolve_backend,
    service,
)
from tests.test_quota_service import _ledger
from tests.test_reliability import pg_line, wait_for

__all__ = ["pg_line"]  # a fixture, used here

ADMIN = {"authorization": "Bearer admin-token-for-tests"}
GEN = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"


@pytest.fixture
def redis_line() -> Iterator[tuple[TcpCut, str, str]]:
    """Redis through a line the test can cut or freeze: (line, url through it, key prefix)."""
    parts = urlsplit(REDIS_URL)
    prefix = f"gm-fault:{uuid.uuid4().hex[:10]}:"
    with TcpCut(parts.hostname or "127.0.0.1", parts.port or 6379) as line:
        yield line, f"redis://127.0.0.1:{line.port}{parts.path or '/0'}", prefix
    r = Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}*"))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture(params=["postgresql", "redis"])
def store_line(
    request: pytest.FixtureRequest, pg_url: str
) -> Iterator[tuple[TcpCut, str, dict[str, Any]]]:
    """(line, database url, proxy settings) with the quota store behind the line: PostgreSQL
    itself (the ledger then shares the outage), or Redis in front of a direct PostgreSQL."""
    if request.param == "postgresql":
        line, via = request.getfixturevalue("pg_line")
        yield line, via, {"key_cache_ttl": 3600.0}
    else:
        line, url, prefix = request.getfixturevalue("redis_line")
        yield line, pg_url, {"redis_url": url, "redis_prefix": prefix, "key_cache_ttl": 3600.0}


def worst_usage(req: dict[str, Any]) -> dict[str, Any]:
    """usageMetadata of a call that costs exactly its worst case (all output spent thinking)."""
    est = estimate_call(proxy_catalog(), MODEL, req)
    return {
        "promptTokenCount": est.prompt_tokens,
        "candidatesTokenCount": 0,
        "thoughtsTokenCount": est.max_output_tokens,
        "totalTokenCount": est.prompt_tokens + est.max_output_tokens,
    }


def quota(p: RunningProxy, tenant: str | None = None) -> dict[str, dict[str, Any]]:
    got = httpx.get(f"{p.url}/admin/tenants/{tenant or p.tenant}/quota", headers=ADMIN, timeout=30)
    assert got.status_code == 200, got.text
    return {lim["limit"]: lim for lim in got.json()["limits"]}


def post(
    p: RunningProxy, key: str | None = None, req: dict[str, Any] | None = None
) -> httpx.Response:
    return httpx.post(f"{p.url}{GEN}", headers={"x-goog-api-key": key or p.key},
                      json=req or body(), timeout=30)  # fmt: skip


async def hold_streams(
    targets: list[tuple[str, str]], req: dict[str, Any], during: Callable[[], None]
) -> list[int]:
    """One stream per (proxy url, key): each admitted and started, then ``during`` runs, then
    every stream is read to its end. Their HTTP statuses."""
    async with httpx.AsyncClient(timeout=60) as client, contextlib.AsyncExitStack() as stack:
        replies = []
        for url, key in targets:
            r = await stack.enter_async_context(
                client.stream("POST", f"{url}{STREAM}", headers={"x-goog-api-key": key}, json=req)
            )
            assert r.status_code == 200, await r.aread()
            chunks = r.aiter_bytes()  # kept: a dropped iterator would close the stream
            await anext(chunks)  # the first event: the call is upstream
            replies.append((r, chunks))
        await asyncio.to_thread(during)
        for _, chunks in replies:
            async for _chunk in chunks:
                pass
        return [r.status_code for r, _ in replies]


def spent(p: RunningProxy, n: int) -> Decimal:
    rows = p.rows(n, timeout=60)
    assert len(rows) == n
    return sum((r["cost_usd"] for r in rows), Decimal(0))


# -- 16.1: an outage while calls settle ---------------------------------------------------------


def test_settlements_outlive_a_store_outage_on_two_replicas(
    start_proxy: Callable[..., RunningProxy], store_line: tuple[TcpCut, str, dict[str, Any]],
    pg_url: str,
) -> None:  # fmt: skip
    """Six streams fill a budget on two replicas; the store goes away while they end. When it
    is back every settlement has landed, once: used is exactly the ledger's spend, nothing is
    held, and the budget admits nothing more."""
    line, db, overrides = store_line
    a = start_proxy(db, **overrides)
    b = start_proxy(db, **overrides)
    req = body(400, 1000)
    budget = budget_for(6.5, req, cat=proxy_catalog())
    run_sync(lambda: add_policy(pg_url, a.tenant, budget_usd=budget, period="day"))
    quota(a), quota(b)  # both replicas have the policy
    events = stream_events(["one", " two"], worst_usage(req))
    for _ in range(6):
        a.fake.enqueue(StreamReply(events, hold_after=1), action="streamGenerateContent")

    def outage() -> None:
        assert post(a, req=req).status_code == 429  # the budget is all held
        line.cut()
        a.fake.release()  # the streams end, and settle, while the store is away

    targets = [(p.url, p.key) for p in (a, b, a, b, a, b)]
    assert asyncio.run(hold_streams(targets, req, outage)) == [200] * 6
    time.sleep(2.0)
    line.restore()
    total = spent(a, 6)  # the refused call went nowhere: no row
    assert total > budget * Decimal("0.9")

    def settled() -> bool:
        lim = quota(a)["budget_usd"]
        return Decimal(lim["used"]) == total and Decimal(lim["reserved"]) == 0

    wait_for(settled, timeout=30)
    assert [post(p, req=req).status_code for p in (a, b, a, b)] == [429] * 4
    time.sleep(1.0)  # a doubled batch would have landed by now
    assert Decimal(quota(b)["budget_usd"]["used"]) == total


def test_a_frozen_store_gets_calls_a_fast_answer(
    start_proxy: Callable[..., RunningProxy], store_line: tuple[TcpCut, str, dict[str, Any]],
    pg_url: str,
) -> None:  # fmt: skip
    """A store that stops answering (connections open, no reply) costs a call at most the
    quota store timeout: a hard budget refuses with 503, a rate limit lets the call through."""
    line, db, overrides = store_line
    p = start_proxy(db, **overrides)
    soft_key = p.new_key("team-b")
    req = body(400, 1000)
    run_sync(
        lambda: add_policy(pg_url, p.tenant, budget_usd=budget_for(20, req, cat=proxy_catalog()))
    )
    run_sync(lambda: add_policy(pg_url, "team-b", rpm=25))
    quota(p), quota(p, "team-b")
    assert post(p, req=req).status_code == 200
    assert post(p, soft_key, req).status_code == 200
    line.freeze()
    try:
        t0 = time.monotonic()
        hard = post(p, req=req)
        t1 = time.monotonic()
        rate = post(p, soft_key, req)
        t2 = time.monotonic()
    finally:
        line.restore()
    assert hard.status_code == 503 and hard.headers["retry-after"] == "1"
    assert hard.json()["error"]["status"] == "UNAVAILABLE"
    assert rate.status_code == 200
    limit = p.settings.quota_store_timeout
    assert t1 - t0 < limit + 1.5 and t2 - t1 < limit + 1.5, (t1 - t0, t2 - t1)
    wait_for(lambda: post(p, req=req).status_code == 200, timeout=15)


# -- 16.9 and 16.11: the Redis client -----------------------------------------------------------


def test_redis_cut_then_back_no_500_and_at_once_no_503(
    tmp_path: Path, redis_line: tuple[TcpCut, str, str], pg_url: str,
    fake_server: tuple[FakeGemini, str], fake: FakeGemini,
) -> None:  # fmt: skip
    """``gemini-meter serve`` (uvloop, as deployed) with Redis cut under load: calls get 503
    (hard budget) or are served from their lease, never a 500 (a closed transport's error);
    once Redis is back the next calls succeed, none refused by a dead pooled connection."""
    line, url, prefix = redis_line
    key = run_sync(lambda: make_tenant_key(pg_url, "team-a"))
    req = body(400, 1000)
    # Room for 30 worst cases, each call costing far less: near its end for the whole test, so
    # every call asks Redis.
    run_sync(
        lambda: add_policy(pg_url, "team-a", budget_usd=budget_for(30, req, cat=proxy_catalog()))
    )
    cheap = JsonReply(text_response("ok", usage_metadata(10, 2)))
    fake.enqueue(*[cheap] * 90, action="generateContent")
    port = free_port()
    proc = _serve(_env(tmp_path, fake_server, pg_url, url, prefix), port, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"

    def burst(n: int) -> list[int]:
        async def go() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                replies = await asyncio.gather(
                    *(client.post(f"{base}{GEN}", params={"key": key}, json=req) for _ in range(n))
                )
            return [r.status_code for r in replies]

        return asyncio.run(go())

    try:
        assert burst(25) == [200] * 25  # many pooled Redis connections...
        line.cut()  # ... all of them cut
        during = [code for _ in range(6) for code in burst(1)]  # a few calls reuse one or two
        line.restore()
        assert set(during) <= {200, 503}, during
        assert 503 in during
        after = burst(25) + burst(25)  # the others, dead since the cut, are replaced at once
        assert after == [200] * 50, after
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_a_burst_of_150_calls_on_redis_is_never_refused(
    start_proxy: Callable[..., RunningProxy], pg_url: str
) -> None:
    """Many calls at once wait for a Redis connection (back-pressure) or share one sync; none
    gets 503 for running out of connections."""
    prefix = f"gm-fault:{uuid.uuid4().hex[:10]}:"
    p = start_proxy(pg_url, redis_url=REDIS_URL, redis_prefix=prefix)
    run_sync(lambda: add_policy(pg_url, p.tenant, budget_usd=Decimal(1000), rpm=100_000,
                                tpm=10**9, tokens=10**9))  # fmt: skip
    quota(p)

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=150)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            replies = await asyncio.gather(
                *(
                    client.post(f"{p.url}{GEN}", headers={"x-goog-api-key": p.key}, json=body())
                    for _ in range(150)
                )
            )
        return [r.status_code for r in replies]

    try:
        assert asyncio.run(burst()) == [200] * 150
        assert asyncio.run(burst()) == [200] * 150
    finally:
        r = Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=f"{prefix}*"))
        if keys:
            r.delete(*keys)
        r.close()


# -- 16.10: TPM under a burst --------------------------------------------------------------------


def test_a_tpm_burst_never_passes_the_limit(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    """40 calls at once against a TPM that fits 10 of them at their worst: exactly 10 go, and
    the tokens they really use stay within the limit (docs/quotas.md: TPM holds the worst)."""
    p = start_proxy(sqlite_url)
    req = body(400, 300)
    usage = worst_usage(req)
    worst = usage["totalTokenCount"]
    run_sync(lambda: add_policy(sqlite_url, p.tenant, tpm=10 * worst + worst // 2))
    quota(p)
    for _ in range(40):
        p.fake.enqueue(JsonReply(text_response("ok", usage)), action="generateContent")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=40)) as c:
            return await asyncio.gather(
                *(
                    c.post(f"{p.url}{GEN}", headers={"x-goog-api-key": p.key}, json=req)
                    for _ in range(40)
                )
            )

    replies = asyncio.run(burst())
    ok = [r for r in replies if r.status_code == 200]
    assert len(ok) == 10 and {r.status_code for r in replies} == {200, 429}
    rows = [r for r in p.rows(40) if r["status"] == 200]
    assert sum(r["total_tokens"] for r in rows) <= 10 * worst + worst // 2


# -- counters lost, and rebuilt from the ledger ------------------------------------------------


@pytest.fixture(params=["sql-postgresql", "redis"])
def shared_backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    return resolve_backend(request)


async def _wipe(kind: str, url: str, prefix: str) -> None:
    """What a Redis restart without persistence, or a truncated table, leaves: no counters."""
    if kind == "redis":
        from redis.asyncio import Redis as AsyncRedis

        r = AsyncRedis.from_url(REDIS_URL)
        keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
        return
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE quota_counters, quota_reservations"))
    finally:
        await engine.dispose()


async def test_a_store_that_lost_its_counters_counts_from_the_ledger(
    shared_backend: tuple[str, str],
) -> None:
    """Redis restarted empty, or the counters table truncated, mid-month: the next call that
    needs the counter finds it missing and it is seeded from the ledger, not restarted at 0."""
    kind, url = shared_backend
    key = await make_key(url, "team-a")
    clock = Clock(datetime.now(UTC))
    await _ledger(url, key.tenant_id, key.key_id, clock.now - timedelta(seconds=1), "0.03", 10)
    await add_policy(url, "team-a", budget_usd=Decimal("0.0325"))  # $0.0025 left, < a call
    prefix = f"gm-test:{uuid.uuid4().hex[:10]}:"
    async with service(kind, url, clock, redis_prefix=prefix) as svc:
        with pytest.raises(QuotaExceeded, match=r"\$0.03 used"):
            await svc.admit(key, model=model_id(MODEL), request=body())
        await _wipe(kind, url, prefix)
        with pytest.raises(QuotaExceeded, match=r"\$0.03 used"):
            await svc.admit(key, model=model_id(MODEL), request=body())
        [status] = await svc.status("team-a")
        assert status.used == Decimal("0.03")


def test_quotas_rebuild_sets_the_period_from_the_ledger_and_keeps_holds(
    pg_url: str, tmp_path: Path
) -> None:
    key = run_sync(lambda: make_key(pg_url, "team-a"))
    now = datetime.now(UTC)
    run_sync(lambda: add_policy(pg_url, "team-a", budget_usd=Decimal(5), tokens=10**6))
    run_sync(lambda: _ledger(pg_url, key.tenant_id, key.key_id, now, "1.25", 10))
    counter = f"t{key.tenant_id}:*:budget_usd:{period_label('month', now)}"
    later = now + timedelta(days=40)

    async def drift() -> None:
        # Counters gone wrong (say, an old Redis snapshot restored): used too low, and a call
        # in flight holding room.
        async with open_store("sql-postgresql", pg_url) as store:
            await store.rebuild(counter, 0, now=now, expires_at=later)
            held = Charge(counter, "hold", 5 * 10**10, 7, later)
            assert (await store.reserve("r1", [held], now=now, hold_until=later)).refused is None

    run_sync(drift)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    env |= {"GEMINI_METER_DATABASE_URL": pg_url, "GEMINI_METER_SPOOL_DIR": str(tmp_path)}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "proxy", "quotas", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert counter in cli("rebuild", "team-a")
    limits = {
        lim["limit"]: lim
        for lim in orjson.loads(cli("show", "team-a", "--format", "json"))["limits"]
    }
    assert Decimal(limits["budget_usd"]["used"]) == Decimal("1.25")
    assert Decimal(limits["budget_usd"]["reserved"]) == Decimal("7e-10")  # the hold is kept
    assert Decimal(limits["tokens"]["used"]) == 10


# -- a replica killed with settlements pending --------------------------------------------------


def _env(
    tmp_path: Path, fake_server: tuple[FakeGemini, str], db: str, redis_url: str, prefix: str
) -> dict[str, str]:
    """``gemini-meter serve``'s environment: this test's upstream, database, Redis, spool."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")} | {
        "GEMINI_API_KEY": UPSTREAM_KEY, "GEMINI_METER_UPSTREAM_URL": fake_server[1],
        "GEMINI_METER_DATABASE_URL": db, "GEMINI_METER_SPOOL_DIR": str(tmp_path / "spool"),
        "GEMINI_METER_REDIS_URL": redis_url, "GEMINI_METER_REDIS_PREFIX": prefix,
        "GEMINI_METER_ADMIN_TOKEN": "admin-token-for-tests", "GEMINI_METER_KEY_CACHE_TTL": "3600",
        "GEMINI_METER_LEDGER_FLUSH_INTERVAL": "0.05",
    }  # fmt: skip


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[str]:
    with open(log, "a") as out:
        argv = [sys.executable, "-m", "proxy", "serve", "--port", str(port)]
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: _up(port) or proc.poll() is not None, timeout=30)
    assert proc.poll() is None, log.read_text()
    return proc


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_sigkill_with_settlements_pending_then_restart_lands_them_once(
    tmp_path: Path, redis_line: tuple[TcpCut, str, str], pg_url: str,
    fake_server: tuple[FakeGemini, str], fake: FakeGemini,
) -> None:  # fmt: skip
    line, url, prefix = redis_line
    key = run_sync(lambda: make_tenant_key(pg_url, "team-a"))
    req = body(400, 1000)
    budget = budget_for(3.5, req, cat=proxy_catalog())
    run_sync(lambda: add_policy(pg_url, "team-a", budget_usd=budget, period="day"))
    spool = tmp_path / "spool"
    env = _env(tmp_path, fake_server, pg_url, url, prefix)
    port = free_port()
    proc = _serve(env, port, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    events = stream_events(["one", " two"], worst_usage(req))
    for _ in range(3):
        fake.enqueue(StreamReply(events, hold_after=1), action="streamGenerateContent")

    def paid() -> list[dict[str, Any]]:
        return [r for r in run_sync(lambda: fetch_rows(pg_url)) if r["status"] == 200]

    try:

        def outage() -> None:
            line.cut()
            fake.release()

        assert asyncio.run(hold_streams([(base, key)] * 3, req, outage)) == [200] * 3
        # Kept on disk, not in memory only: the settlements survive the kill (the ledger,
        # on another line, has the three rows).
        wait_for(lambda: len(paid()) == 3)
        cost = sum((r["cost_usd"] for r in paid()), Decimal(0))
        wait_for(lambda: _on_disk(spool / "quota", "budget_usd") == usd_to_units(cost))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    line.restore()
    total = cost
    for _ in range(2):  # a second start finds nothing more to add
        port = free_port()
        proc = _serve(env, port, tmp_path / "serve.log")
        try:
            base = f"http://127.0.0.1:{port}"

            def landed(base: str = base) -> bool:
                got = httpx.get(f"{base}/admin/tenants/team-a/quota", headers=ADMIN).json()
                [lim] = [x for x in got["limits"] if x["limit"] == "budget_usd"]
                return Decimal(lim["used"]) == total and Decimal(lim["reserved"]) == 0

            wait_for(landed, timeout=30)
            assert not list((spool / "quota").glob("*.json"))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)


def _on_disk(directory: Path, limit: str) -> int:
    """Use the settlement batches in ``directory`` carry for counters of ``limit``."""
    return sum(
        d["spend"]
        for f in directory.glob("*.json")
        for d in orjson.loads(f.read_bytes())["deltas"]
        if f":{limit}:" in d["counter"]
    )


# -- a batch that landed, replayed ----------------------------------------------------------------


async def test_a_replayed_batch_lands_once(shared_backend: tuple[str, str], tmp_path: Path) -> None:
    """A spooled batch whose sync did reach the store (its reply lost), found on disk after a
    crash, changes nothing when replayed; one that had not, lands once — however often."""
    kind, url = shared_backend
    key = await make_key(url, "team-a")
    await add_policy(url, "team-a", budget_usd=Decimal(10))
    prefix = f"gm-test:{uuid.uuid4().hex[:10]}:"
    clock = Clock()
    async with service(kind, url, clock, redis_prefix=prefix) as svc:
        adm = await svc.admit(key, model=model_id(MODEL), request=body())
        svc.settle(adm, cost_usd=Decimal("0.002"), tokens=10)
        await svc.drain()
        seq, holder = svc._syncer._seq, svc.holder  # the last batch, which landed
        line = next(a.line for a in svc._syncer.accounts.values() if a.limit == 10 * 10**10)
    c = line.charge

    def batch(seq: int, usd: str) -> Batch:
        spend = Delta(
            c.counter, c.kind, c.limit, c.expires_at, False, spend=usd_to_units(Decimal(usd))
        )
        return Batch(holder, seq, {c.counter: spend})

    spool = SettlementSpool(tmp_path / "quota")  # where the next service looks
    for b in (batch(seq, "0.002"), batch(seq + 1, "0.0005")):
        for _copy in range(2):  # as two dead processes might both have left it
            path = spool.write(b)
            path.rename(path.with_name(path.name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")))
    async with service(kind, url, clock, redis_prefix=prefix, spool_dir=tmp_path) as svc:
        await svc._syncer._replay_orphans()
        [status] = await svc.status("team-a")
        assert status.used == Decimal("0.0025")  # 0.002 + the fresh batch's 0.0005, once
        assert status.reserved == 0
        assert not list((tmp_path / "quota").glob("*.json"))


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)
