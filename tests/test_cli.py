"""The gemini-meter command as an operator runs it: a real process, real environment variables."""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import UPSTREAM_KEY, fetch_rows, run_sync
from tests.fakes.gemini import FakeGemini, text_reply, usage_metadata


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    e["GEMINI_METER_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tenant_and_key_lifecycle(env: dict[str, str]) -> None:
    assert cli(env, "db", "upgrade").returncode == 0
    assert cli(env, "tenants", "create", "team-a").returncode == 0
    assert cli(env, "tenants", "create", "team-a").returncode == 1  # names are unique
    created = cli(env, "keys", "create", "--tenant", "team-a")
    assert created.returncode == 0
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n" and secret.startswith("gm-") and len(secret) > 40
    listed = cli(env, "keys", "list").stdout
    assert secret[:11] in listed and secret not in listed  # only the display prefix is kept
    assert "team-a" in cli(env, "tenants", "list").stdout
    assert cli(env, "keys", "create", "--tenant", "nobody").returncode == 1
    assert cli(env, "keys", "revoke", secret[:11]).returncode == 0
    assert "revoked" in cli(env, "keys", "list").stdout


def test_serve_meters_and_sigterm_flushes_the_ledger(
    env: dict[str, str], fake_server: tuple[FakeGemini, str], fake: FakeGemini
) -> None:
    assert cli(env, "db", "upgrade").returncode == 0
    assert cli(env, "tenants", "create", "team-a").returncode == 0
    key = cli(env, "keys", "create", "--tenant", "team-a").stdout.strip()
    port = free_port()
    env |= {
        "GEMINI_API_KEY": UPSTREAM_KEY,
        "GEMINI_METER_UPSTREAM_URL": fake_server[1],
        "GEMINI_METER_PORT": str(port),
        # Nothing is written before shutdown unless SIGTERM flushes it.
        "GEMINI_METER_LEDGER_FLUSH_INTERVAL": "3600",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "proxy did not start"
            time.sleep(0.1)
        for i in range(5):
            fake.enqueue(text_reply("ok", usage_metadata(10 + i, 3)), action="generateContent")
            r = httpx.post(
                f"{base}/v1beta/models/gemini-2.5-flash:generateContent",
                params={"key": key}, json={"contents": [{"parts": [{"text": "hi"}]}]},
            )  # fmt: skip
            assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why.
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out
    assert key not in out and UPSTREAM_KEY not in out  # ?key= is redacted from access logs
    assert out.count(':generateContent?key=REDACTED HTTP/1.1" 200 ') == 5  # one line per call
    rows = run_sync(lambda: fetch_rows(env["GEMINI_METER_DATABASE_URL"]))
    assert sorted(r["prompt_tokens"] for r in rows) == [10, 11, 12, 13, 14]

    report = orjson.loads(cli(env, "usage", "--format", "json").stdout)
    assert report[0]["tenant"] == "team-a" and report[0]["model"] == "gemini-2.5-flash"
    assert report[0]["requests"] == 5 and report[0]["prompt_tokens"] == 60
    assert report[0]["output_tokens"] == 15
    as_csv = list(csv.DictReader(io.StringIO(cli(env, "usage", "--format", "csv").stdout)))
    assert as_csv[0]["requests"] == "5"
    table = cli(env, "usage", "--tenant", "team-a", "--from", "2000-01-01").stdout
    assert "gemini-2.5-flash" in table
    empty = cli(env, "usage", "--from", "2000-01-01", "--to", "2000-01-02", "--format", "json")
    assert orjson.loads(empty.stdout) == []


def test_prices_list_and_quote(env: dict[str, str]) -> None:
    listed = cli(env, "prices")
    assert listed.returncode == 0 and "gemini-2.0-flash" in listed.stdout
    assert "seeds/004" in cli(env, "prices", "--price-list", "vertex-ai", "--sources").stdout
    q = cli(
        env, "prices", "quote", "--model", "gemini-2.0-flash", "--prompt-tokens", "1000000",
        "--output-tokens", "1000000", "--cached-tokens", "500000",
    )  # fmt: skip
    assert q.returncode == 0
    # 500k input x $0.10 + 500k cached x $0.025 + 1M output x $0.40 = $0.4625
    assert "0.4625000000" in q.stdout
    unknown = cli(env, "prices", "quote", "--model", "no-such-model", "--prompt-tokens", "1",
                  "--output-tokens", "1")  # fmt: skip
    assert unknown.returncode == 1 and "UNPRICED" in unknown.stdout
