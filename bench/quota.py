"""Quotas at the speed of the proxy (issue 18): what a policy costs on every quota store.

    python -m bench.quota [--quick] [--rounds 3] [--seconds 8] [--c1-seconds 5]
                          [--only single,replicas,exhaust]

``single``: one gemini-meter per configuration, each on a fresh ledger, all started first and
then measured in turn for ``--rounds`` rounds (a burst of other work hits them alike):

    sqlite              SQLite ledger, the tenant has no policy
    sqlite+policy       ... a policy: the in-process quota store
    pg                  PostgreSQL ledger, no policy
    pg+policy           ... the SQL quota store (PostgreSQL)
    pg+redis+policy     ... the Redis quota store

The policy has every limit kind, far above the load, so nothing should be refused: a hard
monthly budget, a token quota, RPM, TPM and allowed models. Each configuration is measured at
concurrency 1 (the asyncio client: added p50/p99 over the direct path, measured alongside) and
at 64 connections (wrk: requests/s, refusals). The proxy runs alone on the last core, as in
``bench.run``; PostgreSQL and Redis are the machine's own and are not pinned.

``replicas``: two gemini-meters on one PostgreSQL (SQL store, and Redis store), both on the
server core, 32 connections each: the sum against one replica's 64.

``exhaust``: two replicas, 64 connections between them, a hard budget that fits ``N`` calls
at their worst case and each call spending all of it: the calls admitted (exactly ``N``
expected: no overshoot, no under-admission) and the ledger's spend against the budget.

Results go to ``bench/results/quota-<timestamp>.json`` and ``.md`` (printed too).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from .driver.client import run_closed_loop, summarize
from .driver.wrk import have_wrk, run_wrk
from .procs import cpu_seconds
from .run import RESULTS, log, machine, source_info
from .scenarios import Target, arun, native_body, targets_for
from .stack import (
    DIRECT_KEY,
    PROXY_PYTHON,
    REPO,
    Fake,
    Ledger,
    Meter,
    pg_available,
    snapshot_source,
)

__all__ = ["main"]

REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
# Every limit kind, far above any load here: nothing should be refused.
POLICY = ("--budget", "1000000", "--period", "month", "--tokens", "1000000000000",
          "--rpm", "100000000", "--tpm", "100000000000", "--models", "gemini-*")  # fmt: skip
CONFIGS = ("sqlite", "sqlite+policy", "pg", "pg+policy", "pg+redis+policy")


@dataclass
class Config:
    name: str
    meters: list[Meter]
    ledger: Ledger

    def targets(self, fake: Fake) -> list[Target]:
        return [next(t for t in targets_for(fake, m, None) if t.name == "native")
                for m in self.meters]  # fmt: skip


def cli(src: Path, ledger: Ledger, upstream: str, extra: dict[str, str], *args: str) -> str:
    env = Meter.env(src, ledger, upstream, 0, "warning") | extra
    done = subprocess.run([PROXY_PYTHON, "-m", "proxy", *args], env=env, cwd=ledger.rundir,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"gemini-meter {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def store_env(name: str, prefix: str) -> dict[str, str]:
    if "redis" in name:
        return {"GEMINI_METER_REDIS_URL": REDIS_URL, "GEMINI_METER_REDIS_PREFIX": prefix}
    return {}


@contextmanager
def configuration(
    name: str, src: Path, fake: Fake, rundir: Path, *, replicas: int = 1,
    cpus: list[int] | None, policy: tuple[str, ...] | None = POLICY,
) -> Iterator[Config]:  # fmt: skip
    """gemini-meter(s) set up as the README says, for configuration ``name``."""
    home = rundir / f"{name}-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    key = f"bench-{name}"
    ledger = Ledger.postgres(home, key) if name.startswith("pg") else Ledger.sqlite(home)
    prefix = f"gm-bench:{uuid.uuid4().hex[:10]}:"
    extra = store_env(name, prefix)
    meters: list[Meter] = []
    try:
        Meter.setup_ledger(src, ledger, fake.url)
        if "policy" in name and policy is not None:
            cli(src, ledger, fake.url, extra, "quotas", "set", "bench", *policy)
        for _ in range(replicas):
            meters.append(Meter.start(src, ledger, fake.url, cpus=cpus, log_level="warning",
                                      extra_env=extra))  # fmt: skip
        yield Config(name, meters, ledger)
    finally:
        for m in meters:
            m.proc.stop()
        ledger.drop()
        if extra:
            _redis_forget(prefix)


def _redis_forget(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}*"))
    if keys:
        r.delete(*keys)
    r.close()


def c1(t: Target, seconds: float) -> dict[str, Any]:
    st = arun(run_closed_loop(t.host, t.port, [t.request()], concurrency=1, duration=seconds))
    ok = [r.total_s for r in st.results if r.status == 200 and not r.error]
    return {"times": ok, "refused": len(st.results) - len(ok), "n": len(st.results)}


def c64(targets: list[Target], seconds: float, load: list[int] | None) -> dict[str, Any]:
    """wrk on every target at once, the 64 connections split between them."""
    import concurrent.futures

    each = 64 // len(targets)
    pids = [t.pid for t in targets]
    cpu0 = sum(cpu_seconds(p) for p in pids)
    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        runs = list(pool.map(lambda t: run_wrk(t.base_url, t.path, body=t.body, headers=t.headers,
                                               connections=each, duration=seconds, cpus=load),
                             targets))  # fmt: skip
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    reqs = sum(r.requests for r in runs)
    return {
        "rps": sum(r.rps for r in runs),
        "p50_ms": statistics.median(r.p50_ms for r in runs),
        "p99_ms": max(r.p99_ms for r in runs),
        "refused": sum(r.errors.get("status", 0) for r in runs),
        "errors": sum(v for r in runs for k, v in r.errors.items() if k != "status"),
        "cpu_us_per_req": round(1e6 * cpu / reqs, 1) if reqs else None,
    }


def single(fake: Fake, src: Path, rundir: Path, args: argparse.Namespace,
           server: list[int] | None, load: list[int] | None) -> dict[str, Any]:  # fmt: skip
    names = [n for n in CONFIGS if not n.startswith("pg") or pg_available()]
    direct = direct_target(fake)
    pooled: dict[str, dict[str, list[Any]]] = {n: {"c1": [], "c64": []} for n in ["direct", *names]}
    with contextlib.ExitStack() as stack:
        configs = [stack.enter_context(configuration(n, src, fake, rundir, cpus=server))
                   for n in names]  # fmt: skip
        for cfg in configs:  # warm up: first calls, leases
            t = cfg.targets(fake)[0]
            arun(run_closed_loop(t.host, t.port, [t.request()], concurrency=8, duration=1.0))
        for r in range(args.rounds):
            pooled["direct"]["c1"].append(c1(direct, args.c1_seconds))
            for cfg in configs:
                t = cfg.targets(fake)[0]
                pooled[cfg.name]["c1"].append(c1(t, args.c1_seconds))
                pooled[cfg.name]["c64"].append(c64([t], args.seconds, load))
                log(f"  round {r + 1} {cfg.name}: c64 {pooled[cfg.name]['c64'][-1]['rps']:.0f}/s")
    return summarise(pooled)


def direct_target(fake: Fake) -> Target:
    """The native call straight to the fake: the baseline of the added latency."""
    gen = "/v1beta/models/gemini-2.5-flash:generateContent"
    headers = {"x-goog-api-key": DIRECT_KEY, "content-type": "application/json"}
    return Target("direct", fake.port, gen, "", headers, native_body(), b"", fake.proc.pid)


def summarise(pooled: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    base = summarize([x for r in pooled["direct"]["c1"] for x in r["times"]])
    out: dict[str, Any] = {"direct_c1": base, "configs": {}}
    for name, runs in pooled.items():
        if name == "direct":
            continue
        lat = summarize([x for r in runs["c1"] for x in r["times"]])
        rounds = runs["c64"]
        out["configs"][name] = {
            "c1_p50_ms": lat["p50_ms"],
            "c1_p99_ms": lat["p99_ms"],
            "added_p50_ms": round(lat["p50_ms"] - base["p50_ms"], 3),
            "added_p99_ms": round(lat["p99_ms"] - base["p99_ms"], 3),
            "c64_rps": round(statistics.median(x["rps"] for x in rounds), 1),
            "c64_rps_rounds": [round(x["rps"]) for x in rounds],
            "c64_p50_ms": round(statistics.median(x["p50_ms"] for x in rounds), 2),
            "c64_p99_ms": round(statistics.median(x["p99_ms"] for x in rounds), 2),
            "cpu_us_per_req": statistics.median(x["cpu_us_per_req"] or 0 for x in rounds),
            "refused": sum(r["refused"] for r in runs["c1"]) + sum(x["refused"] for x in rounds),
            "errors": sum(x["errors"] for x in rounds),
        }
    return out


def replicas(fake: Fake, src: Path, rundir: Path, args: argparse.Namespace,
             server: list[int] | None, load: list[int] | None) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    for name in ("pg+policy", "pg+redis+policy"):
        runs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
        with configuration(name, src, fake, rundir, replicas=2, cpus=server) as cfg:
            targets = cfg.targets(fake)
            for t in targets:
                arun(run_closed_loop(t.host, t.port, [t.request()], concurrency=8, duration=1.0))
            for r in range(args.rounds):
                runs["one"].append(c64(targets[:1], args.seconds, load))
                runs["two"].append(c64(targets, args.seconds, load))
                log(f"  round {r + 1} {name}: one {runs['one'][-1]['rps']:.0f}/s, "
                    f"two {runs['two'][-1]['rps']:.0f}/s")  # fmt: skip
        out[name] = {
            k: {"rps": round(statistics.median(x["rps"] for x in v), 1),
                "refused": sum(x["refused"] for x in v), "errors": sum(x["errors"] for x in v)}
            for k, v in runs.items()
        }  # fmt: skip
    return out


def exhaust(fake: Fake, src: Path, rundir: Path, args: argparse.Namespace,
            server: list[int] | None, load: list[int] | None) -> dict[str, Any]:  # fmt: skip
    """A budget for ``calls`` worst cases, two replicas, 64 connections until it is spent."""
    from proxy.pricing.catalog import Catalog
    from proxy.pricing.cost import price_call
    from proxy.quotas.estimate import estimate_call
    from proxy.settings import Settings
    from proxy.usage import Usage

    # The catalog the proxy under test builds from its settings (the default list and its
    # fallback): the same resolution prices the ledger's rows and the quota's worst case.
    s = Settings.model_construct()  # its defaults: the bench strips GEMINI_* from its env
    catalog = Catalog.load(s.price_list, s.price_overrides, s.price_list_fallback or None)
    calls = 200 if args.quick else 2000
    est = estimate_call(catalog, "gemini-2.5-flash", orjson.loads(native_body()))
    # Every call spends all it may: the fake reports the whole output budget as thoughts.
    usage = Usage(prompt_tokens=est.prompt_tokens, thinking_tokens=est.max_output_tokens)
    cost = price_call(catalog, "gemini-2.5-flash", usage, status=200, at=None).cost
    assert est.cost_usd is not None and cost is not None
    budget = (cost * calls + cost / 2).quantize(Decimal("1e-10"))
    fake.configure(usage_prompt=est.prompt_tokens, usage_output=0,
                   usage_thoughts=est.max_output_tokens)  # fmt: skip
    out: dict[str, Any] = {"calls_that_fit": calls, "budget_usd": str(budget),
                           "worst_case_usd": str(est.cost_usd), "call_usd": str(cost)}  # fmt: skip
    try:
        for name in ("pg+policy", "pg+redis+policy"):
            policy = ("--budget", str(budget), "--period", "month")
            with configuration(name, src, fake, rundir, replicas=2, cpus=server,
                               policy=policy) as cfg:  # fmt: skip
                before = fake.calls_by(cfg.ledger.upstream_key)
                t0 = time.monotonic()
                res = c64(cfg.targets(fake), max(2.0, args.seconds), load)
                admitted = fake.calls_by(cfg.ledger.upstream_key) - before
                for m in cfg.meters:
                    m.proc.stop()  # the ledger flushes
                spend = _ledger_spend(cfg.ledger)
                left = budget - spend
                out[name] = {
                    "admitted": admitted, "spend_usd": str(spend), "over_budget": spend > budget,
                    # Under-admission: room left that one more call would have fitted.
                    "left_usd": str(left), "left_fits_a_call": left >= est.cost_usd,
                    "refused": res["refused"], "seconds": round(time.monotonic() - t0, 1),
                }  # fmt: skip
                log(f"  {name}: {admitted} admitted of {calls}, spend {spend} of {budget}")
    finally:
        fake.configure(usage_prompt=12, usage_output=17, usage_thoughts=423)
    return out


def _ledger_spend(ledger: Ledger) -> Decimal:
    import asyncio

    import asyncpg

    from .stack import PG_URL

    async def total() -> Decimal:
        conn = await asyncpg.connect(PG_URL.rsplit("/", 1)[0] + f"/{ledger.pg_name}")
        try:
            total = await conn.fetchval("SELECT coalesce(sum(cost_usd), 0) FROM usage_events")
            return Decimal(total)
        finally:
            await conn.close()

    return asyncio.run(total())


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [f"# Quota scenario `{meta['stamp']}`", "", f"`{meta['command']}` on git "
             f"`{meta['source'].get('git_rev')}`, load average {meta['loadavg_at_start']} at "
             f"start, {meta['loadavg_at_end']} at the end.", ""]  # fmt: skip
    s = results.get("single")
    if s:
        lines += ["| configuration | added p50 at c=1 | added p99 | req/s at 64 | CPU µs/req "
                  "| refused | errors |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, c in s["configs"].items():
            rounds = ", ".join(map(str, c["c64_rps_rounds"]))
            lines.append(f"| {name} | {c['added_p50_ms']:.3f} ms | {c['added_p99_ms']:.3f} ms | "
                         f"{c['c64_rps']:.0f} ({rounds}) | {c['cpu_us_per_req']:.0f} | "
                         f"{c['refused']} | {c['errors']} |")  # fmt: skip
        lines += ["", f"Direct path at c=1: p50 {s['direct_c1']['p50_ms']} ms, "
                  f"p99 {s['direct_c1']['p99_ms']} ms.", ""]  # fmt: skip
    r = results.get("replicas")
    if r:
        lines += ["| store | one replica, 64 conn. | two replicas, 32 conn. each | refused |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, v in r.items():
            lines.append(f"| {name} | {v['one']['rps']:.0f} req/s | {v['two']['rps']:.0f} req/s |"
                         f" {v['one']['refused'] + v['two']['refused']} |")  # fmt: skip
        lines.append("")
    e = results.get("exhaust")
    if e:
        lines += [f"Budget for {e['calls_that_fit']} calls of ${e['call_usd']} "
                  f"(${e['budget_usd']}; worst case ${e['worst_case_usd']}), two replicas, "
                  "64 connections:", "", "| store | admitted | spend | over budget | left "
                  "| a call still fitted |", "|---|---|---|---|---|---|"]  # fmt: skip
        for name in ("pg+policy", "pg+redis+policy"):
            if name in e:
                v = e[name]
                lines.append(f"| {name} | {v['admitted']} | ${v['spend_usd']} | "
                             f"{v['over_budget']} | ${v['left_usd']} | "
                             f"{v['left_fits_a_call']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quota", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="one short round (smoke)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="each c=64 segment")
    p.add_argument("--c1-seconds", type=float, default=5.0, help="each c=1 segment")
    p.add_argument("--only", default="single,replicas,exhaust")
    p.add_argument("--proxy-src", type=Path, default=REPO)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.c1_seconds = 1, 2.0, 1.5
    if not have_wrk():
        log("wrk is needed: apt-get install -y wrk")
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    server, load = (cpus[-1:], cpus[:-1]) if len(cpus) >= 2 else (None, None)
    if load:
        os.sched_setaffinity(0, set(load))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    rundir = Path(tempfile.mkdtemp(prefix=f"gemini-meter-quota-{stamp}-"))
    src = snapshot_source(args.proxy_src.resolve(), rundir)
    results: dict[str, Any] = {
        "meta": {
            "stamp": stamp,
            "command": "python -m bench.quota " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine(),
            "source": source_info(args.proxy_src.resolve()),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "pinning": {"server_cpus": server, "load_cpus": load},
        }
    }  # fmt: skip
    steps: dict[str, Callable[..., dict[str, Any]]] = {
        "single": single, "replicas": replicas, "exhaust": exhaust,
    }  # fmt: skip
    fake = Fake.start(rundir, load)
    try:
        for name in (s.strip() for s in args.only.split(",")):
            log(f"{name} ...")
            results[name] = steps[name](fake, src, rundir, args, server, load)
    finally:
        fake.proc.stop()
        results["meta"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"quota-{stamp}.json"
        out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        shutil.rmtree(rundir, ignore_errors=True)
    md = render(results)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
