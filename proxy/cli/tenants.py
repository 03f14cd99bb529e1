"""``tenants`` and ``keys``: who may call the proxy."""

from __future__ import annotations

from typing import Annotated

import typer

from ..db import queries
from .context import Database, fail, table, with_database

__all__ = ["keys", "tenants"]

tenants = typer.Typer(help="Manage tenants.", no_args_is_help=True)
keys = typer.Typer(help="Manage tenant API keys.", no_args_is_help=True)


@tenants.command("create")
def tenants_create(name: str) -> None:
    """Create a tenant."""

    async def go(db: Database) -> str | None:
        if await queries.get_tenant(db.session, name) is not None:
            return None
        tenant = await queries.create_tenant(db.session, name)
        return f"created tenant {tenant.name} (id {tenant.id})"

    done = with_database(go)
    if done is None:
        fail(f"tenant {name!r} already exists")
    typer.echo(done)


@tenants.command("list")
def tenants_list() -> None:
    """List tenants."""

    async def go(db: Database) -> list[list[object]]:
        return [
            [t.id, t.name, "disabled" if t.disabled else "active", t.created_at.isoformat()]
            for t in await queries.list_tenants(db.session)
        ]

    table(["id", "name", "state", "created"], with_database(go))


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant the key is for.")],
    name: Annotated[str | None, typer.Option(help="A name to tell keys apart.")] = None,
) -> None:
    """Create a key; prints the secret once, alone on stdout."""

    async def go(db: Database) -> tuple[str, str] | None:
        found = await queries.get_tenant(db.session, tenant)
        if found is None:
            return None
        secret, key = await queries.create_key(db.session, found, name)
        return secret, f"key {key.prefix}… (id {key.id}) for tenant {found.name}; shown once"

    created = with_database(go)
    if created is None:
        fail(f"no tenant named {tenant!r}")
    # The secret alone on stdout, so KEY=$(gemini-meter keys create ...) works.
    typer.echo(created[0])
    typer.echo(created[1], err=True)


@keys.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
) -> None:
    """List keys (the display prefix, never the secret)."""

    async def go(db: Database) -> list[list[object]]:
        return [
            [
                k.id, owner, k.prefix, k.name or "", "revoked" if k.revoked_at else "active",
                k.last_used_at.isoformat() if k.last_used_at else "",
            ]
            for k, owner in await queries.list_keys(db.session, tenant)
        ]  # fmt: skip

    table(["id", "tenant", "prefix", "name", "state", "last used"], with_database(go))


@keys.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or display prefix.")],
) -> None:
    """Revoke a key; every replica stops taking it within the key cache's TTL."""

    async def go(db: Database) -> int:
        return await queries.revoke_key(db.session, key)

    n = with_database(go)
    if n == 0:
        fail(f"no active key {key!r}")
    typer.echo(f"revoked {n} key(s)")
