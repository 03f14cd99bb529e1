"""A/B of proxy trees: CPU per request and throughput of each, measured the same way in turn.

    python -m bench.compare /path/to/tree-a /path/to/tree-b [--seconds 8] [--rounds 2]

Each tree is a checkout (or any folder) with a ``proxy/`` package. For each round, each tree in
turn is started (pinned as in ``bench.run``), warmed up, and driven at 16 concurrent requests on
three workloads — native non-stream, OpenAI non-stream, OpenAI streams — while its CPU time is
read from /proc, then at one request at a time (native) for its latency. CPU µs per request is
the figure to compare: on a shared machine it moves far less than requests/s. The latency at
concurrency 1 (p50 and p99 of the rounds' pooled requests) is the A/B for the proxy's tail: the
machine's speed drifts between minutes, so two trees are only comparable when interleaved.
``BENCH_PROXY_PYTHON`` runs the trees on another interpreter (a venv with an extra dependency).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from .driver.client import run_closed_loop, summarize
from .procs import cpu_seconds, machine_busy_seconds
from .scenarios import arun, targets_for
from .stack import Fake, Ledger, Meter, snapshot_source

__all__ = ["main"]

# (route, streams, concurrency): 16 for CPU per request, 1 for the latency a lone call sees.
WORKLOADS = (
    ("native", False, 16),
    ("openai", False, 16),
    ("openai", True, 16),
    ("native", False, 1),
)


def workload_name(route: str, stream: bool, concurrency: int) -> str:
    return f"{route}{'-stream' if stream else ''}{'-c1' if concurrency == 1 else ''}"


def measure_tree(
    tree: Path, fake: Fake, rundir: Path, seconds: float, cpus: tuple[list[int] | None, ...]
) -> dict[str, dict[str, Any]]:
    server, _ = cpus
    work = Path(tempfile.mkdtemp(dir=rundir))
    src = snapshot_source(tree, work)
    ledger = Meter.setup_ledger(src, Ledger.sqlite(work), fake.url)
    meter = Meter.start(
        src,
        ledger,
        fake.url,
        cpus=server,
        log_level="info",
    )
    out: dict[str, dict[str, Any]] = {}
    try:
        targets = {t.name: t for t in targets_for(fake, meter, None)}
        for route, stream, concurrency in WORKLOADS:
            t = targets[route]
            req = t.stream_request() if stream else t.request()
            arun(run_closed_loop(t.host, t.port, [req], concurrency=concurrency, duration=1.0))
            c0, m0 = cpu_seconds(meter.proc.pid), machine_busy_seconds()
            st = arun(
                run_closed_loop(
                    t.host,
                    t.port,
                    [req],
                    concurrency=concurrency,
                    duration=seconds,
                    stagger=0.18 if stream else 0.0,
                )
            )
            cpu = cpu_seconds(meter.proc.pid) - c0
            busy = machine_busy_seconds() - m0
            n = len(st.results)
            bad = sum(1 for r in st.results if r.error or r.status != 200)
            times = [r.first_body_s if stream else r.total_s for r in st.results]
            lat = summarize(times)
            out[workload_name(route, stream, concurrency)] = {
                "cpu_us_per_req": 1e6 * cpu / n if n else 0.0,
                "rps": n / st.elapsed,
                "p50_ms": lat.get("p50_ms", 0.0),
                "times_s": times,
                "failed": bad,
                "machine_busy_pct": 100 * busy / st.elapsed / (os.cpu_count() or 1),
            }
    finally:
        meter.proc.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("trees", nargs="+", type=Path)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    server, load = (cpus[-1:], cpus[:-1]) if len(cpus) >= 2 else (None, None)
    if load:
        os.sched_setaffinity(0, set(load))
    rundir = Path(tempfile.mkdtemp(prefix="gemini-meter-compare-"))
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {str(t): [] for t in args.trees}
    fake = Fake.start(rundir, load)
    try:
        for r in range(args.rounds):
            for tree in args.trees:
                res = measure_tree(tree.resolve(), fake, rundir, args.seconds, (server, load))
                runs[str(tree)].append(res)
                print(
                    f"round {r + 1} {tree}: "
                    + ", ".join(
                        f"{k} {v['cpu_us_per_req']:.0f} µs/req {v['rps']:.0f}/s"
                        for k, v in res.items()
                    ),
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        fake.proc.stop()
        shutil.rmtree(rundir, ignore_errors=True)
    names = [workload_name(*w) for w in WORKLOADS]
    header = [
        "tree",
        *(f"{n} CPU µs/req" for n in names),
        *(f"{n} req/s" for n in names),
        "native-c1 p50 / p99 ms",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    base: dict[str, float] | None = None
    for tree, rounds in runs.items():
        cpu = {n: statistics.median(x[n]["cpu_us_per_req"] for x in rounds) for n in names}
        rps = {n: statistics.median(x[n]["rps"] for x in rounds) for n in names}
        base = base or cpu
        cells: list[Any] = [Path(tree).name]
        cells += [f"{cpu[n]:.0f} ({cpu[n] / base[n]:.2f}×)" for n in names]
        cells += [f"{rps[n]:.0f}" for n in names]
        c1 = summarize([x for r in rounds for x in r["native-c1"]["times_s"]])
        cells.append(f"{c1['p50_ms']:.3f} / {c1['p99_ms']:.3f}")
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
