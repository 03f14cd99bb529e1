"""Context-cache storage: USD per million token-hours (the ``cache_storage`` rate of a model).

A cache of ``tokens`` held from ``held_from`` costs, up to a time ``t``,

    cumulative(t) = round(tokens x hours(held_from, t) x rate / 1,000,000, 10 places)

and every ledger row of a cache is the difference of two such amounts: create bills
``cumulative(expire)``, a patch moving the expiry from ``a`` to ``b`` bills ``cumulative(b) -
cumulative(a)`` (a credit when ``b < a``), a delete at ``t`` bills ``cumulative(t) -
cumulative(expire)``. The rows telescope: they add up to exactly ``cumulative(end)`` for the time
the cache was actually held, with no rounding drift however many there are (docs/resources.md).
Pure, Decimal throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from .catalog import Catalog
from .cost import USD_PLACES, PricedCall
from .prices import ModelPrice, Rate

__all__ = [
    "STORAGE_RATE",
    "StorageCharge",
    "moved_hours",
    "price_storage",
    "storage_charge",
    "storage_rate",
    "token_hours",
]

STORAGE_RATE = "cache_storage"
_QUANTUM = Decimal(1).scaleb(-USD_PLACES)
_MILLION = Decimal(1_000_000)
_MICROSECONDS_PER_HOUR = Decimal(3_600_000_000)
# Token-hours as the ledger shows them (detail.tokenHours): an hour is 3,600,000,000 µs, so a
# count of microseconds rarely divides into a finite decimal; 9 places, rounded half up.
_HOURS_QUANTUM = Decimal(1).scaleb(-9)


@dataclass(frozen=True, slots=True)
class StorageCharge:
    """One row's worth of storage: from ``start`` to ``end`` (a credit when ``end < start``)."""

    token_hours: Decimal
    usd: Decimal
    rate: Rate


def _exact_hours(tokens: int, start: datetime, end: datetime) -> Decimal:
    micro = (end - start) // timedelta(microseconds=1)
    with localcontext() as ctx:
        ctx.prec = 60
        return Decimal(tokens) * Decimal(micro) / _MICROSECONDS_PER_HOUR


def token_hours(tokens: int, start: datetime, end: datetime) -> Decimal:
    """``tokens`` x the hours from ``start`` to ``end`` (negative if ``end`` is earlier), to
    the microsecond, rounded half up to 9 places."""
    with localcontext() as ctx:
        ctx.prec = 60
        return _exact_hours(tokens, start, end).quantize(_HOURS_QUANTUM, rounding=ROUND_HALF_UP)


def _cumulative(tokens: int, held_from: datetime, until: datetime, rate: Rate) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        usd = _exact_hours(tokens, held_from, until) * rate.usd / _MILLION
        return usd.quantize(_QUANTUM, rounding=ROUND_HALF_UP)


def moved_hours(
    tokens: int, held_from: datetime, billed_until: datetime, new_until: datetime
) -> Decimal:
    """The token-hours of one row, telescoping like its cost: the rows of a cache add up to
    ``token_hours(tokens, held_from, end)`` exactly."""
    return token_hours(tokens, held_from, new_until) - token_hours(tokens, held_from, billed_until)


def storage_charge(
    tokens: int, held_from: datetime, billed_until: datetime, new_until: datetime, rate: Rate
) -> StorageCharge:
    """Move a cache's billing from ``billed_until`` to ``new_until`` (see the module's doc)."""
    if rate.unit != "1M token-hours":
        raise ValueError(f"{rate.kind} is priced per {rate.unit}, not per 1M token-hours")
    usd = _cumulative(tokens, held_from, new_until, rate) - _cumulative(
        tokens, held_from, billed_until, rate
    )
    return StorageCharge(moved_hours(tokens, held_from, billed_until, new_until), usd, rate)


def storage_rate(catalog: Catalog, model: str) -> tuple[ModelPrice, Rate] | None:
    """The model's price entry and its storage rate: the default list's, else the fallback's."""
    lists = (None, catalog.fallback_list) if catalog.fallback_list else (None,)
    for price_list in lists:
        price = catalog.resolution(model, price_list=price_list).price
        if price is not None and (rate := price.rates.get(STORAGE_RATE)) is not None:
            return price, rate
    return None


def price_storage(
    catalog: Catalog,
    model: str,
    tokens: int,
    held_from: datetime,
    billed_until: datetime,
    new_until: datetime,
) -> tuple[PricedCall, Decimal]:
    """The ledger price of moving a cache's billing to ``new_until``, and its token-hours.
    A model without a storage rate is unpriced (flagged), never $0."""
    hours = moved_hours(tokens, held_from, billed_until, new_until)
    found = storage_rate(catalog, model)
    if found is None:
        reason = f"no {STORAGE_RATE} rate for model {model!r}"
        return PricedCall(None, False, catalog.default_list, None, None, reason=reason), hours
    price, rate = found
    charge = storage_charge(tokens, held_from, billed_until, new_until, rate)
    priced = PricedCall(
        charge.usd, True, price.price_list, price.price_version, None, price.id,
        reason=f"{hours} token-hours at {rate.usd} USD per 1M token-hours ({rate.source})",
    )  # fmt: skip
    return priced, hours
