"""Processes of a benchmark run: start, pin to CPUs, wait until ready, sample memory, stop.

Memory comes from ``/proc/PID/status`` (``VmRSS`` now, ``VmHWM`` the peak since the last
``clear_refs`` reset), summed over a process and its children so a multi-worker server counts
whole. Linux only, like the rest of the bench.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Self, TypeVar

__all__ = [
    "Proc",
    "RssSampler",
    "cpu_seconds",
    "free_port",
    "http_get",
    "http_post",
    "machine_busy_seconds",
    "peak_kb",
    "pinned",
    "process_tree",
    "reset_peak",
    "rss_kb",
    "start",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (uvicorn's workers, multiprocessing helpers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def rss_kb(pid: int, tree: bool = True, pids: Sequence[int] | None = None) -> int:
    pids = pids if pids is not None else process_tree(pid) if tree else [pid]
    return sum(_status_kb(p, "VmRSS") for p in pids)


def peak_kb(pid: int, tree: bool = True) -> int:
    pids = process_tree(pid) if tree else [pid]
    return sum(_status_kb(p, "VmHWM") for p in pids)


def reset_peak(pid: int, tree: bool = True) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > clear_refs``); False where not allowed."""
    ok = True
    for p in process_tree(pid) if tree else [pid]:
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


T = TypeVar("T")


class PeriodicSampler(Generic[T]):
    """Calls ``read()`` every ``interval`` seconds on a thread while entered (and once more on
    exit); ``samples`` holds (seconds since start, value), readings of None left out."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: list[tuple[float, T]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> T | None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        t0 = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            value = self.read()
            if value is not None:
                self.samples.append((time.monotonic() - t0, value))
            if stopping:
                return
            self._stop.wait(self.interval)


class RssSampler(PeriodicSampler[int]):
    """A process tree's RSS in kB."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(interval)
        self.pid = pid
        self._pids: list[int] = [pid]

    def __enter__(self) -> Self:
        self._pids = process_tree(self.pid)  # once: scanning /proc each tick costs CPU
        return super().__enter__()

    def read(self) -> int:
        return rss_kb(self.pid, pids=self._pids)

    @property
    def max_kb(self) -> int:
        return max((kb for _, kb in self.samples), default=0)


def pinned(argv: Sequence[str], cpus: Sequence[int] | None) -> list[str]:
    """``argv`` run on ``cpus`` only (taskset: every thread the process ever starts inherits)."""
    if not cpus:
        return list(argv)
    return ["taskset", "-c", ",".join(str(c) for c in cpus), *argv]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    cpus: Sequence[int] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the process group this run started, then SIGKILL it after ``timeout``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def start(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    cpus: Sequence[int] | None = None,
) -> Proc:
    handle = log.open("wb")
    popen = subprocess.Popen(
        pinned(argv, cpus),
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        process_group=0,  # its own group: stopped as a whole, by its own id
    )
    handle.close()
    return Proc(name, popen, log, cpus)


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body: bytes = r.read()
        return body


def http_post(url: str, body: bytes, timeout: float = 5.0) -> bytes:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        data: bytes = r.read()
        return data


def wait_ready(
    proc: Proc, url: str, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> None:
    """Poll ``url`` until it answers (any HTTP status counts) or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            http_get(url, timeout=1.0, headers=headers)
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout:.0f}s:\n{proc.tail()}")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User + system CPU time of a process (and its descendants, live ones)."""
    total = 0
    for p in process_tree(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / _TICK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    parts = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK
