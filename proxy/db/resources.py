"""The SQL of stored resources (files, caches, batches, operations): who owns which."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..caller import Caller
from .tables import Resource

__all__ = [
    "StorageMove",
    "add_resource",
    "aware",
    "bill_storage",
    "delete_resource",
    "find_resource",
    "list_resources",
    "owned_resource",
    "update_resource",
]


async def add_resource(
    session: AsyncSession,
    name: str,
    kind: str,
    caller: Caller,
    *,
    model: str | None = None,
    created_at: datetime | None = None,
    **fields: Any,
) -> Resource:
    """Record that ``caller``'s tenant made resource ``name`` upstream (names are unique)."""
    row = Resource(
        name=name, kind=kind, tenant_id=caller.tenant_id, key_id=caller.key_id, model=model,
        created_at=created_at or datetime.now(UTC), **fields,
    )  # fmt: skip
    session.add(row)
    await session.flush()
    return row


async def owned_resource(
    session: AsyncSession, name: str, tenant_id: int, kind: str | None = None
) -> Resource | None:
    """The resource if ``tenant_id`` owns it and it was not deleted, else None."""
    query = select(Resource).where(
        Resource.name == name, Resource.tenant_id == tenant_id, Resource.deleted_at.is_(None)
    )
    if kind is not None:
        query = query.where(Resource.kind == kind)
    return (await session.execute(query)).scalar_one_or_none()


async def find_resource(session: AsyncSession, name: str, kind: str) -> Resource | None:
    """A live resource by name whoever owns it: for records addressed by a credential of their
    own (an upload session's id), whose tenant the caller checks after."""
    query = select(Resource).where(
        Resource.name == name, Resource.kind == kind, Resource.deleted_at.is_(None)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def list_resources(
    session: AsyncSession,
    tenant_id: int,
    kind: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[Resource]:
    """A page of the tenant's live resources of one kind, newest first; ``after`` is the
    (created_at, name) of the previous page's last row (keyset pagination)."""
    query = select(Resource).where(
        Resource.tenant_id == tenant_id, Resource.kind == kind, Resource.deleted_at.is_(None)
    )
    if after is not None:
        at, name = after
        query = query.where(
            (Resource.created_at < at) | ((Resource.created_at == at) & (Resource.name < name))
        )
    query = query.order_by(Resource.created_at.desc(), Resource.name.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def update_resource(session: AsyncSession, name: str, **fields: Any) -> None:
    await session.execute(update(Resource).where(Resource.name == name).values(**fields))


async def delete_resource(session: AsyncSession, name: str, at: datetime | None = None) -> None:
    """Mark it deleted: its rows stay (a cache's billing, a batch's reconciliation need them)."""
    await update_resource(session, name, deleted_at=at or datetime.now(UTC))


def aware(t: datetime) -> datetime:
    """A stored time in UTC (SQLite gives them back without their zone)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StorageMove:
    """A cache's billing moved: its size, when it was made, billed until before and now."""

    token_count: int
    held_from: datetime
    billed_until: datetime
    new_until: datetime


async def bill_storage(
    session: AsyncSession, name: str, until: datetime, *, delete: bool = False
) -> StorageMove | None:
    """Move cache ``name``'s ``billed_until`` to ``until`` under a row lock (PostgreSQL's FOR
    UPDATE; SQLite serialises writers), so two replicas patching or deleting one cache bill
    each period once. ``delete``: the cache ends at ``until`` — billing only moves back (a
    credit for the unheld remainder), never forward, and the row is marked deleted."""
    query = select(Resource).where(Resource.name == name, Resource.kind == "cache")
    row = (await session.execute(query.with_for_update())).scalar_one_or_none()
    if row is None or row.billed_until is None or row.token_count is None:
        return None
    held_from, old = aware(row.created_at), aware(row.billed_until)
    new = max(held_from, min(until, old)) if delete else max(held_from, until)
    row.billed_until = new
    if delete:
        row.deleted_at = until
    else:
        row.expire_time = until
    await session.flush()
    return StorageMove(row.token_count, held_from, old, new)
