"""Faults: the database going away, the proxy killed, clients leaving, the upstream failing.

Every call that reached the upstream is accounted for exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, RunningProxy, fetch_rows, make_tenant_key, run_sync
from tests.fakes.gemini import (
    ErrorReply,
    FakeGemini,
    StreamReply,
    stream_events,
    usage_metadata,
)
from tests.fakes.server import serve
from tests.fakes.tcpcut import TcpCut
from tests.test_cli import free_port

BODY = {"contents": [{"parts": [{"text": "hi"}]}]}


@pytest.fixture
def pg_line(pg_url: str) -> Iterator[tuple[TcpCut, str]]:
    """The test database, reached through a line the test can cut."""
    parts = urlsplit(pg_url)
    with TcpCut(parts.hostname or "127.0.0.1", parts.port or 5432) as line:
        via = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{line.port}"))
        yield line, via


def count_rows(url: str) -> list[str]:
    return [r["id"] for r in run_sync(lambda: fetch_rows(url))]


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_database_outage_loses_nothing_and_doubles_nothing(
    start_proxy: Callable[..., RunningProxy], pg_line: tuple[TcpCut, str], pg_url: str
) -> None:
    line, via = pg_line
    p = start_proxy(via)
    url = f"{p.url}/v1beta/models/gemini-2.5-flash:generateContent"
    # One call while the database is up: the key is now known to this replica.
    assert httpx.post(url, headers={"x-goog-api-key": p.key}, json=BODY).status_code == 200
    wait_for(lambda: len(count_rows(pg_url)) == 1)

    line.cut()

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            sem = asyncio.Semaphore(50)

            async def one() -> int:
                async with sem:
                    r = await client.post(url, headers={"x-goog-api-key": p.key}, json=BODY)
                    return r.status_code

            return await asyncio.gather(*(one() for _ in range(1000)))

    statuses = asyncio.run(burst())
    assert statuses == [200] * 1000
    spool = Path(p.settings.spool_dir)
    wait_for(lambda: any(spool.glob("*.jsonl")))  # the outage went to the spool, not to memory
    line.restore()
    wait_for(lambda: len(count_rows(pg_url)) >= 1001, timeout=60)
    time.sleep(0.5)  # any double write would show up by now
    ids = count_rows(pg_url)
    assert len(ids) == 1001 and len(set(ids)) == 1001
    wait_for(lambda: not any(spool.glob("*.jsonl")))


def test_sigkill_with_a_full_spool_then_restart_writes_it(
    tmp_path: Path, pg_line: tuple[TcpCut, str], pg_url: str, fake_server: tuple[FakeGemini, str],
    fake: FakeGemini,
) -> None:  # fmt: skip
    line, via = pg_line
    key = run_sync(lambda: make_tenant_key(pg_url, "team-a"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")} | {
        "GEMINI_API_KEY": UPSTREAM_KEY,
        "GEMINI_METER_UPSTREAM_URL": fake_server[1],
        "GEMINI_METER_DATABASE_URL": via,
        "GEMINI_METER_SPOOL_DIR": str(tmp_path / "spool"),
        "GEMINI_METER_LEDGER_FLUSH_INTERVAL": "0.05",
        "GEMINI_METER_KEY_CACHE_TTL": "3600",
    }

    def start(port: int) -> subprocess.Popen[str]:
        with open(tmp_path / f"serve-{port}.log", "w") as log:  # kept for a failing run
            proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--port", str(port)], env=env,
                stdout=log, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)

    port = free_port()
    proc = start(port)
    try:
        url = f"http://127.0.0.1:{port}/v1beta/models/gemini-2.5-flash:generateContent"
        assert httpx.post(url, params={"key": key}, json=BODY).status_code == 200  # key cached
        line.cut()
        for _i in range(20):
            r = httpx.post(url, params={"key": key}, json=BODY)
            assert r.status_code == 200
        spool = tmp_path / "spool"

        def accounted() -> int:
            spooled = sum(f.read_bytes().count(b"\n") for f in spool.glob("*.jsonl"))
            return spooled + len(count_rows(pg_url))

        wait_for(lambda: accounted() >= 21)  # every call is durable: in the DB or the spool
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    line.restore()
    proc = start(free_port())
    try:
        wait_for(lambda: len(count_rows(pg_url)) >= 21, timeout=30)
        wait_for(lambda: not any(spool.glob("*.jsonl")))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    ids = count_rows(pg_url)
    assert len(ids) == 21 and len(set(ids)) == 21


async def test_client_disconnect_mid_stream_records_usage_so_far(proxy: RunningProxy) -> None:
    events = stream_events(["one", " two", " three"], usage_metadata(40, 9))
    proxy.fake.enqueue(StreamReply(events, hold_after=1))
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "POST",
            f"{proxy.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            headers={"x-goog-api-key": proxy.key},
            json=BODY,
        ) as r,
    ):
        first = await anext(r.aiter_bytes())
        assert b'"one"' in first
        # leaving the block closes the connection mid-stream
    [row] = proxy.rows()
    assert row["error_class"] == "client_disconnected"
    assert row["prompt_tokens"] == 40  # the usage the first event carried
    assert row["status"] == 200
    # The upstream call was cancelled rather than left generating.
    await proxy.fake.await_until(lambda: proxy.fake.cancelled >= 1, within=5)
    proxy.fake.release()


def test_openai_stream_disconnect_is_metered(proxy: RunningProxy) -> None:
    import openai

    proxy.fake.enqueue(
        StreamReply(stream_events(["a", "b", "c"], usage_metadata(25, 3)), hold_after=1)
    )
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=proxy.key, max_retries=0) as c:
        stream = c.chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        stream.close()
    [row] = proxy.rows()
    assert row["route"] == "openai" and row["error_class"] == "client_disconnected"
    assert row["prompt_tokens"] == 25
    proxy.fake.release()


def test_a_429_key_is_rotated_out(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    pool_fake = FakeGemini(api_key={"key-one", "key-two"})
    with serve(pool_fake) as url:
        p = start_proxy(sqlite_url, upstream_url=url, gemini_api_key="key-one,key-two")
        pool_fake.enqueue(ErrorReply("error_429"))
        r = httpx.post(
            f"{p.url}/v1beta/models/gemini-2.5-flash:generateContent",
            headers={"x-goog-api-key": p.key}, json=BODY,
        )  # fmt: skip
        assert r.status_code == 200
        used = [req.headers["x-goog-api-key"] for req in pool_fake.requests]
        assert len(used) == 2 and used[0] != used[1]
        [row] = p.rows()
        assert row["retries"] == 1 and row["status"] == 200
        # The key that got the 429 cools down: the next calls avoid it.
        for _ in range(3):
            httpx.post(
                f"{p.url}/v1beta/models/gemini-2.5-flash:generateContent",
                headers={"x-goog-api-key": p.key}, json=BODY,
            )  # fmt: skip
        later = [req.headers["x-goog-api-key"] for req in pool_fake.requests[2:]]
        assert later == [used[1]] * 3


def test_single_key_429_passes_through_without_retry(proxy: RunningProxy) -> None:
    proxy.fake.enqueue(ErrorReply("error_429"), ErrorReply("error_429"))
    r = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": proxy.key}, json=BODY,
    )  # fmt: skip
    assert r.status_code == 429
    assert len(proxy.fake.requests) == 1  # retrying the same key's quota only burns time


def test_sigterm_lets_an_open_stream_finish_and_meters_it(
    tmp_path: Path, fake_server: tuple[FakeGemini, str], fake: FakeGemini
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'grace.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")} | {
        "GEMINI_API_KEY": UPSTREAM_KEY,
        "GEMINI_METER_UPSTREAM_URL": fake_server[1],
        "GEMINI_METER_DATABASE_URL": db,
        "GEMINI_METER_SPOOL_DIR": str(tmp_path / "spool"),
        "GEMINI_METER_SHUTDOWN_GRACE": "10",
    }
    subprocess.run([sys.executable, "-m", "proxy", "db", "upgrade"], env=env, check=True)
    subprocess.run(
        [sys.executable, "-m", "proxy", "tenants", "create", "team-a"], env=env, check=True
    )
    key = subprocess.run(
        [sys.executable, "-m", "proxy", "keys", "create", "--tenant", "team-a"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _healthy(port))
        fake.enqueue(
            StreamReply(stream_events(["a", "b", "c"], usage_metadata(33, 3)), hold_after=1)
        )
        with httpx.stream(
            "POST",
            f"http://127.0.0.1:{port}/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            params={"alt": "sse", "key": key}, json=BODY, timeout=20,
        ) as r:  # fmt: skip
            it = r.iter_bytes()
            assert b'"a"' in next(it)
            proc.send_signal(signal.SIGTERM)  # mid-stream
            time.sleep(0.5)
            assert proc.poll() is None  # still serving the open stream
            fake.release()
            rest = b"".join(it)
        assert b'"c"' in rest
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    [row] = run_sync(lambda: fetch_rows(db))
    assert row["prompt_tokens"] == 33 and row["error_class"] is None


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.TransportError:
        return False
