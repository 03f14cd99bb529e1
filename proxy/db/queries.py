"""Named query functions: the only SQL outside migrations."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .tables import ApiKey, Tenant, UsageEvent

__all__ = [
    "KeyInfo",
    "UsageRow",
    "create_key",
    "create_tenant",
    "hash_key",
    "insert_usage_events",
    "list_keys",
    "list_tenants",
    "lookup_key",
    "revoke_key",
    "usage_totals",
]

KEY_PREFIX = "gm-"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: int
    key_hash: str
    tenant_id: int
    tenant_name: str
    active: bool


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
    return [(k, n) for k, n in rows.tuples()]


async def revoke_key(session: AsyncSession, key: str) -> int:
    """Revoke by numeric id or display prefix; returns how many keys were revoked."""
    stmt = update(ApiKey).where(ApiKey.revoked_at.is_(None))
    stmt = stmt.where(ApiKey.id == int(key)) if key.isdigit() else stmt.where(ApiKey.prefix == key)
    result = await session.execute(stmt.values(revoked_at=_now()))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def lookup_key(session: AsyncSession, key_hash: str) -> KeyInfo | None:
    stmt = (
        select(
            ApiKey.id, ApiKey.key_hash, ApiKey.revoked_at, Tenant.id, Tenant.name, Tenant.disabled
        )
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == key_hash)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        return None
    key_id, stored_hash, revoked_at, tenant_id, tenant_name, disabled = row
    return KeyInfo(
        key_id=key_id,
        key_hash=stored_hash,
        tenant_id=tenant_id,
        tenant_name=tenant_name,
        active=revoked_at is None and not disabled,
    )


async def insert_usage_events(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Insert ledger rows, skipping ids already present (a replayed batch never doubles)."""
    if not rows:
        return
    table = UsageEvent
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing(index_elements=["id"])
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"])
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported database dialect {conn.dialect.name}")
    await conn.execute(stmt, rows)


async def touch_keys(conn: AsyncConnection, last_used: dict[int, datetime]) -> None:
    for key_id, ts in last_used.items():
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=ts))


GroupBy = Literal["tenant", "model", "key", "day"]


@dataclass(frozen=True, slots=True)
class UsageRow:
    group: dict[str, Any]
    requests: int
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    thinking_tokens: int
    tool_use_prompt_tokens: int
    audio_prompt_tokens: int
    total_tokens: int
    cost_usd: Decimal
    unpriced: int
    estimated: int


async def usage_totals(
    session: AsyncSession,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
    group_by: Sequence[GroupBy] = ("tenant", "model"),
) -> list[UsageRow]:
    """Totals of the ledger over [since, until), grouped as asked."""
    ue = UsageEvent
    columns: dict[str, Any] = {
        "tenant": Tenant.name,
        "model": ue.model,
        "key": ue.key_id,
        "day": func.date(ue.created_at),
    }
    keys = [columns[g].label(g) for g in group_by]
    stmt = (
        select(
            *keys,
            func.count().label("requests"),
            func.coalesce(func.sum(ue.prompt_tokens), 0),
            func.coalesce(func.sum(ue.cached_tokens), 0),
            func.coalesce(func.sum(ue.output_tokens), 0),
            func.coalesce(func.sum(ue.thinking_tokens), 0),
            func.coalesce(func.sum(ue.tool_use_prompt_tokens), 0),
            func.coalesce(func.sum(ue.audio_prompt_tokens), 0),
            func.coalesce(func.sum(ue.total_tokens), 0),
            func.coalesce(func.sum(ue.cost_usd), 0),
            func.count().filter(ue.priced.is_(False)),
            func.count().filter(ue.estimated.is_(True)),
        )
        .join(Tenant, Tenant.id == ue.tenant_id)
        .group_by(*keys)
        .order_by(*keys)
    )
    if since is not None:
        stmt = stmt.where(ue.created_at >= since)
    if until is not None:
        stmt = stmt.where(ue.created_at < until)
    if tenant is not None:
        stmt = stmt.where(Tenant.name == tenant)
    out = []
    for row in (await session.execute(stmt)).all():
        n = len(keys)
        vals = list(row)
        out.append(
            UsageRow(
                group={
                    g: (str(v) if g == "day" else v)
                    for g, v in zip(group_by, vals[:n], strict=True)
                },
                requests=int(vals[n]),
                prompt_tokens=int(vals[n + 1]),
                cached_tokens=int(vals[n + 2]),
                output_tokens=int(vals[n + 3]),
                thinking_tokens=int(vals[n + 4]),
                tool_use_prompt_tokens=int(vals[n + 5]),
                audio_prompt_tokens=int(vals[n + 6]),
                total_tokens=int(vals[n + 7]),
                cost_usd=Decimal(vals[n + 8]),
                unpriced=int(vals[n + 9]),
                estimated=int(vals[n + 10]),
            )
        )
    return out
