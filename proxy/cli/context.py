"""What every command needs, opened one way: settings, the database, the catalog, output.

    @app.command()
    def list_tenants() -> None:
        async def go(db: Database) -> list[Tenant]: ...
        tenants = with_database(go)

Commands are plain functions; the database work of each runs in one ``asyncio.run`` through
:func:`with_database` (one engine, one session, committed when the work returns, disposed after
— and on SQLite, the embedded default, migrated first, whichever command runs first).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ..db.engine import make_engine, make_sessionmaker
from ..db.migrate import upgrade_async
from ..formats import print_table
from ..pricing.catalog import Catalog
from ..settings import Settings

__all__ = [
    "Database",
    "catalog",
    "fail",
    "parse_when",
    "settings",
    "table",
    "with_database",
    "with_engine",
]

T = TypeVar("T")


@cache
def settings() -> Settings:
    """The environment's settings, read once per command (main() clears the cache)."""
    return Settings()


@dataclass(frozen=True, slots=True)
class Database:
    engine: AsyncEngine
    session: AsyncSession


def with_database(work: Callable[[Database], Awaitable[T]], *, migrate: bool = True) -> T:
    """Run ``work`` with a session on the ledger's database; commit if it returns."""

    async def go() -> T:
        s = settings()
        engine = make_engine(s.database_url)
        try:
            if migrate and s.is_sqlite:
                # The embedded default migrates itself, whichever command runs first.
                await upgrade_async(s.database_url)
            async with make_sessionmaker(engine)() as session:
                result = await work(Database(engine, session))
                await session.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(go())


def with_engine(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` with an engine only (no session opened)."""

    async def go() -> T:
        engine = make_engine(settings().database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def catalog() -> Catalog:
    s = settings()
    return Catalog.load(s.price_list, s.price_overrides, s.price_list_fallback or None)


def fail(message: str, code: int = 1) -> NoReturn:
    """Say what went wrong on stderr and end the command with ``code``."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


def parse_when(value: str) -> datetime:
    """A date (YYYY-MM-DD, taken as midnight UTC) or an ISO timestamp (naive: UTC)."""
    try:
        d = date.fromisoformat(value)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    except ValueError:
        pass
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a date nor an ISO timestamp") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print_table(header, rows, sys.stdout)
