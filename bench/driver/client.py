"""A small HTTP/1.1 load client on asyncio + httptools, timing each request from its first byte
sent: response headers, first body bytes (a stream's first event), and the end.

Used for streams (wrk cannot time a stream's first event) and wherever the bench must know
exactly how many requests completed (the soak compares that count with the ledger's rows).
Keep-alive connections, one request at a time per connection, no pipelining — as SDKs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httptools

__all__ = [
    "Client",
    "LoopStats",
    "Result",
    "build_request",
    "hold_streams",
    "run_closed_loop",
    "summarize",
]


def build_request(
    method: str, host: str, port: int, path: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


@dataclass(slots=True)
class Result:
    status: int = 0
    headers_s: float = 0.0  # from request sent to the end of the response headers
    first_body_s: float = 0.0  # ... to the first body bytes (a stream's first event)
    total_s: float = 0.0  # ... to the end of the response
    body_bytes: int = 0
    body_chunks: int = 0
    overhead_ms: float | None = None  # the proxy's x-gemini-meter-overhead-ms header, if sent
    error: str | None = None
    body: bytes | None = None  # only when asked (keep_body)


class _Protocol(asyncio.Protocol):
    def __init__(self, conn: Client) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._lost(exc)


class Client:
    """One keep-alive connection."""

    def __init__(self, host: str, port: int, keep_body: bool = False) -> None:
        self.host, self.port = host, port
        self.keep_body = keep_body
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._done: asyncio.Future[Result] | None = None
        self._result = Result()
        self._t0 = 0.0
        self._body: list[bytes] = []
        self._keep_alive = True
        self._header_name = b""

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
        self._transport = transport

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def request(self, raw: bytes) -> Result:
        if not self.connected:
            await self.connect()
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._result = Result()
        self._body = []
        self._parser = httptools.HttpResponseParser(self)
        self._t0 = time.perf_counter()
        self._transport.write(raw)
        try:
            return await self._done
        finally:
            self._done = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- parser callbacks -------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-gemini-meter-overhead-ms":
            with contextlib.suppress(ValueError):
                self._result.overhead_ms = float(value)

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._result.status = self._parser.get_status_code()
        self._result.headers_s = time.perf_counter() - self._t0
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        r = self._result
        if not r.body_chunks:
            r.first_body_s = time.perf_counter() - self._t0
        r.body_chunks += 1
        r.body_bytes += len(body)
        if self.keep_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        r = self._result
        r.total_s = time.perf_counter() - self._t0
        if not r.body_chunks:
            r.first_body_s = r.total_s
        if self.keep_body:
            r.body = b"".join(self._body)
        if not self._keep_alive:
            self.close()
        if self._done is not None and not self._done.done():
            self._done.set_result(r)

    # -- transport --------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        if self._parser is None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"parse: {exc}")

    def _lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._done is not None and not self._done.done():
            self._fail(f"connection lost: {exc!r}")

    def _fail(self, why: str) -> None:
        self._result.error = why
        self._result.total_s = time.perf_counter() - self._t0
        self.close()
        if self._done is not None and not self._done.done():
            self._done.set_result(self._result)


@dataclass
class LoopStats:
    results: list[Result] = field(default_factory=list)
    started: float = 0.0
    elapsed: float = 0.0


async def run_closed_loop(
    host: str,
    port: int,
    requests: Sequence[bytes] | Callable[[int], bytes],
    *,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
    timeout: float = 60.0,
    stagger: float = 0.0,
    think: float = 0.0,
    seed: int = 9,
) -> LoopStats:
    """``concurrency`` workers, each one connection sending its next request on completion,
    until ``duration`` seconds pass or ``count`` requests in all have been sent. A request
    that was sent always runs to its end, so completed + failed == sent exactly.

    ``stagger`` spreads the workers' first requests over that many seconds (so streams of equal
    length do not all start, and so queue, at the same instant); ``think`` waits a seeded
    uniform 0..think seconds between a worker's requests."""
    stats = LoopStats()
    rng = random.Random(seed)
    sent = 0
    pick: Callable[[int], bytes] = (
        requests if callable(requests) else (lambda i: requests[i % len(requests)])
    )
    loop = asyncio.get_running_loop()
    stats.started = loop.time()
    deadline = stats.started + duration if duration is not None else float("inf")

    async def worker(n: int) -> None:
        nonlocal sent
        client = Client(host, port)
        try:
            if stagger:
                await asyncio.sleep(stagger * n / concurrency)
            while loop.time() < deadline and (count is None or sent < count):
                i = sent
                sent += 1
                try:
                    r = await asyncio.wait_for(client.request(pick(i)), timeout)
                except (TimeoutError, OSError) as exc:
                    r = Result(error=f"{type(exc).__name__}: {exc}")
                    client.close()
                stats.results.append(r)
                if think:
                    await asyncio.sleep(rng.uniform(0, think))
        finally:
            client.close()

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    stats.elapsed = loop.time() - stats.started
    return stats


def summarize(values_s: Sequence[float]) -> dict[str, Any]:
    """p50/p90/p99/max of durations in seconds, as milliseconds (nearest-rank)."""
    if not values_s:
        return {"n": 0}
    xs = sorted(values_s)
    n = len(xs)

    def pct(p: float) -> float:
        return round(xs[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))] * 1e3, 3)

    return {
        "n": n,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(xs[-1] * 1e3, 3),
        "mean_ms": round(sum(xs) / n * 1e3, 3),
    }


class _WatchedClient(Client):
    """A client that reports its response's first body bytes (a stream's first event)."""

    def __init__(self, host: str, port: int, on_first: Callable[[], None]) -> None:
        super().__init__(host, port)
        self._on_first = on_first

    def on_body(self, body: bytes) -> None:
        first = not self._result.body_chunks
        super().on_body(body)
        if first:
            self._on_first()


async def hold_streams(
    host: str,
    port: int,
    raw: bytes,
    *,
    n: int,
    ramp: float,
    when_all_open: Callable[[], Any],
    timeout: float = 120.0,
) -> tuple[list[Result], Any, float]:
    """Open ``n`` streams over ``ramp`` seconds, each on its own connection; once every one has
    delivered its first event (all open at once), call ``when_all_open`` (the caller samples
    memory there). Returns the results, what ``when_all_open`` returned, and how long it took
    for all to be open (seconds; inf if some never opened)."""
    loop = asyncio.get_running_loop()
    opened = 0
    all_open = asyncio.Event()

    def first() -> None:
        nonlocal opened
        opened += 1
        if opened == n:
            all_open.set()

    async def one(i: int) -> Result:
        await asyncio.sleep(ramp * i / n)
        client = _WatchedClient(host, port, first)
        try:
            return await asyncio.wait_for(client.request(raw), timeout)
        except (TimeoutError, OSError) as exc:
            return Result(error=f"{type(exc).__name__}: {exc}")
        finally:
            client.close()

    t0 = loop.time()
    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    snapshot: Any = None
    open_after = float("inf")
    try:
        await asyncio.wait_for(all_open.wait(), timeout)
        open_after = loop.time() - t0
        snapshot = when_all_open()
    except TimeoutError:
        snapshot = when_all_open()
    results = await asyncio.gather(*tasks)
    return list(results), snapshot, open_after
