"""Quota policies and their arithmetic: periods, windows, reset times, thresholds, units.

Pure functions over plain data, every one taking the time it works on (the service's injectable
clock), so each is tested as a table of cases. Times are UTC: a naive datetime is read as UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from fnmatch import fnmatchcase
from typing import Any, Literal, get_args

from ..pricing.catalog import normalize_model

__all__ = [
    "THRESHOLDS",
    "UNITS_PER_USD",
    "WINDOW_SECONDS",
    "LimitName",
    "LimitStatus",
    "Mode",
    "Period",
    "Policy",
    "crossed",
    "format_reset",
    "model_allowed",
    "period_end",
    "period_label",
    "period_start",
    "retry_after",
    "units_to_usd",
    "usd_to_units",
    "utc",
    "window_end",
    "window_index",
]

Period = Literal["day", "week", "month"]
Mode = Literal["hard", "soft"]
LimitName = Literal["budget_usd", "tokens", "rpm", "tpm"]
PERIODS: tuple[str, ...] = get_args(Period)
MODES: tuple[str, ...] = get_args(Mode)

# Money in counters is an integer count of 1e-10 USD: the ledger's scale, Money's unit on SQLite,
# and what Redis can add exactly (INCRBY), so every store compares the same integers.
UNITS_PER_USD = 10**10
WINDOW_SECONDS = 60
# Alert thresholds of period limits, as fractions of the limit (issue 5: 80% and 100%).
THRESHOLDS: tuple[Decimal, ...] = (Decimal("0.8"), Decimal("1"))


def utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def usd_to_units(usd: Decimal) -> int:
    """Round up: a hold or a limit is never smaller than the amount it stands for."""
    return int((Decimal(usd) * UNITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def units_to_usd(units: int) -> Decimal:
    return Decimal(units).scaleb(-10)


# -- calendar periods ---------------------------------------------------------------------------


def period_start(period: Period, at: datetime) -> datetime:
    """Start of the UTC calendar day, ISO week (Monday) or month holding ``at``."""
    at = utc(at)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: Period, at: datetime) -> datetime:
    """When the period holding ``at`` ends and the next begins: the reset time."""
    start = period_start(period, at)
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def period_label(period: Period, at: datetime) -> str:
    """Names the period in counter keys: ``d2026-11-23``, ``w2026-11-23`` (Monday), ``m2026-11``."""
    start = period_start(period, at)
    if period == "month":
        return f"m{start:%Y-%m}"
    return f"{period[0]}{start:%Y-%m-%d}"


# -- rate windows -------------------------------------------------------------------------------
# Fixed one-minute windows aligned on the UTC minute: one counter per window, a reset time every
# replica agrees on, and at most one INCR per call. (A burst may straddle two windows: up to twice
# the limit within a minute across a boundary, never more than the limit within one window.)


def window_index(at: datetime) -> int:
    return math.floor(utc(at).timestamp()) // WINDOW_SECONDS


def window_end(at: datetime) -> datetime:
    return datetime.fromtimestamp((window_index(at) + 1) * WINDOW_SECONDS, UTC)


# -- reset hints --------------------------------------------------------------------------------


def retry_after(reset: datetime, now: datetime) -> int:
    """Whole seconds until ``reset`` for ``Retry-After``, rounded up, at least 1."""
    return max(1, math.ceil((utc(reset) - utc(now)).total_seconds()))


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes ``x-ratelimit-reset-*`` (Go style): ``250ms``, ``12s``,
    ``1m30s``, ``6h0m0s``, rounded up to the millisecond."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# -- thresholds ---------------------------------------------------------------------------------


def crossed(
    before: int, after: int, limit: int, thresholds: Sequence[Decimal] = THRESHOLDS
) -> tuple[Decimal, ...]:
    """The thresholds that ``before -> after`` passed (reached or went beyond), in order.

    Counters change atomically and each change reports its result, so exactly one settlement
    sees a given crossing: the alert fires once, on one replica, whatever the concurrency.
    """
    if limit <= 0:
        return ()
    return tuple(t for t in thresholds if before < t * limit <= after)


# -- allowed models -----------------------------------------------------------------------------


def model_allowed(model: str, patterns: Sequence[str] | None) -> bool:
    """No list allows every model; entries are model ids or shell patterns (``gemini-2.5-*``),
    compared after the same normalisation as the catalog (no ``models/`` prefix, lower case)."""
    if patterns is None:
        return True
    name = normalize_model(model)
    return any(fnmatchcase(name, normalize_model(p)) for p in patterns)


# -- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """The limits on a tenant, or on one of its keys (``key_id``); None means no such limit."""

    id: int
    tenant_id: int
    tenant: str
    key_id: int | None
    key_prefix: str | None
    mode: Mode
    period: Period
    budget_usd: Decimal | None
    tokens: int | None
    rpm: int | None
    tpm: int | None
    allowed_models: tuple[str, ...] | None
    updated_at: datetime

    @property
    def scope(self) -> str:
        return f"tenant {self.tenant!r}" if self.key_id is None else f"key {self.key_prefix}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "key": self.key_prefix,
            "mode": self.mode,
            "period": self.period,
            "budget_usd": None if self.budget_usd is None else str(self.budget_usd),
            "tokens": self.tokens,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "allowed_models": None if self.allowed_models is None else list(self.allowed_models),
            "updated_at": utc(self.updated_at).isoformat(),
        }


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """Use of one limit now: ``used`` is settled, ``reserved`` held by calls in flight."""

    tenant: str
    key_prefix: str | None
    limit: LimitName
    mode: Mode
    period: str  # day | week | month | minute
    limit_value: Decimal  # USD for budget_usd, else tokens or requests
    used: Decimal
    reserved: Decimal
    resets_at: datetime

    @property
    def remaining(self) -> Decimal:
        return max(Decimal(0), self.limit_value - self.used - self.reserved)

    @property
    def ratio(self) -> float:
        """Settled use over the limit (the metric's value): 1.0 at the limit."""
        return float(self.used / self.limit_value) if self.limit_value else 1.0

    @property
    def label(self) -> str:
        """A bounded metric label: ``budget_usd``, or ``budget_usd:key=gm-AbCdEfGh``."""
        return self.limit if self.key_prefix is None else f"{self.limit}:key={self.key_prefix}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "key": self.key_prefix,
            "limit": self.limit,
            "mode": self.mode,
            "period": self.period,
            "limit_value": str(self.limit_value),
            "used": str(self.used),
            "reserved": str(self.reserved),
            "remaining": str(self.remaining),
            "ratio": round(self.ratio, 6),
            "resets_at": utc(self.resets_at).isoformat(),
        }
