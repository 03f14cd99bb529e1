"""Named query functions: the only SQL outside migrations."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ..caller import Caller
from ..usage import REPORTED_KINDS
from .tables import ApiKey, Tenant, UsageEvent, UsageRollup

__all__ = [
    "KeyInfo",
    "create_key",
    "create_tenant",
    "hash_key",
    "insert_chunks",
    "insert_usage_events",
    "list_keys",
    "list_tenants",
    "lookup_key",
    "lookup_keys",
    "revoke_key",
]

KEY_PREFIX = "gm-"
T = TypeVar("T")


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A tenant key's row, as the key cache keeps it."""

    key_hash: str
    active: bool
    caller: Caller


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    tenant = Tenant(name=name, disabled=False, created_at=_now())
    session.add(tenant)
    await session.flush()
    return tenant


async def get_tenant(session: AsyncSession, name: str) -> Tenant | None:
    result = await session.execute(select(Tenant).where(Tenant.name == name))
    return result.scalar_one_or_none()


async def list_tenants(session: AsyncSession) -> Sequence[Tenant]:
    return (await session.execute(select(Tenant).order_by(Tenant.name))).scalars().all()


async def create_key(
    session: AsyncSession, tenant: Tenant, name: str | None = None
) -> tuple[str, ApiKey]:
    """Make a new key; the secret is returned once and only its hash is stored."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        tenant_id=tenant.id,
        key_hash=hash_key(secret),
        prefix=secret[:11],
        name=name,
        created_at=_now(),
    )
    session.add(key)
    await session.flush()
    return secret, key


async def list_keys(
    session: AsyncSession, tenant: str | None = None
) -> Sequence[tuple[ApiKey, str]]:
    stmt = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant is not None:
        stmt = stmt.where(Tenant.name == tenant)
    rows = await session.execute(stmt.order_by(ApiKey.id))
    return [(k, n) for k, n in rows.all()]


def key_number(ref: str) -> int | None:
    """A key reference (id or display prefix) as a key id, if it is one: ASCII digits that fit
    the column (a longer number is no id, and would overflow the database's integer)."""
    if ref.isascii() and ref.isdigit() and int(ref) < 2**63:
        return int(ref)
    return None


async def revoke_key(session: AsyncSession, key: str) -> int:
    """Revoke by numeric id or display prefix; returns how many keys were revoked."""
    stmt = update(ApiKey).where(ApiKey.revoked_at.is_(None))
    key_id = key_number(key)
    stmt = stmt.where(ApiKey.prefix == key if key_id is None else ApiKey.id == key_id)
    result = await session.execute(stmt.values(revoked_at=_now()))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def lookup_key(session: AsyncSession, key_hash: str) -> KeyInfo | None:
    return (await lookup_keys(session, [key_hash])).get(key_hash)


async def lookup_keys(session: AsyncSession, key_hashes: Sequence[str]) -> dict[str, KeyInfo]:
    """The keys (and their tenants) of these hashes; a hash with no key is absent."""
    stmt = (
        select(
            ApiKey.id, ApiKey.key_hash, ApiKey.revoked_at, Tenant.id, Tenant.name, Tenant.disabled
        )
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash.in_(key_hashes))
    )
    found: dict[str, KeyInfo] = {}
    for key_id, stored_hash, revoked_at, tenant_id, tenant_name, disabled in (
        await session.execute(stmt)
    ).all():
        found[stored_hash] = KeyInfo(
            key_hash=stored_hash,
            active=revoked_at is None and not disabled,
            caller=Caller(tenant_id=tenant_id, tenant_name=tenant_name, key_id=key_id),
        )
    return found


def _insert(conn: AsyncConnection, table: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {conn.dialect.name}")  # pragma: no cover


async def insert_usage_events(
    conn: AsyncConnection, rows: list[dict[str, Any]], *, fresh: bool = False
) -> None:
    """Insert ledger rows and add them to the hourly rollups, in the caller's transaction.

    ``fresh``: no earlier attempt offered these rows to the database, so none can be there
    (ids are random): one plain insert through the driver's executemany, a single statement
    whatever the batch size, and every row into the rollups. A duplicate id would fail the
    transaction, and the writer would retry the batch as not fresh.

    Otherwise (a retry, a spool replay) ids already present are skipped, and only the rows this
    insert really added go into the rollups, so ledger and rollups always agree.
    """
    if not rows:
        return
    if fresh:
        await conn.execute(_insert(conn, UsageEvent), rows)
        await add_to_rollups(conn, rows)
        return
    stmt = (
        _insert(conn, UsageEvent)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(UsageEvent.id)
    )
    inserted: set[str] = set()
    for chunk in insert_chunks(rows):
        result = await conn.execute(stmt, chunk)
        inserted.update(result.scalars().all())
    await add_to_rollups(conn, [r for r in rows if r["id"] in inserted])


# With RETURNING, SQLAlchemy sends rows as one multi-row INSERT whose SQL depends on their count,
# and the drivers prepare and cache each SQL they see per connection (sqlite3 keeps 128, asyncpg
# 100). Batches of every size from 1 to 500 filled ~100 MB of SQLite statement cache per
# connection; chunks of power-of-two sizes up to a page keep it to 8 shapes (~255 rows of SQL).
INSERT_PAGE = 128


def insert_chunks(rows: Sequence[T], page: int = INSERT_PAGE) -> Iterator[Sequence[T]]:
    """``rows`` in order, in chunks of ``page`` rows then of decreasing powers of two."""
    start = 0
    while start < len(rows):
        size = min(page, 1 << ((len(rows) - start).bit_length() - 1))
        yield rows[start : start + size]
        start += size


def hour_of(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


async def add_to_rollups(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    buckets: dict[tuple[datetime, int, int, str], dict[str, Any]] = {}
    for r in rows:
        k = (hour_of(r["created_at"]), r["tenant_id"], r["key_id"] or 0, r["model"])
        b = buckets.get(k)
        if b is None:
            b = buckets[k] = {
                "bucket": k[0], "tenant_id": k[1], "key_id": k[2], "model": k[3],
                "requests": 0, **dict.fromkeys(REPORTED_KINDS, 0), "cost_usd": Decimal(0),
                "unpriced": 0, "estimated": 0, "errors": 0,
            }  # fmt: skip
        b["requests"] += 1
        for c in REPORTED_KINDS:
            b[c] += r[c]
        b["cost_usd"] += r["cost_usd"] or 0
        b["unpriced"] += 0 if r["priced"] else 1
        b["estimated"] += 1 if r["estimated"] else 0
        b["errors"] += 0 if r["status"] == 200 else 1
    if not buckets:
        return
    ins = _insert(conn, UsageRollup)
    added = ("requests", *REPORTED_KINDS, "cost_usd", "unpriced", "estimated", "errors")
    stmt = ins.on_conflict_do_update(
        index_elements=["bucket", "tenant_id", "key_id", "model"],
        set_={c: getattr(UsageRollup, c) + getattr(ins.excluded, c) for c in added},
    )
    # Sorted: concurrent writers (workers, replicas) take row locks in one order, no deadlock.
    await conn.execute(stmt, [buckets[k] for k in sorted(buckets)])


async def touch_keys(conn: AsyncConnection, last_used: dict[int, datetime]) -> None:
    for key_id, ts in last_used.items():
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=ts))


async def delete_events_before(conn: AsyncConnection, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` ledger rows older than ``cutoff``; the rollups keep their sums."""
    doomed = select(UsageEvent.id).where(UsageEvent.created_at < cutoff).limit(limit)
    result = await conn.execute(delete(UsageEvent).where(UsageEvent.id.in_(doomed)))
    return int(result.rowcount)
