"""Run the whole benchmark with one command and write its figures.

    python -m bench.run                 # every scenario, ~9 min on 2 cores
    python -m bench.run --quick         # smoke run, about 1 min
    python -m bench.run --litellm       # also LiteLLM's proxy in front of the same fake
    python -m bench.run --soak 600      # then a 10-minute mixed soak (RSS flatness, ledger rows)

Results go to ``bench/results/<timestamp>.json`` (and ``latest.json``), with a markdown report
beside them (``.md``), printed at the end too. ``python -m bench.report FILE`` re-renders one.

Layout on the machine (``--no-pin`` turns it off): the proxy under test (gemini-meter or
LiteLLM) alone on the last CPU; the fake upstream, wrk and this process on the others. On two
cores that gives the proxy one whole core, like a one-core container, and keeps the load
generator from competing with it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from . import report
from .driver.wrk import have_wrk
from .scenarios import Bench, Durations, Target, arun, fake_capacity, soak, targets_for
from .stack import (
    LITELLM_UPSTREAM_KEY,
    LITELLM_VENV,
    PG_URL,
    PROXY_PYTHON,
    REPO,
    UPSTREAM_KEY,
    UPSTREAM_POOL,
    Fake,
    Ledger,
    LiteLLM,
    Meter,
    install_litellm,
    pg_available,
    snapshot_source,
)

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("latency", "throughput", "stream", "open_streams", "workers")
WORKERS_UPSTREAM_KEY = "bench-upstream-key-workers"  # the multi-worker runs' calls, apart


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cmd(argv: list[str], cwd: Path | None = None) -> str:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, cwd=cwd, check=False, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {
            d: version(d)
            for d in ("uvicorn", "uvloop", "httptools", "httpx", "starlette", "fastapi", "orjson")
        },
        "wrk": _cmd(["wrk", "--version"]).splitlines()[0] if have_wrk() else None,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def source_info(src: Path) -> dict[str, Any]:
    return {
        "tree": str(src),
        "git_rev": _cmd(["git", "rev-parse", "--short", "HEAD"], cwd=src) or None,
        "dirty_proxy_files": [
            ln[3:]
            for ln in _cmd(["git", "status", "--porcelain", "--", "proxy"], cwd=src).splitlines()
            if ln.strip()
        ],
    }


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def warm_up(targets: list[Target], seconds: float) -> None:
    from .driver.client import run_closed_loop

    for t in targets:
        arun(run_closed_loop(t.host, t.port, [t.request()], concurrency=8, duration=seconds))
        arun(
            run_closed_loop(
                t.host, t.port, [t.stream_request()], concurrency=8, duration=seconds / 2
            )
        )


def workers_scenario(
    bench: Bench, src: Path, rundir: Path, fake: Fake, log_level: str
) -> dict[str, Any]:
    """Throughput at 64 connections under ``serve --workers 1`` and ``--workers 2``, with every
    process free to use every core (two workers need both). Several workers need PostgreSQL:
    both runs write to one throw-away database on ``BENCH_PG``'s server."""
    if not Meter.supports_workers(src):
        return {
            "status": "not measured",
            "why": "`gemini-meter serve --workers N` is not in the measured tree yet; the "
            "scenario runs as soon as it is (python -m bench.run --only workers).",
        }
    if not pg_available():
        return {
            "status": "not measured",
            "why": f"several workers need PostgreSQL and none answers at {PG_URL} (set BENCH_PG)",
        }
    ledger = Meter.setup_ledger(src, Ledger.postgres(rundir, WORKERS_UPSTREAM_KEY), fake.url)
    all_cpus = sorted(os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
    os.sched_setaffinity(fake.proc.pid, set(all_cpus))
    os.sched_setaffinity(0, set(all_cpus))
    out: dict[str, Any] = {"status": "measured", "pinning": "none (all cores shared)", "runs": {}}
    try:
        for workers in (1, 2):
            meter = Meter.start(
                src,
                ledger,
                fake.url,
                workers=workers,
                log_level=log_level,
            )
            try:
                targets = [t for t in targets_for(fake, meter, None) if t.name != "direct"]
                warm_up(targets, 1.0)
                log(f"workers={workers}")
                out["runs"][str(workers)] = bench.throughput(
                    targets,
                    rounds=bench.durations.workers_rounds,
                    seconds=bench.durations.workers_seconds,
                    pin_load=False,
                )
            finally:
                meter.proc.stop()
        one, two = out["runs"]["1"]["targets"], out["runs"]["2"]["targets"]
        out["scaling"] = {n: round(two[n]["rps"] / one[n]["rps"], 2) for n in one}
        calls, rows = fake.calls_by(WORKERS_UPSTREAM_KEY), ledger.rows()
        out["ledger"] = {"upstream_calls": calls, "ledger_rows": rows, "matches": calls == rows}
    finally:
        ledger.drop()
        cpus = bench.load_cpus
        if cpus:
            os.sched_setaffinity(fake.proc.pid, set(cpus))
            os.sched_setaffinity(0, set(cpus))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="short smoke run (about 1 min)")
    p.add_argument("--litellm", action="store_true", help="include LiteLLM's proxy")
    p.add_argument("--soak", type=float, default=0, metavar="SECONDS", help="then soak this long")
    p.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of: {', '.join(SCENARIOS)} (default: all)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--proxy-src",
        type=Path,
        default=REPO,
        help="checkout whose proxy/ package to measure (default: this one)",
    )
    p.add_argument("--proxy-log-level", default="info", help="GEMINI_METER_LOG_LEVEL (info)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--keep", action="store_true", help="keep the run's temp dir (logs, ledger)")
    args = p.parse_args(argv)

    only = {s.strip() for s in args.only.split(",") if s.strip() and s.strip() != "none"}
    if unknown := only - set(SCENARIOS):
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if not have_wrk():
        log("wrk is needed: apt-get install -y wrk")
        return 2
    if args.litellm:
        log(f"LiteLLM: {LITELLM_VENV}")
        install_litellm()

    durations = Durations.quick() if args.quick else Durations()
    ncpu = len(os.sched_getaffinity(0))
    pin = not args.no_pin and ncpu >= 2
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = cpus[-1:] if pin else None
    load_cpus = cpus[:-1] if pin else None
    _raise_fd_limit()
    if load_cpus:
        os.sched_setaffinity(0, set(load_cpus))

    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    rundir = Path(tempfile.mkdtemp(prefix=f"gemini-meter-bench-{stamp}-"))
    src = snapshot_source(args.proxy_src.resolve(), rundir)
    results: dict[str, Any] = {
        "meta": {
            "started_at": started.isoformat(timespec="seconds"),
            "command": "python -m bench.run "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(),
            "source": source_info(args.proxy_src.resolve()),
            "pinning": {"server_cpus": server_cpus, "load_cpus": load_cpus} if pin else None,
            "durations": durations.__dict__,
            "proxy_log_level": args.proxy_log_level,
            "proxy_python": PROXY_PYTHON,
            "upstream_pool": int(UPSTREAM_POOL),
            "rundir": str(rundir),
        },
        "scenarios": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out_json = args.out / f"{stamp}.json"

    def save() -> None:
        data = orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        out_json.write_bytes(data)
        (args.out / "latest.json").write_bytes(data)

    fake = meter = litellm = None
    extra_meters: list[Meter] = []  # gemini-meters started for one scenario, stopped at the end
    phases: dict[str, float] = {}
    results["meta"]["phase_seconds"] = phases
    t0 = time.monotonic()
    try:
        log(f"run dir {rundir}")
        fake = Fake.start(rundir, load_cpus)
        log("fake upstream alone ...")
        results["fake_capacity"] = fake_capacity(fake, 1.0 if args.quick else 5.0, load_cpus)
        ledger = Meter.setup_ledger(src, Ledger.sqlite(rundir), fake.url)

        def start_meter() -> Meter:
            return Meter.start(
                src,
                ledger,
                fake.url,
                cpus=server_cpus,
                log_level=args.proxy_log_level,
            )

        meter = start_meter()
        if args.litellm:
            log("starting LiteLLM ...")
            litellm = LiteLLM.start(rundir, fake.url, server_cpus)
            results["meta"]["litellm"] = litellm.version
        targets = targets_for(fake, meter, litellm)
        phases["setup"] = round(time.monotonic() - t0, 1)
        log("warming up ...")
        warm_up(targets, 0.5 if args.quick else 3.0)

        def fresh(route: str) -> tuple[Target, Callable[[], object]]:
            m = start_meter()
            extra_meters.append(m)
            t = next(x for x in targets_for(fake, m, None) if x.name == route)
            return t, m.proc.stop

        # A smoke run reuses the running proxy for open streams: faster, figures not comparable.
        bench = Bench(
            fake, targets, durations, load_cpus, log=log, fresh=None if args.quick else fresh
        )
        steps: list[tuple[str, Any]] = [
            ("latency", ("latency_c1", bench.latency_c1)),
            ("throughput", ("throughput_c64", bench.throughput)),
            ("stream", ("stream_c16", bench.stream_c16)),
            ("open_streams", (f"streams_{durations.open_streams}", bench.open_streams)),
        ]
        for name, (key_name, fn) in steps:
            if name in only:
                log(f"{key_name} ...")
                t1 = time.monotonic()
                results["scenarios"][key_name] = fn()
                phases[key_name] = round(time.monotonic() - t1, 1)
                save()
        if "workers" in only:
            log("workers ...")
            t1 = time.monotonic()
            results["scenarios"]["workers"] = workers_scenario(
                bench, src, rundir, fake, args.proxy_log_level
            )
            phases["workers"] = round(time.monotonic() - t1, 1)
            save()
        if args.soak:
            results["scenarios"]["soak"] = soak(fake, meter, targets, args.soak, log=log)
            save()
        # Every call gemini-meter sent upstream has its ledger row (and nothing else does).
        upstream = fake.calls_by(UPSTREAM_KEY)
        meter.proc.stop()  # SIGTERM: the ledger writer flushes what is queued
        rows = meter.ledger_rows()
        results["ledger"] = {
            "upstream_calls_by_gemini_meter": upstream,
            "ledger_rows": rows,
            "matches": rows == upstream,
        }
        if litellm is not None:
            results["ledger"]["upstream_calls_by_litellm"] = fake.calls_by(LITELLM_UPSTREAM_KEY)
    finally:
        for proc in (*extra_meters, litellm, meter, fake):
            if proc is not None:
                proc.proc.stop()
        results["meta"]["wall_seconds"] = round(time.monotonic() - t0, 1)
        results["meta"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        save()
    md = report.render(results)
    out_md = out_json.with_suffix(".md")
    out_md.write_text(md)
    (args.out / "latest.md").write_text(md)
    print(md)
    log(f"results: {out_json} and {out_md}")
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
