"""Media prices: Imagen per generated image, Veo per second of video.

Pure functions over the catalog, Decimal throughout, like :mod:`proxy.pricing.cost`: a model
the catalog does not know, or whose entry has no rate in the unit asked (a token-priced model
asked for images), is unpriced — never $0. Rates come from the price lists' ``image_generation``
(unit image) and ``video`` / ``video_with_audio`` (unit second) entries, each traced to a seed
line in ``proxy/pricing/data/*.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .catalog import Catalog, Resolution
from .cost import USD_PLACES, Cost, CostLine, PricedCall
from .resolution import FALLBACK_LIST

__all__ = [
    "IMAGE_RATE",
    "VIDEO_AUDIO_RATE",
    "VIDEO_RATE",
    "image_count",
    "price_images",
    "price_video",
]

IMAGE_RATE = "image_generation"
VIDEO_RATE = "video"
VIDEO_AUDIO_RATE = "video_with_audio"
_QUANTUM = Decimal(1).scaleb(-USD_PLACES)


def image_count(reply: Mapping[str, Any]) -> int:
    """How many images an Imagen ``:predict`` reply holds (what the call is priced on):
    predictions the safety filter removed carry a ``raiFilteredReason`` instead, not billed."""
    predictions = reply.get("predictions")
    if not isinstance(predictions, list):
        return 0
    return sum(
        1 for p in predictions
        if isinstance(p, Mapping) and isinstance(p.get("bytesBase64Encoded"), str)
    )  # fmt: skip


def price_images(
    catalog: Catalog, model: str, images: int, *, status: int = 200, at: datetime | None = None
) -> PricedCall:
    """``images`` generated images of ``model`` (filtered ones are not billed: not counted)."""
    return _price(catalog, model, ((IMAGE_RATE,), images, "image"), status=status, at=at)


def price_video(
    catalog: Catalog,
    model: str,
    seconds: int,
    *,
    audio: bool = True,
    status: int = 200,
    at: datetime | None = None,
) -> PricedCall:
    """``seconds`` of video made by ``model``. ``audio``: the video has its sound track (Veo 3
    makes one unless asked not to), priced at ``video_with_audio`` where the list has it."""
    kinds = (VIDEO_AUDIO_RATE, VIDEO_RATE) if audio else (VIDEO_RATE,)
    return _price(catalog, model, (kinds, seconds, "second"), status=status, at=at)


def _price(
    catalog: Catalog,
    model: str,
    want: tuple[tuple[str, ...], int, str],
    *,
    status: int,
    at: datetime | None,
) -> PricedCall:
    if status != 200:
        reason = f"HTTP {status}: only HTTP 200 replies are billed"
        return PricedCall(Decimal(0), True, catalog.info().name, None, None, reason=reason)
    res = catalog.resolution(model, at=at)
    result = _from(res, want)
    fallback = catalog.fallback_list
    if result.priced or fallback is None or res.price_list not in (None, catalog.default_list):
        return result
    alt = _from(catalog.resolution(model, at=at, price_list=fallback), want)
    if not alt.priced:
        return result
    warnings = alt.warnings if FALLBACK_LIST in alt.warnings else (*alt.warnings, FALLBACK_LIST)
    return replace(alt, warnings=warnings, reason=f"priced on {fallback}: {result.reason}")


def _from(res: Resolution, want: tuple[tuple[str, ...], int, str]) -> PricedCall:
    kinds, count, unit = want
    price = res.price
    if price is None:
        reason = f"unknown model {res.requested!r} in price list {' or '.join(res.lists)}"
        return PricedCall(None, False, res.lists[0], None, None, reason=reason, resolution=res)
    rate = next(
        (r for k in kinds if (r := price.rates.get(k)) is not None and r.unit == unit), None
    )
    if rate is None:
        reason = f"{price.id} has no per-{unit} {' or '.join(kinds)} rate"
        return PricedCall(
            None, False, price.price_list, price.price_version, None, price.id, reason,
            resolution=res,
        )  # fmt: skip
    usd = count * rate.usd
    lines = [CostLine(rate.kind, count, rate.usd, usd, rate.source, f"{count} x {rate.usd}/{unit}")]
    if price.discount:
        off = -(usd * price.discount)
        lines.append(
            CostLine(
                "discount",
                0,
                Decimal(0),
                off,
                price.discount_source or "override file",
                f"{price.discount} of {usd}",
            )
        )
        usd += off
    total = usd.quantize(_QUANTUM, rounding=ROUND_HALF_UP)
    cost = Cost(
        usd=total, price_list=price.price_list, price_version=price.price_version,
        model=price.id, lines=tuple(lines), long_context=False,
    )  # fmt: skip
    return PricedCall(
        total, True, price.price_list, price.price_version, cost, price.id,
        warnings=res.warnings, resolution=res,
    )  # fmt: skip
