"""The Live API relay's cost (issue 21): added latency per relayed message, memory per session.

    python -m bench.live [--messages 2000] [--sessions 1000] [--quick]

A fast fake Live upstream (``websockets``, plain ws://, its own process) answers each client
message at once with one server message. gemini-meter is set up as the README says (``db
upgrade``, ``tenants create``, ``keys create``, ``serve``) on a fresh SQLite ledger, plain HTTP
(TLS would add the same cost to both paths). One client (this process) then measures:

``relay``   round trips on one session, direct to the fake and through the proxy, taken in
            alternating blocks; a message inside a turn (the steady state of a voice session:
            forwarded first, read after). Added latency per relayed message = (proxy − direct)
            / 2, as a round trip crosses the relay twice.
``turns``   the same, every message a whole turn (the answer ends the turn with usageMetadata):
            a quota admission and a ledger row per round trip.
``memory``  the proxy's RSS (``/proc/PID/status``) before and with ``--sessions`` sessions open
            at once (each set up and idle): the difference per session.

Results are printed as a markdown table (docs/benchmarks.md, "Live API").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
MODEL = "models/gemini-2.0-flash-live-001"
UPSTREAM_KEY = "bench-upstream-key"

# -- the fake upstream (run as `python -m bench.live --fake PORT`) ----------------------------

_SETUP_COMPLETE = b'{"setupComplete": {}}'
_PART = b'{"serverContent": {"modelTurn": {"parts": [{"text": "pong"}]}}}'
_TURN = (b'{"serverContent": {"modelTurn": {"parts": [{"text": "pong"}]}, "turnComplete": true},'
         b' "usageMetadata": {"promptTokenCount": 12, "responseTokenCount": 1,'
         b' "totalTokenCount": 13}}')  # fmt: skip


async def _fake_session(ws: ServerConnection) -> None:
    try:
        await ws.recv()  # the setup
        await ws.send(_SETUP_COMPLETE)
        async for data in ws:
            end = b"turnComplete" in (data if isinstance(data, bytes) else data.encode())
            await ws.send(_TURN if end else _PART)
    except Exception:
        pass


async def _fake_main(port: int) -> None:
    async with serve(_fake_session, "127.0.0.1", port, compression=None, max_size=2**24):
        await asyncio.Future()


# -- measurement -----------------------------------------------------------------------------


def _message(n: int, turn: bool) -> str:
    if turn:
        return json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [
            {"text": f"ping {n}"}]}], "turnComplete": True}})  # fmt: skip
    return json.dumps({"realtimeInput": {"text": f"ping {n}"}})


async def _open(url: str) -> ClientConnection:
    ws = await connect(url, compression=None, max_size=2**24, open_timeout=30)
    await ws.send(json.dumps({"setup": {"model": MODEL}}))
    await ws.recv()
    return ws


async def _round_trips(ws: ClientConnection, n: int, turn: bool) -> list[float]:
    out = []
    for i in range(n):
        msg = _message(i, turn)
        t = time.perf_counter()
        await ws.send(msg)
        await ws.recv()
        out.append(time.perf_counter() - t)
    return out


async def _latency(direct: str, proxied: str, messages: int, turn: bool) -> dict[str, float]:
    a, b = await _open(direct), await _open(proxied)
    await _round_trips(a, 200, False)  # warm-up (admits the proxied session's first turn)
    await _round_trips(b, 200, False)
    da: list[float] = []
    db: list[float] = []
    block = 100
    for _ in range(max(1, messages // block)):  # alternate: a burst of other work hits both
        da += await _round_trips(a, block, turn)
        db += await _round_trips(b, block, turn)
    await a.close()
    await b.close()

    def q(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=100)[int(p) - 1] * 1e6

    return {
        "direct_p50_us": q(da, 50), "proxy_p50_us": q(db, 50),
        "direct_p99_us": q(da, 99), "proxy_p99_us": q(db, 99),
        "added_per_message_p50_us": (q(db, 50) - q(da, 50)) / 2,
        "added_per_message_p99_us": (q(db, 99) - q(da, 99)) / 2,
    }  # fmt: skip


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _memory(proxied: str, pid: int, sessions: int) -> dict[str, float]:
    # A few sessions first, so what a first session loads (modules, pools) is not counted.
    warm = [await _open(proxied) for _ in range(10)]
    await asyncio.sleep(1)
    before = _rss_kib(pid)
    opened: list[ClientConnection] = []
    for i in range(0, sessions, 50):
        opened += await asyncio.gather(*(_open(proxied) for _ in range(min(50, sessions - i))))
    await asyncio.sleep(2)
    during = _rss_kib(pid)
    for ws in [*opened, *warm]:
        await ws.close()
    return {
        "sessions": sessions,
        "rss_before_mib": before / 1024,
        "rss_open_mib": during / 1024,
        "per_session_kib": (during - before) / sessions,
    }


# -- processes -------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.1)


@contextmanager
def _stack(tmp: Path) -> Iterator[tuple[str, str, int]]:
    fake_port, proxy_port = _free_port(), _free_port()
    fake = subprocess.Popen([sys.executable, "-m", "bench.live", "--fake", str(fake_port)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")} | {
        "GEMINI_API_KEY": UPSTREAM_KEY,
        "GEMINI_METER_UPSTREAM_URL": f"http://127.0.0.1:{fake_port}",
        "GEMINI_METER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'ledger.db'}",
        "GEMINI_METER_SPOOL_DIR": str(tmp / "spool"),
        "GEMINI_METER_PORT": str(proxy_port),
        "GEMINI_METER_LOG_LEVEL": "warning",
    }

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "proxy", *args], env=env, check=True,
                              capture_output=True, text=True)  # fmt: skip
        return done.stdout.strip()

    cli("db", "upgrade")
    cli("tenants", "create", "bench")
    key = cli("keys", "create", "--tenant", "bench")
    proxy = subprocess.Popen([sys.executable, "-m", "proxy", "serve"], env=env)
    try:
        _wait(f"http://127.0.0.1:{proxy_port}/healthz", proxy)
        yield (
            f"ws://127.0.0.1:{fake_port}{PATH}",
            f"ws://127.0.0.1:{proxy_port}{PATH}?key={key}",
            proxy.pid,
        )
    finally:
        for p in (proxy, fake):
            p.terminate()
            p.wait(30)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fake", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fake:
        asyncio.run(_fake_main(args.fake))
        return
    if args.quick:
        args.messages, args.sessions = 400, 100
    with tempfile.TemporaryDirectory() as tmp, _stack(Path(tmp)) as (direct, proxied, pid):
        results: dict[str, Any] = {
            "relay": asyncio.run(_latency(direct, proxied, args.messages, turn=False)),
            "turns": asyncio.run(_latency(direct, proxied, args.messages, turn=True)),
            "memory": asyncio.run(_memory(proxied, pid, args.sessions)),
        }
    print("| scenario | direct p50 | proxy p50 | direct p99 | proxy p99 | added per message p50 "
          "| p99 |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for name in ("relay", "turns"):
        r = results[name]
        cells = ("direct_p50_us", "proxy_p50_us", "direct_p99_us", "proxy_p99_us",
                 "added_per_message_p50_us", "added_per_message_p99_us")  # fmt: skip
        print(f"| {name} | " + " | ".join(f"{r[c]:.0f} µs" for c in cells) + " |")
    m = results["memory"]
    print(f"\nmemory: {m['sessions']} sessions open: RSS {m['rss_before_mib']:.1f} → "
          f"{m['rss_open_mib']:.1f} MiB, {m['per_session_kib']:.1f} KiB per session")  # fmt: skip
    print("\n" + json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
