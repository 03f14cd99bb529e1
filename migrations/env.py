"""Alembic environment: metadata from proxy.db.tables, URL from Settings (via the Config).

The environment may use live code; the revisions in versions/ must not: each one spells out the
column types it creates, so an old revision means the same thing after tables.py changes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from sqlalchemy.engine import Connection

from proxy.db.engine import make_engine
from proxy.db.tables import MONEY_SCALE, Base, Money

config = context.config
target_metadata = Base.metadata


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # Autogenerate would write `proxy.db.tables.Money()` and import live code; write the plain
    # types it stands for instead, frozen in the new revision.
    if kind == "type" and isinstance(obj, Money):
        return f'sa.Numeric(20, {MONEY_SCALE}).with_variant(sa.BigInteger(), "sqlite")'
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables.
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async(str(config.get_main_option("sqlalchemy.url"))))
