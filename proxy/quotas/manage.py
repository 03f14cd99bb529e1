"""Quota policies in the database: set, list, delete (the CLI and admin API), load (the service),
and the ledger totals that seed a period's counters.

Functions take an AsyncSession and only flush: the caller commits, as with proxy.db.queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ..db.queries import key_number
from ..db.tables import ApiKey, QuotaPolicy, Tenant, UsageEvent
from .policy import MODES, PERIODS, Mode, Period, Policy, usd_to_units, utc

__all__ = [
    "MAX_COUNT",
    "QuotaPolicyError",
    "delete_policy",
    "get_policies",
    "ledger_totals",
    "load_policies",
    "set_policy",
]


class QuotaPolicyError(ValueError):
    """A policy that cannot be set: unknown tenant or key, or invalid limits. Message for users."""


# The largest token quota, rpm or tpm: counters are 64-bit integers in every store (and numbers
# in Redis scripts are doubles, exact to 2^53), so a limit must stay well inside them.
MAX_COUNT = 2**53 - 1
# Budgets are counted in 1e-10 USD in 64-bit counters: below 2^62 units (~4.6e8 USD).
_MAX_BUDGET_UNITS = 2**62


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise QuotaPolicyError(f"{name} must be a positive whole number, not {value!r}")
    if value is not None and value > MAX_COUNT:
        raise QuotaPolicyError(f"{name} must be at most {MAX_COUNT}")
    return value


def _budget(value: Decimal | str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        usd = Decimal(value)
    except InvalidOperation:
        raise QuotaPolicyError(f"budget must be a decimal amount of USD, not {value!r}") from None
    if not usd.is_finite() or usd <= 0:
        raise QuotaPolicyError(f"budget must be a positive amount of USD, not {str(value)[:40]}")
    # Size first: quantizing a huge amount to 1e-10 overflows the decimal context.
    if usd_to_units(usd) >= _MAX_BUDGET_UNITS or usd != usd.quantize(Decimal("1e-10")):
        raise QuotaPolicyError(
            f"budget {str(value)[:40]} has more than 10 decimal places or is too large"
        )
    return usd


async def _find_key(session: AsyncSession, tenant: Tenant, key: str) -> ApiKey:
    key_id = key_number(key)
    match = ApiKey.id == key_id if key_id is not None else ApiKey.prefix == key
    found = (
        await session.execute(select(ApiKey).where(match, ApiKey.tenant_id == tenant.id))
    ).scalar_one_or_none()
    if found is None:
        raise QuotaPolicyError(f"tenant {tenant.name!r} has no key {key!r} (give its id or prefix)")
    return found


async def set_policy(
    session: AsyncSession,
    tenant: str,
    *,
    key_prefix: str | None = None,
    budget_usd: Decimal | str | None = None,
    period: Period = "month",
    tokens: int | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    allowed_models: Sequence[str] | None = None,
    mode: Mode = "hard",
) -> Policy:
    """Create or replace the policy of a tenant, or of one of its keys (id or display prefix).

    Replace, not merge: a limit left None is removed. Counters are kept per tenant or key, so a
    replaced policy keeps the period's spend.
    """
    if period not in PERIODS:
        raise QuotaPolicyError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    if mode not in MODES:
        raise QuotaPolicyError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    budget = _budget(budget_usd)
    limits = {n: _positive(n, v) for n, v in (("tokens", tokens), ("rpm", rpm), ("tpm", tpm))}
    models = None if allowed_models is None else [m.strip() for m in allowed_models if m.strip()]
    if budget is None and allowed_models is None and not any(limits.values()):
        raise QuotaPolicyError("a policy needs a budget, a token quota, rpm, tpm or allowed models")
    row_tenant = (await session.execute(select(Tenant).where(Tenant.name == tenant))).scalar()
    if row_tenant is None:
        raise QuotaPolicyError(f"no tenant named {tenant!r}")
    key = None if key_prefix is None else await _find_key(session, row_tenant, key_prefix)
    key_id = None if key is None else key.id
    scope = QuotaPolicy.key_id.is_(None) if key_id is None else QuotaPolicy.key_id == key_id
    row = (
        await session.execute(
            select(QuotaPolicy).where(QuotaPolicy.tenant_id == row_tenant.id, scope)
        )
    ).scalar_one_or_none()
    now = datetime.now(UTC)
    if row is None:
        row = QuotaPolicy(tenant_id=row_tenant.id, key_id=key_id, created_at=now)
        session.add(row)
    row.mode, row.period, row.budget_usd, row.allowed_models = mode, period, budget, models
    row.tokens, row.rpm, row.tpm = limits["tokens"], limits["rpm"], limits["tpm"]
    row.updated_at = now
    await session.flush()
    return _policy(row, row_tenant.name, None if key is None else key.prefix)


async def get_policies(session: AsyncSession, tenant: str | None = None) -> list[Policy]:
    return await _select(session, tenant)


async def load_policies(engine: AsyncEngine) -> list[Policy]:
    """Every policy: what the service caches and refreshes each second."""
    async with AsyncSession(engine) as session:
        return await _select(session, None)


async def delete_policy(session: AsyncSession, tenant: str, key_prefix: str | None = None) -> bool:
    row_tenant = (await session.execute(select(Tenant).where(Tenant.name == tenant))).scalar()
    if row_tenant is None:
        raise QuotaPolicyError(f"no tenant named {tenant!r}")
    stmt = delete(QuotaPolicy).where(QuotaPolicy.tenant_id == row_tenant.id)
    if key_prefix is None:
        stmt = stmt.where(QuotaPolicy.key_id.is_(None))
    else:
        stmt = stmt.where(
            QuotaPolicy.key_id == (await _find_key(session, row_tenant, key_prefix)).id
        )
    result = await session.execute(stmt)
    return bool(cast(Any, result).rowcount)


async def _select(session: AsyncSession, tenant: str | None) -> list[Policy]:
    stmt = (
        select(QuotaPolicy, Tenant.name, ApiKey.prefix)
        .join(Tenant, Tenant.id == QuotaPolicy.tenant_id)
        .outerjoin(ApiKey, ApiKey.id == QuotaPolicy.key_id)
        .order_by(Tenant.name, QuotaPolicy.key_id.is_not(None), ApiKey.prefix)
    )
    if tenant is not None:
        stmt = stmt.where(Tenant.name == tenant)
    rows = (await session.execute(stmt)).all()
    return [_policy(p, name, prefix) for p, name, prefix in rows]


def _policy(row: QuotaPolicy, tenant: str, key_prefix: str | None) -> Policy:
    return Policy(
        id=row.id,
        tenant_id=row.tenant_id,
        tenant=tenant,
        key_id=row.key_id,
        key_prefix=key_prefix,
        mode=cast(Mode, row.mode),
        period=cast(Period, row.period),
        budget_usd=row.budget_usd,
        tokens=row.tokens,
        rpm=row.rpm,
        tpm=row.tpm,
        allowed_models=None if row.allowed_models is None else tuple(row.allowed_models),
        updated_at=utc(row.updated_at),  # SQLite returns naive UTC
    )


async def ledger_totals(
    conn: AsyncConnection, tenant_id: int, key_id: int | None, since: datetime, until: datetime
) -> tuple[Decimal, int]:
    """Priced spend (USD) and tokens the ledger holds for a tenant or key over [since, until)."""
    ue = UsageEvent
    stmt = select(func.sum(ue.cost_usd), func.coalesce(func.sum(ue.total_tokens), 0)).where(
        ue.tenant_id == tenant_id, ue.created_at >= since, ue.created_at < until
    )
    if key_id is not None:
        stmt = stmt.where(ue.key_id == key_id)
    usd, tokens = (await conn.execute(stmt)).one()
    return (Decimal(0) if usd is None else Decimal(usd)), int(tokens)
