"""Markdown report of a run's JSON: the targets first, then one table per scenario.

python -m bench.report bench/results/latest.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

__all__ = ["check_targets", "render"]

ORDER = ("direct", "native", "openai", "litellm")
LABEL = {
    "direct": "direct (fake)",
    "native": "gemini-meter native",
    "openai": "gemini-meter OpenAI",
    "litellm": "LiteLLM OpenAI",
}


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:.{digits}f}×"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _ordered(targets: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(n, targets[n]) for n in ORDER if n in targets]


def check_targets(res: dict[str, Any]) -> list[list[str]]:
    """Rows of (goal, measured, met?) for the issue's targets."""
    sc = res.get("scenarios", {})
    rows: list[list[str]] = []

    def add(goal: str, measured: str, ok: bool | None) -> None:
        rows.append([goal, measured, "–" if ok is None else "yes" if ok else "**no**"])

    lat = sc.get("latency_c1")
    for route in ("native", "openai"):
        if lat and route in lat["added_ms"]:
            a = lat["added_ms"][route]
            add(
                f"c=1 non-stream, added p50 ≤ 1 ms ({route})",
                f"{a['p50_ms']:.3f} ms",
                a["p50_ms"] <= 1.0,
            )
            add(
                f"c=1 non-stream, added p99 ≤ 3 ms ({route})",
                f"{a['p99_ms']:.3f} ms",
                a["p99_ms"] <= 3.0,
            )
    thr = sc.get("throughput_c64")
    if thr and "rps_vs_litellm" in thr:
        for route, r in thr["rps_vs_litellm"].items():
            add(f"c=64 throughput ≥ 5 × LiteLLM ({route})", f"{r:.2f}×", r >= 5.0)
    elif thr:
        add("c=64 throughput ≥ 5 × LiteLLM", "LiteLLM not in this run (--litellm)", None)
    st = sc.get("stream_c16")
    for route in ("native", "openai"):
        if st and route in st["added_ttfb_ms"]:
            a = st["added_ttfb_ms"][route]
            add(
                f"stream time to first event, added p50 ≤ 1 ms ({route})",
                f"{a['p50_ms']:.3f} ms",
                a["p50_ms"] <= 1.0,
            )
    op = next((v for k, v in sc.items() if k.startswith("streams_")), None)
    if op:
        n = op["streams"]
        for route in ("native", "openai"):
            if route in op["targets"]:
                t = op["targets"][route]
                ok = t["completed"] == n and t["kb_per_open_stream"] <= 50
                add(
                    f"≤ 50 KB per open stream at {n} streams ({route})",
                    f"{t['kb_per_open_stream']:.1f} KB ({t['completed']}/{n} completed)",
                    ok,
                )
    soak = sc.get("soak")
    if soak:
        add(
            f"RSS flat ±10% over a {soak['seconds']:.0f} s soak",
            f"{soak['rss_growth_pct']:+.1f}% ({soak['rss_first_window_mb']} → "
            f"{soak['rss_last_window_mb']} MB)",
            soak["rss_flat"],
        )
        add(
            "soak: ledger rows == requests sent",
            f"{soak['ledger_rows']} rows / {soak['requests_sent']} sent",
            soak["ledger_matches"],
        )
    else:
        add("RSS flat ±10% over a 10-minute soak", "soak not in this run (--soak 600)", None)
    led = res.get("ledger")
    if led:
        add(
            "every upstream call has its ledger row",
            f"{led['ledger_rows']} rows / {led['upstream_calls_by_gemini_meter']} calls",
            led["matches"],
        )
    return rows


def render(res: dict[str, Any]) -> str:
    meta = res["meta"]
    m = meta["machine"]
    sc = res.get("scenarios", {})
    out: list[str] = [f"# gemini-meter benchmark — {meta['started_at']}", ""]
    pin = meta.get("pinning")
    src = meta["source"]
    dirty = src.get("dirty_proxy_files") or []
    out += [
        f"- command: `{meta['command']}` ({meta.get('wall_seconds', '?')} s)",
        f"- machine: {m['nproc']} CPU ({m['cpu']}), {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"Python {m['python']}; load average at start {' '.join(m['loadavg_at_start'])}",
        f"- proxy source: git {src.get('git_rev')}"
        + (f" + uncommitted changes in {len(dirty)} proxy file(s)" if dirty else " (clean)"),
        "- pinning: "
        + (
            f"servers under test on CPU {pin['server_cpus']}, fake + drivers on {pin['load_cpus']}"
            if pin
            else "none"
        ),
        f"- packages: {', '.join(f'{k} {v}' for k, v in m['packages'].items() if v)}; "
        f"{m.get('wrk') or 'no wrk'}"
        + (f"; LiteLLM {meta['litellm']}" if meta.get("litellm") else ""),
        f"- gemini-meter log level {meta['proxy_log_level']}, upstream pool "
        f"{meta['upstream_pool']} connections",
        "",
        "## Targets",
        "",
        _table(["goal", "measured", "met"], check_targets(res)),
        "",
    ]
    fc = res.get("fake_capacity")
    if fc:
        out += [
            "## The fake upstream alone",
            "",
            f"wrk, 64 connections: **{fc['c64']['rps']:.0f} req/s** "
            f"(p50 {fc['c64']['p50_ms']} ms); "
            f"1 connection: {fc['c1']['rps']:.0f} req/s (p50 {fc['c1']['p50_ms']} ms, "
            f"p99 {fc['c1']['p99_ms']} ms).",
            "",
        ]
    if lat := sc.get("latency_c1"):
        d = lat["targets"]["direct"]
        rows = []
        for n, t in _ordered(lat["targets"]):
            added = lat["added_ms"].get(n, {})
            hdr = t.get("overhead_header")
            rows.append(
                [
                    LABEL[n],
                    _f(t["p50_ms"], 3),
                    _f(t["p90_ms"], 3),
                    _f(t["p99_ms"], 3),
                    "1×" if n == "direct" else _ratio(t["p50_ms"], d["p50_ms"]),
                    _f(added.get("p50_ms"), 3),
                    _f(added.get("p99_ms"), 3),
                    f"{hdr['p50_ms']:.3f} / {hdr['p99_ms']:.3f}" if hdr else "–",
                    _f(t["rps"], 0),
                    _f(t.get("server_cpu_us_per_request"), 0),
                    _f(t.get("foreign_cpu_pct"), 0),
                ]
            )
        out += [
            "## Non-stream, concurrency 1 (added latency)",
            "",
            "Milliseconds, every request of every round pooled.",
            "",
            _table(
                [
                    "target",
                    "p50",
                    "p90",
                    "p99",
                    "p50 ÷ direct",
                    "added p50",
                    "added p99",
                    "overhead header p50 / p99",
                    "req/s",
                    "server CPU µs/req",
                    "background CPU %",
                ],
                rows,
            ),
            "",
        ]
    if thr := sc.get("throughput_c64"):
        rows = []
        for n, t in _ordered(thr["targets"]):
            rows.append(
                [
                    LABEL[n],
                    f"**{t['rps']:.0f}**",
                    "1×" if n == "direct" else f"{thr['rps_vs_direct'].get(n, 0):.3f}×",
                    f"{thr['rps_vs_litellm'][n]:.2f}×"
                    if n in thr.get("rps_vs_litellm", {})
                    else "–",
                    _f(t["p50_ms"]),
                    _f(t["p90_ms"]),
                    _f(t["p99_ms"]),
                    str(sum(t["errors"].values())) if t["errors"] else "0",
                    _f(t["server_cpu_pct"], 0),
                    _f(t["server_cpu_us_per_request"], 0),
                    _f(t["server_rss_max_mb"], 1),
                    _f(t.get("foreign_cpu_pct"), 0),
                ]
            )
        out += [
            f"## Non-stream, {thr['connections']} connections (throughput)",
            "",
            "wrk; req/s over all rounds, latency percentiles the median of the rounds (ms).",
            "",
            _table(
                [
                    "target",
                    "req/s",
                    "÷ direct",
                    "÷ LiteLLM",
                    "p50",
                    "p90",
                    "p99",
                    "errors",
                    "server CPU %",
                    "server CPU µs/req",
                    "server RSS max MB",
                    "background CPU %",
                ],
                rows,
            ),
            "",
        ]
    if st := sc.get("stream_c16"):
        rows = []
        for n, t in _ordered(st["targets"]):
            added = st["added_ttfb_ms"].get(n, {})
            rows.append(
                [
                    LABEL[n],
                    _f(t["ttfb"].get("p50_ms"), 3),
                    _f(t["ttfb"].get("p90_ms"), 3),
                    _f(t["ttfb"].get("p99_ms"), 3),
                    _f(added.get("p50_ms"), 3),
                    _f(added.get("p99_ms"), 3),
                    _f(t["total"].get("p50_ms"), 1),
                    _f(t["total"].get("p99_ms"), 1),
                    _f(t["streams_per_s"], 1),
                    str(t["streams"]),
                    _f(t["server_cpu_us_per_request"], 0),
                ]
            )
        out += [
            f"## Streams, concurrency {st['concurrency']}, {st['events']} events "
            f"{st['event_gap_ms']:.0f} ms apart",
            "",
            "Time to first event (first body bytes) and to the stream's end, ms.",
            "",
            _table(
                [
                    "target",
                    "TTFB p50",
                    "TTFB p90",
                    "TTFB p99",
                    "added p50",
                    "added p99",
                    "total p50",
                    "total p99",
                    "streams/s",
                    "streams",
                    "server CPU µs/stream",
                ],
                rows,
            ),
            "",
        ]
    op = next(((k, v) for k, v in sc.items() if k.startswith("streams_")), None)
    if op:
        _, o = op
        rows = []
        for n, t in _ordered(o["targets"]):
            rows.append(
                [
                    LABEL[n],
                    f"{t['completed']}/{o['streams']}",
                    _f(t["rss_before_mb"], 1),
                    _f(t["rss_all_open_mb"], 1),
                    f"**{_f(t['kb_per_open_stream'], 1)}**",
                    _f(t["kb_per_stream_at_peak"], 1),
                    _f(t["ttfb"].get("p50_ms"), 1),
                    _f(t["ttfb"].get("p99_ms"), 1),
                    _f(t["all_open_after_s"], 2),
                ]
            )
        out += [
            f"## {o['streams']} streams open at once ({o['events']} events "
            f"{o['event_gap_ms']:.0f} ms apart, opened over {o['ramp_s']} s)",
            "",
            "Resident memory of the server (MB) before and with every stream open; per stream "
            "= (all open − before) ÷ streams. The direct row is the fake's own memory.",
            "",
            _table(
                [
                    "target",
                    "completed",
                    "RSS before",
                    "RSS all open",
                    "KB / stream",
                    "KB / stream at peak",
                    "TTFB p50",
                    "TTFB p99",
                    "all open after s",
                ],
                rows,
            ),
            "",
        ]
    if wk := sc.get("workers"):
        out += ["## Workers", ""]
        if wk.get("status") != "measured":
            out += [f"Not measured: {wk.get('why')}", ""]
        else:
            rows = []
            for n in ("native", "openai"):
                one, two = wk["runs"]["1"]["targets"][n], wk["runs"]["2"]["targets"][n]
                rows.append(
                    [
                        LABEL[n],
                        f"{one['rps']:.0f}",
                        f"{two['rps']:.0f}",
                        f"{wk['scaling'][n]:.2f}×",
                        _f(one["p99_ms"]),
                        _f(two["p99_ms"]),
                    ]
                )
            out += [
                "64 connections, no pinning: the workers, the fake and wrk share both cores.",
                "",
                _table(
                    [
                        "route",
                        "1 worker req/s",
                        "2 workers req/s",
                        "scaling",
                        "p99 1w ms",
                        "p99 2w ms",
                    ],
                    rows,
                ),
                "",
            ]
    if soak := sc.get("soak"):
        out += [
            f"## Soak ({soak['seconds']:.0f} s, mixed stream and non-stream)",
            "",
            f"- {soak['requests_sent']} requests ({soak['requests_per_s']} /s), "
            f"{soak['requests_failed']} failed; ledger rows {soak['ledger_rows']}, upstream calls "
            f"{soak['upstream_calls']}: {'match' if soak['ledger_matches'] else '**MISMATCH**'}",
            f"- RSS after {soak['warmup_s']:.0f} s warm-up: first {soak['window_s']:.0f} s "
            f"{soak['rss_first_window_mb']} MB, last {soak['window_s']:.0f} s "
            f"{soak['rss_last_window_mb']} MB ({soak['rss_growth_pct']:+.1f}%), range "
            f"{soak['rss_min_mb']}–{soak['rss_max_mb']} MB",
            f"- server CPU {soak['server_cpu_pct']}%, background CPU {soak['foreign_cpu_pct']}%",
            f"- ledger queue (events waiting to be written, every 5 s): max "
            f"{soak.get('ledger_queue_max')}, last {_last_value(soak.get('ledger_queue_series'))}",
            "",
        ]
    if led := res.get("ledger"):
        out += [
            "## Ledger",
            "",
            f"{led['ledger_rows']} ledger rows for {led['upstream_calls_by_gemini_meter']} "
            "upstream calls gemini-meter made in the whole run: "
            f"{'every call metered once' if led['matches'] else '**mismatch**'}.",
            "",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    path = Path(args[0]) if args else Path(__file__).resolve().parent / "results" / "latest.json"
    print(render(orjson.loads(path.read_bytes())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _last_value(series: list[tuple[float, float]] | None) -> float | None:
    return series[-1][1] if series else None
