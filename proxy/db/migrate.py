"""Apply Alembic migrations from code: the CLI's `db upgrade`, `serve` on SQLite, and tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from .engine import make_engine

__all__ = ["alembic_config", "script_location", "upgrade", "upgrade_async"]

_PACKAGE = Path(__file__).resolve().parent.parent


def script_location() -> Path:
    """The Alembic scripts (env.py, versions/) this package runs."""
    # The scripts live in migrations/ at the top of the repository; the wheel ships them inside
    # the package, as proxy/migrations (pyproject.toml). Look beside this very package, so a
    # source checkout uses its own scripts, never those of whatever checkout is installed.
    for place in (_PACKAGE / "migrations", _PACKAGE.parent / "migrations"):
        if (place / "env.py").is_file():
            return place
    raise RuntimeError(f"no Alembic scripts in or beside {_PACKAGE}")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
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
