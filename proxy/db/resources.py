"""The SQL of stored resources (files, caches, batches, operations): who owns which."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ..caller import Caller
from .tables import Resource

__all__ = [
    "METERED_KINDS",
    "StorageMove",
    "add_resource",
    "adopt_resource",
    "aware",
    "bill_storage",
    "claim_due",
    "claim_one",
    "count_unmetered",
    "delete_resource",
    "find_resource",
    "list_resources",
    "mark_metered",
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


async def adopt_resource(
    session: AsyncSession, name: str, kind: str, caller: Caller, **fields: Any
) -> None:
    """Record ``name`` as the caller's tenant's unless it is recorded already (whoever's): for
    resources Google made on a tenant's behalf (a batch's results file, a video), which the
    tenant may see once more every time it polls."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {
        "name": name, "kind": kind, "tenant_id": caller.tenant_id, "key_id": caller.key_id,
        "created_at": datetime.now(UTC), **fields,
    }  # fmt: skip
    await session.execute(insert(Resource).values(**values).on_conflict_do_nothing())


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


# The kinds the reconciler meters once they are done upstream.
METERED_KINDS = ("batch", "operation")


def _claimable(now: datetime, *, now_due: bool = False) -> Any:
    """Unmetered, and its claim lapsed. ``now_due``: also one only waiting for its next poll
    (``claimed_by`` empty: nobody is metering it), which a client's poll may take at once."""
    lapsed = or_(Resource.claimed_until.is_(None), Resource.claimed_until < now)
    if now_due:
        lapsed = or_(lapsed, Resource.claimed_by.is_(None))
    return Resource.kind.in_(METERED_KINDS) & Resource.metered_at.is_(None) & lapsed


async def claim_due(
    session: AsyncSession, holder: str, *, lease: timedelta, limit: int, now: datetime
) -> list[Resource]:
    """Claim up to ``limit`` unmetered batches and operations whose claim has lapsed, for
    ``holder`` until ``now + lease``, in the caller's transaction (commit to publish it).

    PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` then the claim, in one transaction: two
    replicas never lock the same rows, and neither waits on the other. SQLite (one writer at a
    time): each candidate is claimed by a conditional ``UPDATE ... WHERE claimed_until < now``,
    which only one writer can win."""
    until = now + lease
    query = select(Resource).where(_claimable(now)).order_by(Resource.created_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        rows = list((await session.execute(query.with_for_update(skip_locked=True))).scalars())
        if rows:
            # (An ORM update: the rows loaded above get the new values too.)
            await session.execute(
                update(Resource)
                .where(Resource.name.in_([r.name for r in rows]))
                .values(claimed_by=holder, claimed_until=until)
            )
        return rows
    names = list((await session.execute(query.with_only_columns(Resource.name))).scalars())
    won = [n for n in names if await claim_one(session, n, holder, lease=lease, now=now, due=True)]
    if not won:
        return []
    query = select(Resource).where(Resource.name.in_(won)).order_by(Resource.created_at)
    return list((await session.execute(query)).scalars())


async def claim_one(
    session: AsyncSession,
    name: str,
    holder: str,
    *,
    lease: timedelta,
    now: datetime,
    due: bool = False,
) -> bool:
    """Claim one resource if it is unmetered and nobody is metering it — ``due``: and its next
    poll is due (the background loop's schedule) — in one conditional UPDATE, so of two
    replicas (or a client's poll and the background loop) only one wins."""
    result = await session.execute(
        update(Resource)
        .where(Resource.name == name, _claimable(now, now_due=not due))
        .values(claimed_by=holder, claimed_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def mark_metered(
    session: AsyncSession, name: str, holder: str, *, state: str | None, now: datetime
) -> bool:
    """Record that ``holder`` wrote the resource's rows; False if its claim was lost meanwhile
    (the rows' ids are derived, so the other holder's rows are the same rows)."""
    result = await session.execute(
        update(Resource)
        .where(Resource.name == name, Resource.claimed_by == holder)
        .values(metered_at=now, state=state, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def count_unmetered(session: AsyncSession) -> dict[str, int]:
    """Unmetered batches and operations by kind (every metered kind, zeros included)."""
    query = (
        select(Resource.kind, func.count())
        .where(Resource.kind.in_(METERED_KINDS), Resource.metered_at.is_(None))
        .group_by(Resource.kind)
    )
    found = {kind: int(n) for kind, n in (await session.execute(query)).all()}
    return {kind: found.get(kind, 0) for kind in METERED_KINDS}


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
