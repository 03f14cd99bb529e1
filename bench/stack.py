"""The servers of a run: the fake upstream, gemini-meter, and (optionally) LiteLLM's proxy.

gemini-meter runs from a snapshot of ``proxy/`` copied into the run's directory when the run
starts, so files edited while a run is going on never mix into it, and ``--proxy-src`` can point
at another tree (a patched copy, to measure a change). It is set up with the project's own
CLI — ``db upgrade``, ``tenants create``, ``keys create`` — on a fresh SQLite ledger.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .procs import Proc, free_port, http_get, http_post, start, wait_ready

__all__ = [
    "DIRECT_KEY",
    "LITELLM_UPSTREAM_KEY",
    "LITELLM_VENV",
    "UPSTREAM_KEY",
    "Fake",
    "Ledger",
    "LiteLLM",
    "Meter",
    "litellm_available",
    "snapshot_source",
]

# One upstream key per caller, so the fake's per-key counts tell who sent each call.
UPSTREAM_KEY = "bench-upstream-key"  # gemini-meter's
DIRECT_KEY = "bench-direct-key"  # the direct path's
LITELLM_UPSTREAM_KEY = "bench-litellm-key"  # LiteLLM's
# 1,000 streams need 1,000 upstream connections (HTTP/1.1); the default pool is 512.
UPSTREAM_POOL = "2048"
LITELLM_VENV = Path(os.environ.get("BENCH_LITELLM_VENV", "/tmp/litellm-venv"))
LITELLM_MASTER_KEY = "sk-bench-litellm"
# The PostgreSQL server for multi-worker runs (a database is created on it and dropped).
PG_URL = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# The interpreter gemini-meter runs on: this one, or another venv's (to try a dependency).
PROXY_PYTHON = os.environ.get("BENCH_PROXY_PYTHON", sys.executable)
REPO = Path(__file__).resolve().parent.parent


def snapshot_source(src: Path, dest: Path) -> Path:
    """Copy the ``proxy`` package of checkout ``src`` into ``dest``, with the Alembic scripts
    beside it where the checkout keeps them at the top (``migrations/``, found there by
    ``proxy.db.migrate``); returns the sys.path root."""
    target = dest / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(src / "proxy", target / "proxy", ignore=ignore)
    if (src / "migrations" / "env.py").is_file():
        shutil.copytree(src / "migrations", target / "migrations", ignore=ignore)
    return target


def _python_env(pythonpath: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


@dataclass
class Fake:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, rundir: Path, cpus: Sequence[int] | None) -> Fake:
        port = free_port()
        proc = start(
            "fake-gemini",
            [sys.executable, "-m", "bench.fake_upstream", "--port", str(port)],
            log=rundir / "fake.log",
            env=_python_env(REPO),
            cwd=REPO,
            cpus=cpus,
        )
        wait_ready(proc, f"http://127.0.0.1:{port}/_bench/stats", timeout=20)
        return cls(proc, port)

    def configure(self, **values: float) -> None:
        http_post(f"{self.url}/_bench/config", orjson.dumps(values))

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(http_get(f"{self.url}/_bench/stats"))
        return data

    def total(self) -> int:
        return int(self.stats()["total"])

    def calls_by(self, key: str) -> int:
        return int(self.stats()["by_key"].get(key, 0))

    def open_streams(self) -> int:
        return int(self.stats()["open_streams"])


@dataclass
class Ledger:
    """Where a gemini-meter under test writes: a fresh SQLite file, or a throw-away PostgreSQL
    database (``serve --workers N`` needs one) created on ``BENCH_PG``'s server and dropped
    after the run."""

    url: str
    rundir: Path
    upstream_key: str = UPSTREAM_KEY  # the key it sends upstream: its calls counted apart
    tenant_key: str = ""
    pg_name: str | None = None

    @classmethod
    def sqlite(cls, rundir: Path) -> Ledger:
        return cls(f"sqlite+aiosqlite:///{rundir / 'ledger.db'}", rundir)

    @classmethod
    def postgres(cls, rundir: Path, upstream_key: str) -> Ledger:
        name = f"gemini_meter_bench_{uuid.uuid4().hex[:10]}"
        _pg_admin(f'CREATE DATABASE "{name}"')
        base = PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        return cls(f"{base}/{name}", rundir, upstream_key, pg_name=name)

    def drop(self) -> None:
        if self.pg_name is not None:
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            self.pg_name = None

    def rows(self) -> int:
        if self.pg_name is None:
            path = self.url.split(":///", 1)[1]
            with sqlite3.connect(path, timeout=30) as db:
                return int(db.execute("SELECT count(*) FROM usage_events").fetchone()[0])

        async def count() -> int:
            import asyncpg

            conn = await asyncpg.connect(PG_URL.rsplit("/", 1)[0] + f"/{self.pg_name}")
            try:
                return int(await conn.fetchval("SELECT count(*) FROM usage_events"))
            finally:
                await conn.close()

        return asyncio.run(count())


def _pg_admin(sql: str) -> None:
    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def pg_available() -> bool:
    try:
        _pg_admin("SELECT 1")
    except Exception:
        return False
    return True


@dataclass
class Meter:
    """A running gemini-meter (``gemini-meter serve``), its tenant key and its ledger."""

    proc: Proc
    port: int
    ledger: Ledger
    workers: int
    src: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key(self) -> str:
        return self.ledger.tenant_key

    @staticmethod
    def env(src: Path, ledger: Ledger, upstream: str, port: int, log_level: str) -> dict[str, str]:
        env = _python_env(src)
        env.update(
            GEMINI_API_KEY=ledger.upstream_key,
            GEMINI_METER_UPSTREAM_URL=upstream,
            GEMINI_METER_DATABASE_URL=ledger.url,
            GEMINI_METER_PORT=str(port),
            GEMINI_METER_HOST="127.0.0.1",
            GEMINI_METER_LOG_LEVEL=log_level,
            GEMINI_METER_SPOOL_DIR=str(ledger.rundir / "spool"),
            GEMINI_METER_METRICS_MULTIPROC_DIR=str(ledger.rundir / f"metrics-{port}"),
            GEMINI_METER_UPSTREAM_MAX_CONNECTIONS=UPSTREAM_POOL,
        )
        return env

    @classmethod
    def setup_ledger(cls, src: Path, ledger: Ledger, upstream: str) -> Ledger:
        """Migrate ``ledger`` and give it one tenant and key, with the project's own CLI."""
        env = cls.env(src, ledger, upstream, 0, "warning")

        def cli(*args: str) -> str:
            done = subprocess.run(
                [PROXY_PYTHON, "-m", "proxy", *args],
                env=env,
                cwd=ledger.rundir,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"gemini-meter {' '.join(args)} failed:\n{done.stderr}")
            return done.stdout

        cli("db", "upgrade")
        cli("tenants", "create", "bench")
        ledger.tenant_key = cli("keys", "create", "--tenant", "bench", "--name", "bench").strip()
        return ledger

    @classmethod
    def start(
        cls,
        src: Path,
        ledger: Ledger,
        upstream: str,
        *,
        workers: int = 1,
        cpus: Sequence[int] | None = None,
        log_level: str = "info",
        extra_env: dict[str, str] | None = None,
    ) -> Meter:
        port = free_port()
        argv = [PROXY_PYTHON, "-m", "proxy", "serve", "--port", str(port)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        proc = start(
            f"gemini-meter[{workers}w]",
            argv,
            log=ledger.rundir / f"proxy-{workers}w-{port}.log",
            env=cls.env(src, ledger, upstream, port, log_level) | (extra_env or {}),
            cwd=ledger.rundir,
            cpus=cpus,
        )
        meter = cls(proc, port, ledger, workers, src)
        wait_ready(proc, f"{meter.url}/healthz", timeout=60)
        return meter

    @staticmethod
    def supports_workers(src: Path) -> bool:
        done = subprocess.run(
            [PROXY_PYTHON, "-m", "proxy", "serve", "--help"],
            env=_python_env(src),
            capture_output=True,
            text=True,
            check=False,
        )
        return "--workers" in done.stdout

    def ledger_rows(self) -> int:
        return self.ledger.rows()


def litellm_available() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").exists()


def install_litellm() -> None:
    """LiteLLM's proxy from PyPI into a throw-away venv, never into the project's environment."""
    if litellm_available():
        return
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True
    )


@dataclass
class LiteLLM:
    proc: Proc
    port: int
    version: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    key = LITELLM_MASTER_KEY

    @classmethod
    def start(cls, rundir: Path, upstream: str, cpus: Sequence[int] | None) -> LiteLLM:
        """LiteLLM's gemini provider calls ``{api_base}/models/{model}:{method}`` with
        ``x-goog-api-key``, so ``api_base`` is the fake's ``/v1beta``."""
        config = rundir / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: gemini-2.5-flash\n"
            "    litellm_params:\n"
            "      model: gemini/gemini-2.5-flash\n"
            f"      api_base: {upstream}/v1beta\n"
            f"      api_key: {LITELLM_UPSTREAM_KEY}\n"
            "general_settings:\n"
            f"  master_key: {LITELLM_MASTER_KEY}\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
            "  drop_params: true\n"
        )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "PYTHON"))}
        env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",  # no download of the price map at start
            LITELLM_LOG="ERROR",
            LITELLM_TELEMETRY="False",
            NO_DOCS="True",
            DISABLE_SCHEMA_UPDATE="True",
        )
        proc = start(
            "litellm",
            [
                str(LITELLM_VENV / "bin" / "litellm"),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            log=rundir / "litellm.log",
            env=env,
            cwd=rundir,
            cpus=cpus,
        )
        wait_ready(proc, f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
        version = subprocess.run(
            [
                str(LITELLM_VENV / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return cls(proc, port, version)


def wait_for_rows(meter: Meter, expected: int, timeout: float = 30.0) -> int:
    """Ledger rows once they stop growing toward ``expected`` (the writer batches)."""
    deadline = time.monotonic() + timeout
    rows = meter.ledger_rows()
    while rows < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        rows = meter.ledger_rows()
    return rows
