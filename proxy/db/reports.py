"""Usage reports: exact totals over any time range, fast at any ledger size.

Whole hours come from ``usage_rollups`` (one row per hour, tenant, key and model); only the
partial hours at the two ends of a range are summed from the raw ledger (the whole range, when
grouped by operation, which the rollups do not keep). The two sources agree
exactly (the rollups are written from the very rows the ledger insert added), so a report is
exact to the microsecond of its bounds while reading a few thousand rows for a month.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..usage import REPORTED_KINDS
from .queries import hour_of
from .tables import ApiKey, Tenant, UsageEvent, UsageRollup

__all__ = [
    "EARLIEST", "GROUPS", "LATEST", "TOTALS", "GroupBy", "UsageRow", "as_utc", "usage_report",
]  # fmt: skip

GroupBy = Literal["tenant", "model", "key", "day", "hour", "operation"]
GROUPS: tuple[GroupBy, ...] = ("tenant", "model", "key", "day", "hour", "operation")


# A report row's totals, in order: request count, the reported token kinds, money, flags.
TOTALS: tuple[str, ...] = (
    "requests",
    *REPORTED_KINDS,
    "cost_usd",
    "unpriced",
    "estimated",
    "errors",
)


@dataclass(slots=True)
class UsageRow:
    group: dict[str, Any]
    totals: dict[str, Any] = field(default_factory=lambda: _zero_totals())

    def __getattr__(self, name: str) -> Any:
        try:
            return self.totals[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return {**self.group, **self.totals}


def _zero_totals() -> dict[str, Any]:
    return {name: Decimal(0) if name == "cost_usd" else 0 for name in TOTALS}


def _ceil_hour(ts: datetime) -> datetime:
    h = hour_of(ts)
    return h if h == ts else h + timedelta(hours=1)


# The bounds a report may name: a day inside datetime's range on each side, so converting to
# UTC and rounding to whole hours never overflows. No ledger row lies outside them.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def as_utc(ts: datetime) -> datetime | None:
    """``ts`` in UTC (naive means UTC), or None when it lies outside [EARLIEST, LATEST]."""
    try:
        utc = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    except OverflowError:
        return None
    return utc if EARLIEST <= utc <= LATEST else None


def _clamped(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    utc = as_utc(ts)
    if utc is not None:
        return utc
    # Out of range: the range starts before (or ends after) any row could, so the bound
    # changes nothing — as long as it is on the same side.
    return EARLIEST if (ts.year, ts.month) < (5000, 1) else LATEST


def _hour_expr(dialect: str, col: Any) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", col))
    return func.strftime("%Y-%m-%d %H:00:00", col)


def _day_expr(dialect: str, col: Any) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", col))
    return func.date(col)


def _label(kind: str, value: Any) -> Any:
    """Group values as plain, comparable JSON-ready values."""
    if kind == "day":
        return str(value)[:10]
    if kind == "hour":
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        return text[:13].replace(" ", "T") + ":00:00Z"
    return value


async def usage_report(
    session: AsyncSession,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
    model: str | None = None,
    key: int | None = None,
    group_by: Sequence[GroupBy] = ("tenant", "model"),
) -> list[UsageRow]:
    """Totals over [since, until), optionally narrowed, grouped as asked, ordered by group."""
    since, until = _clamped(since), _clamped(until)
    dialect = session.get_bind().dialect.name
    tenant_id: int | None = None
    if tenant is not None:
        tenant_id = (
            await session.execute(select(Tenant.id).where(Tenant.name == tenant))
        ).scalar_one_or_none()
        if tenant_id is None:
            return []
    # Whole hours from the rollups, the partial hours at the ends from the ledger.
    lo = _ceil_hour(since) if since else None
    hi = hour_of(until) if until else None
    parts: list[tuple[str, datetime | None, datetime | None]] = []
    if "operation" in group_by:
        # The rollups do not keep the operation (files.upload, cachedContents.create, ...):
        # grouped by it, the whole range is summed from the ledger itself.
        parts.append(("raw", since, until))
    elif lo is not None and hi is not None and lo >= hi:
        parts.append(("raw", since, until))
    else:
        if since is not None and lo is not None and since < lo:
            parts.append(("raw", since, lo))
        parts.append(("rollup", lo, hi))
        if until is not None and hi is not None and hi < until:
            parts.append(("raw", hi, until))

    merged: dict[tuple[Any, ...], UsageRow] = {}
    for source, start, end in parts:
        for group, values in await _sum(
            session, dialect, source, start, end, tenant_id, model, key, group_by
        ):
            row = merged.get(group)
            if row is None:
                row = merged[group] = UsageRow(group=dict(zip(group_by, group, strict=True)))
            for name, value in zip(TOTALS, values, strict=True):
                row.totals[name] += value
    return [merged[g] for g in sorted(merged, key=lambda g: tuple(str(v) for v in g))]


async def _sum(
    session: AsyncSession,
    dialect: str,
    source: str,
    start: datetime | None,
    end: datetime | None,
    tenant_id: int | None,
    model: str | None,
    key: int | None,
    group_by: Sequence[GroupBy],
) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    if source == "rollup":
        t: Any = UsageRollup
        ts, key_col = t.bucket, t.key_id
        sums: list[Any] = [
            func.sum(t.requests),
            *(func.sum(getattr(t, c)) for c in REPORTED_KINDS),
            func.sum(t.cost_usd),
            func.sum(t.unpriced),
            func.sum(t.estimated),
            func.sum(t.errors),
        ]
    else:
        t = UsageEvent
        ts, key_col = t.created_at, func.coalesce(t.key_id, 0)
        sums = [
            func.count(),
            *(func.sum(getattr(t, c)) for c in REPORTED_KINDS),
            func.sum(t.cost_usd),
            func.count().filter(t.priced.is_(False)),
            func.count().filter(t.estimated.is_(True)),
            func.count().filter(t.status != 200),
        ]
    columns: dict[str, Any] = {
        "tenant": Tenant.name,
        "model": t.model,
        "key": func.coalesce(ApiKey.prefix, ""),
        "day": _day_expr(dialect, ts),
        "hour": ts if source == "rollup" else _hour_expr(dialect, ts),
        "operation": None if source == "rollup" else t.operation,
    }
    keys = [columns[g] for g in group_by]
    stmt = select(*keys, *sums).join(Tenant, Tenant.id == t.tenant_id)
    if "key" in group_by:
        stmt = stmt.outerjoin(ApiKey, ApiKey.id == key_col)
    if start is not None:
        stmt = stmt.where(ts >= start)
    if end is not None:
        stmt = stmt.where(ts < end)
    if tenant_id is not None:
        stmt = stmt.where(t.tenant_id == tenant_id)
    if model is not None:
        stmt = stmt.where(t.model == model)
    if key is not None:
        stmt = stmt.where(key_col == key)
    if keys:
        stmt = stmt.group_by(*keys)
    out = []
    for row in (await session.execute(stmt)).all():
        n = len(keys)
        values = tuple(row[n:])
        if values[0] is None or values[0] == 0:
            continue  # an empty range
        group = tuple(_label(g, v) for g, v in zip(group_by, row[:n], strict=True))
        out.append(
            (
                group,
                tuple(
                    Decimal(v or 0) if name == "cost_usd" else int(v or 0)
                    for name, v in zip(TOTALS, values, strict=True)
                ),
            )
        )
    return out
