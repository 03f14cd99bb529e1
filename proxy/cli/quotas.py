"""``quotas``: set, show, delete and rebuild tenants' limits."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import orjson
import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db.engine import make_sessionmaker
from ..quotas import LimitStatus, Policy, QuotaPolicyError, delete_policy, get_policies, set_policy
from ..quotas.seed import read_status, rebuild
from ..quotas.service import make_store
from ..quotas.store_memory import MemoryStore
from .context import Database, fail, settings, table, with_database, with_engine

__all__ = ["quotas"]

quotas = typer.Typer(help="Quota policies and their use.", no_args_is_help=True)

Tenant = Annotated[str, typer.Argument(help="The tenant's name.")]
Key = Annotated[str | None, typer.Option(help="Narrow to one key (id or display prefix).")]


class Period(StrEnum):
    day = "day"
    week = "week"
    month = "month"


class ShowFormat(StrEnum):
    table = "table"
    json = "json"


def _json(obj: object) -> None:
    typer.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


@quotas.command("set")
def quotas_set(
    tenant: Tenant,
    key: Key = None,
    budget: Annotated[str | None, typer.Option(help="USD budget per period, e.g. 250.00")] = None,
    period: Annotated[Period, typer.Option()] = Period.month,
    tokens: Annotated[int | None, typer.Option(help="Token quota per period.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    models: Annotated[
        str | None, typer.Option(help="Allowed models, comma-separated (globs allowed).")
    ] = None,
    soft: Annotated[bool, typer.Option(help="Soft limits: checked, nothing held.")] = False,
) -> None:
    """Create or replace a tenant's (or one key's) policy."""

    async def go(db: Database) -> Policy:
        return await set_policy(
            db.session, tenant, key_prefix=key, budget_usd=budget, period=period.value,
            tokens=tokens, rpm=rpm, tpm=tpm,
            allowed_models=None if models is None else models.split(","),
            mode="soft" if soft else "hard",
        )  # fmt: skip

    try:
        policy = with_database(go)
    except QuotaPolicyError as exc:
        fail(f"error: {exc}")
    _json(policy.to_dict())


@quotas.command("delete")
def quotas_delete(tenant: Tenant, key: Key = None) -> None:
    """Remove a tenant's (or one key's) policy."""

    async def go(db: Database) -> bool:
        return await delete_policy(db.session, tenant, key)

    if not with_database(go):
        fail("no such policy")
    typer.echo("deleted", err=True)


async def _policies(engine: AsyncEngine, tenant: str | None) -> list[Policy]:
    async with make_sessionmaker(engine)() as session:
        return await get_policies(session, tenant)


@quotas.command("show")
def quotas_show(
    tenant: Annotated[str | None, typer.Argument(help="One tenant (default: all).")] = None,
    fmt: Annotated[ShowFormat, typer.Option("--format")] = ShowFormat.table,
) -> None:
    """Use against every limit, with reset times (read only: nothing is started)."""
    s = settings()

    async def go(engine: AsyncEngine) -> tuple[list[Policy], list[LimitStatus]]:
        policies = await _policies(engine, tenant)
        store = make_store(s, engine, s.redis_prefix)
        try:
            return policies, await read_status(engine, store, policies, datetime.now(UTC))
        finally:
            await store.aclose()

    policies, statuses = with_engine(go)
    if fmt is ShowFormat.json:
        _json({"policies": [p.to_dict() for p in policies],
               "limits": [st.to_dict() for st in statuses]})  # fmt: skip
        return
    header = ["tenant", "key", "limit", "mode", "used", "reserved", "limit_value", "ratio",
              "resets_at"]  # fmt: skip
    table(header, [[d[h] if h != "ratio" else f"{d[h]:.1%}" for h in header]
                   for d in (st.to_dict() for st in statuses)])  # fmt: skip


@quotas.command("rebuild")
def quotas_rebuild(
    tenant: Annotated[
        str | None, typer.Argument(help="One tenant (default: every tenant with a policy).")
    ] = None,
) -> None:
    """Set this period's budget and token counters to the ledger's totals (holds are kept)."""
    s = settings()

    async def go(engine: AsyncEngine) -> list[tuple[str, int]] | None:
        store = make_store(s, engine, s.redis_prefix)
        try:
            if isinstance(store, MemoryStore):
                return None
            return await rebuild(engine, store, await _policies(engine, tenant), datetime.now(UTC))
        finally:
            await store.aclose()

    done = with_engine(go)
    if done is None:
        fail(
            "error: on SQLite the quota counters live in the server process, which rebuilds "
            "them from the ledger when it starts: restart it"
        )
    table(["counter", "used"], [[name, str(used)] for name, used in done])
