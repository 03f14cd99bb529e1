"""Shared fixtures: databases (SQLite and the machine's real PostgreSQL), the fake upstream, and a
running proxy on a real port, so real SDK clients can be pointed at it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
from google import genai
from google.genai import types
from sqlalchemy import select, text

from proxy.app import create_app
from proxy.db import queries
from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.migrate import upgrade
from proxy.db.tables import UsageEvent
from proxy.settings import Settings
from tests.fakes.gemini import FakeGemini
from tests.fakes.server import serve

UPSTREAM_KEY = "AIzaSy-upstream-SECRET-key-0123456789"
PG_ADMIN_URL = os.environ.get(
    "GEMINI_METER_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)

T = TypeVar("T")

# The two layers of the suite. A test is "e2e" when it runs a server, a database, a subprocess
# or a whole app (one of these fixtures, or a test module listed here); every other test is
# "unit": pure functions and in-process objects, the loop a developer runs in seconds with
# `pytest -m unit`.
E2E_FIXTURES = frozenset(
    {"sqlite_template", "sqlite_url", "pg_database", "pg_url", "db_url", "fake_server", "fake",
     "start_proxy", "proxy", "backend", "shared_backend"}
)  # fmt: skip
E2E_MODULES = frozenset(
    {"test_cli", "test_dashboards", "test_deploy", "test_fake_gemini", "test_fuzz",
     "test_gc_tuning", "test_live", "test_quota_manage", "test_quota_store", "test_reliability",
     "test_tcpcut"}
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        module = getattr(item, "module", None)
        e2e = fixtures & E2E_FIXTURES or (
            module is not None and module.__name__.rsplit(".", 1)[-1] in E2E_MODULES
        )
        item.add_marker(
            pytest.mark.e2e if e2e or item.get_closest_marker("e2e") else pytest.mark.unit
        )


def run_sync(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a fresh loop in a worker thread.

    Works from sync tests and from inside a running loop alike (the proxy under test serves on
    its own thread, so blocking the test's loop for a moment stalls nothing).
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(fn())).result()  # type: ignore[arg-type]


# -- databases -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@contextlib.contextmanager
def empty_pg_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server (its URL), dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        engine = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    run_sync(lambda: admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        run_sync(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head, dropped after."""
    with empty_pg_database("gemini_meter_test") as url:
        upgrade(url)
        yield url


async def truncate_pg(url: str) -> None:
    """Empty every table of the test database (each test starts from nothing)."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "TRUNCATE usage_events, usage_rollups, api_keys, tenants, quota_policies,"
                    " quota_counters, quota_reservations, resources RESTART IDENTITY CASCADE"
                )
            )
    finally:
        await engine.dispose()


@pytest.fixture
def pg_url(pg_database: str) -> str:
    run_sync(lambda: truncate_pg(pg_database))
    return pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


async def make_tenant_key(url: str, tenant: str) -> str:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            t = await queries.get_tenant(session, tenant) or await queries.create_tenant(
                session, tenant
            )
            secret, _ = await queries.create_key(session, t)
            await session.commit()
            return secret
    finally:
        await engine.dispose()


async def fetch_rows(url: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(UsageEvent).order_by(UsageEvent.created_at))
            return [dict(r._mapping) for r in result]
    finally:
        await engine.dispose()


# -- upstream and proxy --------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_server() -> Iterator[tuple[FakeGemini, str]]:
    fake = FakeGemini(api_key=UPSTREAM_KEY)
    with serve(fake) as url:
        yield fake, url


@pytest.fixture
def fake(fake_server: tuple[FakeGemini, str]) -> FakeGemini:
    fake_server[0].reset()
    return fake_server[0]


@dataclass
class RunningProxy:
    url: str
    key: str
    tenant: str
    settings: Settings
    fake: FakeGemini
    extra: dict[str, Any] = field(default_factory=dict)

    def rows(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The ledger rows, once at least ``count`` have been written."""
        deadline = time.monotonic() + timeout
        while True:
            rows = run_sync(lambda: fetch_rows(self.settings.database_url))
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)

    def new_key(self, tenant: str) -> str:
        return run_sync(lambda: make_tenant_key(self.settings.database_url, tenant))


def proxy_settings(database_url: str, upstream_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "spool_dir": Path(tempfile.mkdtemp(prefix="gm-spool-")),
        "database_url": database_url,
        "upstream_url": upstream_url,
        "gemini_api_key": UPSTREAM_KEY,
        "ledger_flush_interval": 0.02,
        "upstream_retries": 2,
        "admin_token": "admin-token-for-tests",
        # The proxies run inside the test process: leave its garbage collector alone
        # (tests/test_gc_tuning.py covers the tuning).
        "gc_tuning": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def start_proxy(
    fake_server: tuple[FakeGemini, str], fake: FakeGemini
) -> Iterator[Callable[..., RunningProxy]]:
    """Factory: start a proxy on a database; more than one may run at once (replicas)."""
    stack: list[Any] = []

    def start(database_url: str, *, tenant: str = "team-a", **overrides: Any) -> RunningProxy:
        upstream = overrides.pop("upstream_url", fake_server[1])
        settings = proxy_settings(database_url, upstream, **overrides)
        key = run_sync(lambda: make_tenant_key(database_url, tenant))
        cm = serve(create_app(settings))
        url = cm.__enter__()
        stack.append(cm)
        return RunningProxy(url=url, key=key, tenant=tenant, settings=settings, fake=fake)

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def proxy(start_proxy: Callable[..., RunningProxy], sqlite_url: str) -> RunningProxy:
    """A proxy on SQLite in front of the fake upstream, with one tenant key."""
    return start_proxy(sqlite_url)


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    """The openai SDK pointed at the proxy's /v1, closed when the test ends."""
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=proxy.key, max_retries=0) as c:
        yield c


@pytest.fixture
def sdk() -> Iterator[Callable[[str, str], genai.Client]]:
    """sdk(base_url, key): a Google GenAI client, closed when the test ends."""
    with contextlib.ExitStack() as clients:

        def make(base_url: str, key: str) -> genai.Client:
            options = types.HttpOptions(base_url=base_url)
            return clients.enter_context(genai.Client(api_key=key, http_options=options))

        yield make


@pytest.fixture
async def aclient(proxy: RunningProxy) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{proxy.url}/v1", api_key=proxy.key, max_retries=0
    ) as c:
        yield c
