"""Non-stream load with wrk (closed loop: each connection sends its next request on a reply).

wrk is C and cheap per request, so on a 2-core machine it leaves the CPU to the servers under
test. ``post.lua`` beside this file builds the request and prints a JSON summary at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..procs import pinned

__all__ = ["WrkResult", "have_wrk", "run_wrk"]

LUA = Path(__file__).with_name("post.lua")
_MARK = "BENCH_JSON "


@dataclass(slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "mean_ms": self.mean_ms,
            "max_ms": self.max_ms,
            "errors": self.errors,
        }


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    base_url: str,
    path: str,
    *,
    body: bytes | None,
    headers: dict[str, str],
    connections: int,
    duration: float,
    method: str = "POST",
    threads: int = 1,
    timeout: float = 10.0,
    cpus: Sequence[int] | None = None,
) -> WrkResult:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(body or b"")
        body_file = f.name
    env = dict(os.environ)
    env.update(
        BENCH_METHOD=method,
        BENCH_PATH=path,
        BENCH_BODY_FILE=body_file if body else "",
        BENCH_HEADERS="\n".join(f"{k}: {v}" for k, v in headers.items()),
    )
    argv = [
        "wrk",
        f"-t{max(1, min(threads, connections))}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout:g}s",
        "-s",
        str(LUA),
        base_url,
    ]
    try:
        done = subprocess.run(
            pinned(argv, cpus),
            env=env,
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
        )
    finally:
        os.unlink(body_file)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(_MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    data = orjson.loads(line[len(_MARK) :])
    lat = data["latency_us"]
    seconds = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        seconds=seconds,
        rps=data["requests"] / seconds if seconds else 0.0,
        p50_ms=lat["p50"] / 1e3,
        p90_ms=lat["p90"] / 1e3,
        p99_ms=lat["p99"] / 1e3,
        p999_ms=lat["p999"] / 1e3,
        mean_ms=round(lat["mean"] / 1e3, 4),
        max_ms=lat["max"] / 1e3,
        errors=data["errors"],
    )
