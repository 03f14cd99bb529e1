"""The scenarios: each runs every target (direct, proxy native, proxy OpenAI, LiteLLM) in the same
run, interleaved in rounds so that a burst of background load hits all of them alike.

- ``latency_c1``: non-stream, one request at a time: added latency (asyncio client, every
  sample kept, percentiles over all rounds pooled).
- ``throughput_c64``: non-stream, 64 connections (wrk): requests/s and latency under load.
- ``stream_c16``: 16 concurrent streams of 10 events 20 ms apart: time to first event.
- ``streams_1000``: 1,000 streams open at once: resident memory per open stream.
- ``workers``: throughput at 64 connections with ``serve --workers 1`` and ``--workers 2``.
- ``soak``: mixed traffic for N seconds: RSS flatness, and requests sent == ledger rows.
"""

from __future__ import annotations

import asyncio
import re
import resource
import statistics
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from .driver.client import Result, build_request, hold_streams, run_closed_loop, summarize
from .driver.wrk import run_wrk
from .procs import (
    PeriodicSampler,
    RssSampler,
    cpu_seconds,
    machine_busy_seconds,
    peak_kb,
    reset_peak,
    rss_kb,
)
from .stack import DIRECT_KEY, Fake, LiteLLM, Meter, wait_for_rows

__all__ = ["Bench", "Durations", "Target", "arun", "fake_capacity", "soak", "targets_for"]

T = TypeVar("T")

MODEL = "gemini-2.5-flash"
PROMPT = (
    "You are reviewing the design of a metering reverse proxy that sits in front of a large "
    "language model API. In two short paragraphs, explain what a reverse proxy adds to every "
    "call, what it costs in latency, and how a proxy can observe token usage in a streamed "
    "reply without buffering it."
)


def native_body() -> bytes:
    return orjson.dumps(
        {
            "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
            "systemInstruction": {"parts": [{"text": "You are terse."}]},
            "generationConfig": {"maxOutputTokens": 512, "temperature": 0.2},
        }
    )


def openai_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": PROMPT},
        ],
        "max_tokens": 512,
        "temperature": 0.2,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)


@dataclass(frozen=True)
class Target:
    """One way to reach the fake: directly, or through a proxy's route."""

    name: str  # direct | native | openai | litellm
    port: int
    path: str
    stream_path: str
    headers: dict[str, str]
    body: bytes
    stream_body: bytes
    pid: int  # the server whose CPU and memory this target's figures report

    host = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self) -> bytes:
        return build_request("POST", self.host, self.port, self.path, self.headers, self.body)

    def stream_request(self) -> bytes:
        return build_request(
            "POST", self.host, self.port, self.stream_path, self.headers, self.stream_body
        )


def targets_for(fake: Fake, meter: Meter, litellm: LiteLLM | None) -> list[Target]:
    json = {"content-type": "application/json"}
    gen = f"/v1beta/models/{MODEL}:generateContent"
    stream = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    out = [
        Target(
            "direct",
            fake.port,
            gen,
            stream,
            {"x-goog-api-key": DIRECT_KEY} | json,
            native_body(),
            native_body(),
            fake.proc.pid,
        ),
        Target(
            "native",
            meter.port,
            gen,
            stream,
            {"x-goog-api-key": meter.key} | json,
            native_body(),
            native_body(),
            meter.proc.pid,
        ),
        Target(
            "openai",
            meter.port,
            "/v1/chat/completions",
            "/v1/chat/completions",
            {"authorization": f"Bearer {meter.key}"} | json,
            openai_body(False),
            openai_body(True),
            meter.proc.pid,
        ),
    ]
    if litellm is not None:
        out.append(
            Target(
                "litellm",
                litellm.port,
                "/chat/completions",
                "/chat/completions",
                {"authorization": f"Bearer {litellm.key}"} | json,
                openai_body(False),
                openai_body(True),
                litellm.proc.pid,
            )
        )
    return out


@dataclass(frozen=True)
class Durations:
    rounds: int = 3
    c1_seconds: float = 5.0  # per target per round
    c64_seconds: float = 8.0
    stream_seconds: float = 6.0
    open_streams: int = 1000
    open_stream_chunks: int = 24  # 24 events 500 ms apart: each stream stays open ~11.5 s
    open_stream_delay_ms: float = 500.0
    open_ramp_seconds: float = 4.0
    workers_rounds: int = 2
    workers_seconds: float = 8.0

    @classmethod
    def quick(cls) -> Durations:
        return cls(
            rounds=1,
            c1_seconds=1.5,
            c64_seconds=2.0,
            stream_seconds=1.5,
            open_streams=200,
            open_stream_chunks=5,
            open_stream_delay_ms=250.0,
            open_ramp_seconds=0.5,
            workers_rounds=1,
            workers_seconds=1.5,
        )


# -- measuring a segment -----------------------------------------------------------------------


@dataclass
class Usage:
    """CPU and memory over one measured segment."""

    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    fake_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0  # this process and the drivers it waited for (wrk)
    machine_busy_s: float = 0.0
    server_rss_max_kb: int = 0

    @property
    def foreign_cpu_s(self) -> float:
        ours = self.server_cpu_s + self.bench_cpu_s
        if self.server_cpu_s != self.fake_cpu_s:  # direct: the server is the fake
            ours += self.fake_cpu_s
        return max(0.0, self.machine_busy_s - ours)


def _own_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@contextmanager
def measured(server_pid: int, fake_pid: int) -> Iterator[Usage]:
    u = Usage()
    t0, s0, f0 = time.monotonic(), cpu_seconds(server_pid), cpu_seconds(fake_pid)
    b0, m0 = _own_cpu(), machine_busy_seconds()
    with RssSampler(server_pid, interval=0.1) as sampler:
        yield u
    u.wall_s = time.monotonic() - t0
    u.server_cpu_s = cpu_seconds(server_pid) - s0
    u.fake_cpu_s = cpu_seconds(fake_pid) - f0
    u.bench_cpu_s = _own_cpu() - b0
    u.machine_busy_s = machine_busy_seconds() - m0
    u.server_rss_max_kb = sampler.max_kb


@dataclass
class Pooled:
    """What one target accumulated over the rounds of a scenario."""

    usage: list[Usage] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    wrk: list[dict[str, Any]] = field(default_factory=list)

    def cpu(self, requests: int) -> dict[str, Any]:
        wall = sum(u.wall_s for u in self.usage) or 1.0
        server = sum(u.server_cpu_s for u in self.usage)
        return {
            "server_cpu_pct": round(100 * server / wall, 1),
            "server_cpu_us_per_request": round(1e6 * server / requests, 1) if requests else None,
            "foreign_cpu_pct": round(100 * sum(u.foreign_cpu_s for u in self.usage) / wall, 1),
            "server_rss_max_mb": round(max(u.server_rss_max_kb for u in self.usage) / 1024, 1),
        }


def _statuses(results: Sequence[Result]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        k = r.error.split(":")[0] if r.error else str(r.status)
        out[k] = out.get(k, 0) + 1
    return out


def _diff(a: dict[str, Any], b: dict[str, Any], keys: Sequence[str]) -> dict[str, float]:
    return {k: round(a[k] - b[k], 3) for k in keys if k in a and k in b}


PCTS = ("p50_ms", "p90_ms", "p99_ms")


@dataclass
class Bench:
    fake: Fake
    targets: list[Target]
    durations: Durations
    load_cpus: Sequence[int] | None  # where wrk runs (the runner itself is pinned there too)
    log: Any = print
    # A new gemini-meter process for a route ("native", "openai"): its target and how to stop
    # it. Memory per stream is measured on a fresh (warmed) process for each route, so that no
    # route inherits a heap another route's streams grew.
    fresh: Callable[[str], tuple[Target, Callable[[], object]]] | None = None

    # -- latency at concurrency 1 ----------------------------------------------------------
    def latency_c1(self) -> dict[str, Any]:
        d = self.durations
        pooled = {t.name: Pooled() for t in self.targets}
        for r in range(d.rounds):
            for t in self.targets:
                with measured(t.pid, self.fake.proc.pid) as u:
                    stats = arun(
                        run_closed_loop(
                            t.host, t.port, [t.request()], concurrency=1, duration=d.c1_seconds
                        )
                    )
                p = pooled[t.name]
                p.usage.append(u)
                p.results += stats.results
                p.seconds += stats.elapsed
                self.log(f"  latency_c1 round {r + 1} {t.name}: {len(stats.results)} requests")
        out: dict[str, Any] = {"concurrency": 1, "driver": "asyncio+httptools", "targets": {}}
        for name, p in pooled.items():
            ok = [x for x in p.results if x.status == 200 and not x.error]
            entry = summarize([x.total_s for x in ok])
            entry |= {"rps": round(len(p.results) / p.seconds, 1), "statuses": _statuses(p.results)}
            entry |= p.cpu(len(p.results))
            header = [x.overhead_ms for x in ok if x.overhead_ms is not None]
            if header:
                entry["overhead_header"] = summarize([h / 1e3 for h in header])
            out["targets"][name] = entry
        direct = out["targets"]["direct"]
        out["added_ms"] = {
            name: _diff(v, direct, PCTS) for name, v in out["targets"].items() if name != "direct"
        }
        return out

    # -- throughput at concurrency 64 --------------------------------------------------------
    def throughput(
        self,
        targets: Sequence[Target] | None = None,
        *,
        connections: int = 64,
        rounds: int | None = None,
        seconds: float | None = None,
        pin_load: bool = True,
    ) -> dict[str, Any]:
        d = self.durations
        targets = list(targets or self.targets)
        rounds = rounds or d.rounds
        seconds = seconds or d.c64_seconds
        cpus = self.load_cpus if pin_load else None
        pooled = {t.name: Pooled() for t in targets}
        for r in range(rounds):
            for t in targets:
                with measured(t.pid, self.fake.proc.pid) as u:
                    res = run_wrk(
                        t.base_url,
                        t.path,
                        body=t.body,
                        headers=t.headers,
                        connections=connections,
                        duration=seconds,
                        cpus=cpus,
                    )
                p = pooled[t.name]
                p.usage.append(u)
                p.wrk.append(res.as_dict())
                self.log(
                    f"  c{connections} round {r + 1} {t.name}: {res.rps:.0f} req/s"
                    f" p50 {res.p50_ms:.2f} ms, errors {res.error_count}"
                )
        out: dict[str, Any] = {"connections": connections, "driver": "wrk", "targets": {}}
        for name, p in pooled.items():
            reqs = sum(w["requests"] for w in p.wrk)
            secs = sum(w["seconds"] for w in p.wrk)
            entry: dict[str, Any] = {"requests": reqs, "rps": round(reqs / secs, 1)}
            for k in (*PCTS, "p999_ms", "max_ms"):  # median over rounds
                entry[k] = round(statistics.median(w[k] for w in p.wrk), 3)
            errors: dict[str, int] = {}
            for w in p.wrk:
                for k, v in w["errors"].items():
                    errors[k] = errors.get(k, 0) + v
            entry["errors"] = {k: v for k, v in errors.items() if v}
            entry["rps_rounds"] = [w["rps"] for w in p.wrk]
            entry |= p.cpu(reqs)
            out["targets"][name] = entry
        if "direct" in out["targets"]:
            direct = out["targets"]["direct"]["rps"]
            out["rps_vs_direct"] = {
                n: round(v["rps"] / direct, 3) if direct else None
                for n, v in out["targets"].items()
                if n != "direct"
            }
        if "litellm" in out["targets"]:
            lite = out["targets"]["litellm"]["rps"]
            out["rps_vs_litellm"] = {
                n: round(out["targets"][n]["rps"] / lite, 2) if lite else None
                for n in ("native", "openai")
                if n in out["targets"]
            }
        return out

    # -- streaming at concurrency 16 ---------------------------------------------------------
    def stream_c16(self, chunks: int = 10, delay_ms: float = 20.0) -> dict[str, Any]:
        d = self.durations
        self.fake.configure(stream_chunks=chunks, stream_delay_ms=delay_ms)
        stream_s = (chunks - 1) * delay_ms / 1e3
        pooled = {t.name: Pooled() for t in self.targets}
        for r in range(d.rounds):
            for t in self.targets:
                with measured(t.pid, self.fake.proc.pid) as u:
                    stats = arun(
                        run_closed_loop(
                            t.host,
                            t.port,
                            [t.stream_request()],
                            concurrency=16,
                            duration=d.stream_seconds,
                            stagger=stream_s,
                            think=0.005,
                            seed=r,
                        )
                    )
                p = pooled[t.name]
                p.usage.append(u)
                p.results += stats.results
                p.seconds += stats.elapsed
                self.log(f"  stream_c16 round {r + 1} {t.name}: {len(stats.results)} streams")
        out: dict[str, Any] = {
            "concurrency": 16,
            "events": chunks,
            "event_gap_ms": delay_ms,
            "driver": "asyncio+httptools",
            "targets": {},
        }
        for name, p in pooled.items():
            ok = [x for x in p.results if x.status == 200 and not x.error]
            out["targets"][name] = {
                "streams": len(p.results),
                "streams_per_s": round(len(p.results) / p.seconds, 1),
                "statuses": _statuses(p.results),
                "ttfb": summarize([x.first_body_s for x in ok]),
                "headers": summarize([x.headers_s for x in ok]),
                "total": summarize([x.total_s for x in ok]),
                "body_bytes_mean": round(sum(x.body_bytes for x in ok) / max(1, len(ok))),
            } | p.cpu(len(p.results))
        direct = out["targets"]["direct"]
        out["added_ttfb_ms"] = {
            n: _diff(v["ttfb"], direct["ttfb"], PCTS)
            for n, v in out["targets"].items()
            if n != "direct"
        }
        return out

    # -- 1,000 open streams --------------------------------------------------------------------
    def open_streams(self) -> dict[str, Any]:
        d = self.durations
        n = d.open_streams
        self.fake.configure(
            stream_chunks=d.open_stream_chunks, stream_delay_ms=d.open_stream_delay_ms
        )
        out: dict[str, Any] = {
            "streams": n,
            "events": d.open_stream_chunks,
            "event_gap_ms": d.open_stream_delay_ms,
            "ramp_s": d.open_ramp_seconds,
            "targets": {},
        }
        try:
            for target in self.targets:
                stop: Callable[[], object] | None = None
                t = target
                if self.fresh is not None and target.name in ("native", "openai"):
                    t, stop = self.fresh(target.name)
                    arun(run_closed_loop(t.host, t.port, [t.request()], concurrency=8, count=200))
                    arun(
                        run_closed_loop(
                            t.host, t.port, [t.stream_request()], concurrency=8, count=16
                        )
                    )
                time.sleep(0.5)  # let the previous target's connections close
                before = rss_kb(t.pid)
                reset_peak(t.pid)

                def snapshot(pid: int = t.pid) -> dict[str, int]:
                    return {"rss_kb": rss_kb(pid), "fake_open": self.fake.open_streams()}

                with measured(t.pid, self.fake.proc.pid) as u:
                    results, snap, open_after = arun(
                        hold_streams(
                            t.host,
                            t.port,
                            t.stream_request(),
                            n=n,
                            ramp=d.open_ramp_seconds,
                            when_all_open=snapshot,
                        )
                    )
                time.sleep(0.5)
                after = rss_kb(t.pid)
                ok = [x for x in results if x.status == 200 and not x.error]
                entry = {
                    "completed": len(ok),
                    "statuses": _statuses(results),
                    "all_open_after_s": round(open_after, 2),
                    "upstream_open_at_snapshot": snap["fake_open"],
                    "rss_before_mb": round(before / 1024, 1),
                    "rss_all_open_mb": round(snap["rss_kb"] / 1024, 1),
                    "rss_peak_mb": round(max(peak_kb(t.pid), u.server_rss_max_kb) / 1024, 1),
                    "rss_after_mb": round(after / 1024, 1),
                    "kb_per_open_stream": round((snap["rss_kb"] - before) / n, 1),
                    "kb_per_stream_at_peak": round(
                        (max(peak_kb(t.pid), u.server_rss_max_kb) - before) / n, 1
                    ),
                    "ttfb": summarize([x.first_body_s for x in ok]),
                    "total": summarize([x.total_s for x in ok]),
                    "server_cpu_s": round(u.server_cpu_s, 2),
                }
                entry["fresh_process"] = stop is not None
                if stop is not None:
                    stop()
                out["targets"][t.name] = entry
                self.log(
                    f"  streams_{n} {t.name}: {len(ok)}/{n} ok, "
                    f"{entry['kb_per_open_stream']} KB/stream"
                )
        finally:
            self.fake.configure(stream_chunks=10, stream_delay_ms=20.0)
        return out


def soak(
    fake: Fake, meter: Meter, targets: Sequence[Target], seconds: float, log: Any = print
) -> dict[str, Any]:
    """Mixed traffic for ``seconds``: 4 workers each of native and OpenAI non-stream (with a
    little think time) and 4 each of native and OpenAI streams (10 events, 20 ms apart).
    Reports RSS over time (flat = last minute within ±10% of the first after warm-up) and
    whether the ledger holds exactly one row per request sent."""
    fake.configure(stream_chunks=10, stream_delay_ms=20.0)
    by = {t.name: t for t in targets}
    # Start from a settled ledger: every call made so far written (the writer batches).
    upstream0 = fake.calls_by(meter.ledger.upstream_key)
    rows0 = wait_for_rows(meter, upstream0, timeout=30)
    mixes = [
        (by["native"].request(), 4, 0.004),
        (by["openai"].request(), 4, 0.004),
        (by["native"].stream_request(), 4, 0.0),
        (by["openai"].stream_request(), 4, 0.0),
    ]

    async def drive() -> list[Any]:
        return await asyncio.gather(
            *(
                run_closed_loop(
                    "127.0.0.1",
                    meter.port,
                    [raw],
                    concurrency=c,
                    duration=seconds,
                    think=think,
                    seed=i,
                )
                for i, (raw, c, think) in enumerate(mixes)
            )
        )

    sampler = RssSampler(meter.proc.pid, interval=1.0)
    queue = QueueDepthSampler(meter.port, interval=5.0)
    log(f"  soak: {seconds:.0f} s of mixed traffic ...")
    with measured(meter.proc.pid, fake.proc.pid) as u, sampler, queue:
        loops = arun(drive())
    sent = sum(len(s.results) for s in loops)
    failed = sum(1 for s in loops for r in s.results if r.error or r.status != 200)
    rows = wait_for_rows(meter, rows0 + sent, timeout=30) - rows0
    upstream = fake.calls_by(meter.ledger.upstream_key) - upstream0
    samples = sampler.samples
    warm = max(30.0, 0.1 * seconds) if seconds >= 120 else 0.25 * seconds
    window = min(60.0, max(5.0, 0.1 * seconds))
    first = [kb for t, kb in samples if warm <= t < warm + window]
    last = [kb for t, kb in samples if t >= samples[-1][0] - window]
    steady = [kb for t, kb in samples if t >= warm]
    first_mb = statistics.mean(first) / 1024 if first else 0.0
    last_mb = statistics.mean(last) / 1024 if last else 0.0
    growth = 100 * (last_mb - first_mb) / first_mb if first_mb else 0.0
    return {
        "seconds": seconds,
        "requests_sent": sent,
        "requests_failed": failed,
        "requests_per_s": round(sent / u.wall_s, 1),
        "ledger_rows": rows,
        "upstream_calls": upstream,
        "ledger_matches": rows == sent,
        "rss_first_window_mb": round(first_mb, 1),
        "rss_last_window_mb": round(last_mb, 1),
        "rss_min_mb": round(min(steady) / 1024, 1) if steady else None,
        "rss_max_mb": round(max(steady) / 1024, 1) if steady else None,
        "rss_growth_pct": round(growth, 2),
        "rss_flat": abs(growth) <= 10.0,
        "warmup_s": warm,
        "window_s": window,
        "rss_series_mb": [(round(t, 1), round(kb / 1024, 1)) for t, kb in samples],
        "server_cpu_pct": round(100 * u.server_cpu_s / u.wall_s, 1),
        "foreign_cpu_pct": round(100 * u.foreign_cpu_s / u.wall_s, 1),
        # Whether the ledger writer kept up: events waiting to be written, from /metrics.
        "ledger_queue_series": queue.samples,
        "ledger_queue_max": max((q for _, q in queue.samples), default=None),
    }


class QueueDepthSampler(PeriodicSampler[float]):
    """gemini_meter_ledger_queue_depth, read off the proxy's /metrics."""

    def __init__(self, port: int, interval: float = 5.0) -> None:
        super().__init__(interval)
        self.url = f"http://127.0.0.1:{port}/metrics"

    def read(self) -> float | None:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        m = re.search(r"^gemini_meter_ledger_queue_depth(?:\{[^}]*\})? (\S+)$", text, re.M)
        return float(m[1]) if m else None


def fake_capacity(fake: Fake, seconds: float, cpus: Sequence[int] | None) -> dict[str, Any]:
    """The fake alone under wrk at 64 and 1 connections, before anything else runs."""
    t = Target(
        "direct",
        fake.port,
        f"/v1beta/models/{MODEL}:generateContent",
        "",
        {"x-goog-api-key": DIRECT_KEY, "content-type": "application/json"},
        native_body(),
        b"",
        fake.proc.pid,
    )
    out: dict[str, Any] = {}
    for c in (64, 1):
        res = run_wrk(
            t.base_url,
            t.path,
            body=t.body,
            headers=t.headers,
            connections=c,
            duration=seconds,
            cpus=cpus,
        )
        out[f"c{c}"] = {"rps": round(res.rps, 1), "p50_ms": res.p50_ms, "p99_ms": res.p99_ms}
    return out


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run the drivers on uvloop, as the servers do."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return arun(coro)
    return uvloop.run(coro)
