"""Profile gemini-meter under load with py-spy and say where each request's CPU goes.

    python -m bench.profile                       # native generateContent, 16 concurrent
    python -m bench.profile --route openai --stream
    python -m bench.profile --proxy-src /tmp/patched-tree --seconds 15

Starts the fake and gemini-meter (pinned as in ``bench.run``), drives load with the asyncio
client while ``py-spy record`` samples the proxy (``--gil``: only the thread holding the GIL, so
samples are CPU the event loop could not use for anything else), then writes
``bench/results/profile-<route>[-stream].{txt,svg,raw}``: CPU µs per request by library (from
each sample's innermost frame), the top functions by own time, and the proxy's own functions by
inclusive time.

py-spy is not a project dependency: ``pip install py-spy`` into any venv, and put it on PATH or
pass ``--py-spy``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .driver.client import run_closed_loop
from .procs import cpu_seconds
from .run import RESULTS
from .scenarios import arun, targets_for
from .stack import REPO, Fake, Ledger, Meter, snapshot_source

__all__ = ["aggregate", "main"]

# Library of a frame, from its file path: where the CPU of a request goes.
GROUPS: list[tuple[str, str]] = [
    ("proxy/", "gemini-meter (proxy/)"),
    ("httpx/", "httpx client"),
    ("aiohttp/", "aiohttp client"),
    ("yarl/", "aiohttp client"),
    ("multidict/", "aiohttp client"),
    ("httpcore/", "httpcore pool + h11"),
    ("h11/", "httpcore pool + h11"),
    ("anyio/", "anyio"),
    ("sniffio/", "anyio"),
    ("uvicorn/", "uvicorn"),
    ("starlette/", "starlette/fastapi"),
    ("fastapi/", "starlette/fastapi"),
    ("sqlalchemy/", "ledger DB (sqlalchemy/aiosqlite)"),
    ("aiosqlite/", "ledger DB (sqlalchemy/aiosqlite)"),
    ("asyncpg/", "ledger DB (sqlalchemy/aiosqlite)"),
    ("prometheus_client/", "prometheus_client"),
    ("logging/", "logging"),
    ("asyncio/", "asyncio (stdlib)"),
    ("pydantic", "pydantic"),
    ("decimal", "decimal"),
]
_LINE = re.compile(r":\d+\)$")


def _group(frame: str) -> str:
    for needle, name in GROUPS:
        if needle in frame:
            return name
    return "other (stdlib, C, interpreter)"


def aggregate(raw: Path, top: int = 30) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """Samples, own time by group, own time by function, inclusive time by function."""
    by_group: Counter[str] = Counter()
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        # A frame name can hold a newline (generated code): its pieces are not samples.
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        leaf = frames[-1]
        own[leaf] += n
        by_group[_group(leaf)] += n
        for f in set(frames):
            incl[f] += n
    return total, by_group, own, incl


def find_py_spy(given: str | None) -> str | None:
    for candidate in (given, shutil.which("py-spy"), "/tmp/bench-tools/bin/py-spy"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--route", choices=("native", "openai"), default="native")
    p.add_argument("--stream", action="store_true", help="streams (10 events, 20 ms apart)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--proxy-src", type=Path, default=REPO)
    p.add_argument("--proxy-log-level", default="info")
    p.add_argument("--py-spy", dest="py_spy", default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    spy = find_py_spy(args.py_spy)
    if spy is None:
        print(
            "py-spy not found: pip install py-spy (in any venv) and pass --py-spy", file=sys.stderr
        )
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    server, load = (cpus[-1:], cpus[:-1]) if len(cpus) >= 2 else (None, None)
    if load:
        os.sched_setaffinity(0, set(load))
    rundir = Path(tempfile.mkdtemp(prefix="gemini-meter-profile-"))
    name = f"profile-{args.route}{'-stream' if args.stream else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    raw, svg, txt = (args.out / f"{name}.{ext}" for ext in ("raw", "svg", "txt"))
    fake = meter = None
    try:
        src = snapshot_source(args.proxy_src.resolve(), rundir)
        fake = Fake.start(rundir, load)
        ledger = Meter.setup_ledger(src, Ledger.sqlite(rundir), fake.url)
        meter = Meter.start(
            src,
            ledger,
            fake.url,
            cpus=server,
            log_level=args.proxy_log_level,
        )
        target = next(t for t in targets_for(fake, meter, None) if t.name == args.route)
        req = target.stream_request() if args.stream else target.request()
        arun(
            run_closed_loop(
                target.host, target.port, [req], concurrency=args.concurrency, duration=2.0
            )
        )
        spies = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(meter.proc.pid),
                    "--gil",
                    "--nonblocking",
                    "-r",
                    str(args.rate),
                    "-d",
                    str(int(args.seconds)),
                    "-f",
                    fmt,
                    "-o",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for fmt, path in (("raw", raw), ("flamegraph", svg))
        ]
        time.sleep(0.5)
        c0 = cpu_seconds(meter.proc.pid)
        stats = arun(
            run_closed_loop(
                target.host, target.port, [req], concurrency=args.concurrency, duration=args.seconds
            )
        )
        cpu = cpu_seconds(meter.proc.pid) - c0
        for s in spies:
            s.wait(timeout=60)
    finally:
        for proc in (meter, fake):
            if proc is not None:
                proc.proc.stop()
        shutil.rmtree(rundir, ignore_errors=True)
    n = len(stats.results)
    per_req_us = 1e6 * cpu / n if n else 0.0
    total, groups, own, incl = aggregate(raw)
    lines = [
        f"# {name}: {n} requests in {stats.elapsed:.1f} s ({n / stats.elapsed:.0f}/s) at "
        f"concurrency {args.concurrency}; proxy CPU {cpu:.2f} s = {per_req_us:.0f} µs per request",
        f"# py-spy --gil samples: {total}; µs/request below = share of samples × CPU per request",
        "",
        "## CPU per request by library (innermost frame)",
    ]
    for g, c in groups.most_common():
        lines.append(f"{100 * c / total:5.1f}%  {per_req_us * c / total:7.0f} µs  {g}")
    lines += ["", f"## top {args.top} functions by own time"]
    for f, c in own.most_common(args.top):
        lines.append(f"{100 * c / total:5.1f}%  {per_req_us * c / total:7.0f} µs  {f}")
    lines += ["", "## gemini-meter functions by inclusive time"]
    ours = [(f, c) for f, c in incl.most_common() if "proxy/" in f]
    for f, c in ours[: args.top]:
        lines.append(f"{100 * c / total:5.1f}%  {per_req_us * c / total:7.0f} µs  {f}")
    txt.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {txt}, {svg} (flame graph) and {raw}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
