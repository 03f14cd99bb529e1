"""Apply Alembic migrations from code: the CLI's `db upgrade`, `serve` on SQLite, and tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from .engine import make_engine

__all__ = ["alembic_config", "upgrade", "upgrade_async"]

SCRIPT_LOCATION = str(Path(__file__).resolve().parent.parent / "migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade_on(connection: Connection, url: str) -> None:
    cfg = alembic_config(url)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def upgrade_async(url: str) -> None:
    """Upgrade to head from inside a running event loop."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_on, url)
    finally:
        await engine.dispose()


def upgrade(url: str) -> None:
    asyncio.run(upgrade_async(url))
