"""The cost engine: the USD cost of one call from its usage and its model's price.

Pure functions over plain data, Decimal throughout. A rate the call needs but the price lacks
raises :class:`MissingRate`; a count the price cannot turn into money (a per-image rate for image
tokens, a prompt whose modalities are priced apart but not counted apart) raises
:class:`UnmeterableUsage`. Neither ever becomes $0. The rules, with worked examples, are in
docs/pricing.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

from ..usage import Usage
from .catalog import Catalog, Resolution
from .prices import ALL_MODALITIES, ModelPrice, Rate
from .resolution import FALLBACK_LIST
from .schema import TOKEN_UNITS

__all__ = [
    "BATCH_AND_MEDIA_FREE",
    "FREE_OPERATIONS",
    "USD_PLACES",
    "Cost",
    "CostLine",
    "MissingRate",
    "PricedCall",
    "PricingError",
    "UnmeterableUsage",
    "compute_cost",
    "price_call",
    "price_operation",
]

USD_PLACES = 10  # the ledger's NUMERIC(20, 10)
# Operations Google does not bill: their rows cost exactly zero rather than unpriced, and no
# budget, token or rate limit applies to them.
# Reading, listing, cancelling and deleting batches and video operations (issue 20, batches and
# media): a batch's responses and a video are billed when they end, on rows of their own.
BATCH_AND_MEDIA_FREE = frozenset(
    {"batches.create", "batches.get", "batches.list", "batches.cancel", "batches.delete",
     "videos.create", "operations.get"}
)  # fmt: skip
FREE_OPERATIONS = (
    frozenset(
        {
            "countTokens", "listModels", "getModel",
            # Files: storage is free today; each call still gets its row (docs/resources.md).
            "files.upload", "files.get", "files.list", "files.delete", "files.download",
            # Reading caches; their storage is priced on create, patch and delete (storage.py).
            "cachedContents.get", "cachedContents.list",
        }
    )
    | BATCH_AND_MEDIA_FREE
)  # fmt: skip
_QUANTUM = Decimal(1).scaleb(-USD_PLACES)
_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1000)


class PricingError(Exception):
    """The call cannot be priced; the message says why. Never read as a cost of $0."""

    def __init__(self, message: str, *, model: str, price_list: str) -> None:
        super().__init__(f"{model} ({price_list}): {message}")
        self.model = model
        self.price_list = price_list


class MissingRate(PricingError):
    """The call used something (audio, cache, batch, long context...) the price has no rate for."""


class UnmeterableUsage(PricingError):
    """The rate exists but not in a unit usageMetadata counts (images, seconds, modalities)."""


@dataclass(frozen=True, slots=True)
class CostLine:
    """One priced part of a call: ``usd = tokens * rate_per_million / 1,000,000``, exactly."""

    kind: str
    tokens: int
    rate_per_million: Decimal
    usd: Decimal
    source: str
    basis: str = ""  # which tier and, for derived rates, how the rate was derived


@dataclass(frozen=True, slots=True)
class Cost:
    usd: Decimal  # sum of the lines, rounded half up to USD_PLACES decimals
    price_list: str
    price_version: str
    model: str  # catalog entry id
    lines: tuple[CostLine, ...]
    long_context: bool
    batch: bool = False
    long_context_threshold: int | None = None
    prompt_tokens: int = 0  # the count compared with the threshold
    approximate: bool = False  # derived from per-character rates, see the price's approximation


@dataclass(frozen=True, slots=True)
class PricedCall:
    """What the meter records. ``cost`` is None exactly when ``priced`` is False."""

    cost: Decimal | None
    priced: bool
    price_list: str | None
    price_version: str | None
    detail: Cost | None
    model: str | None = None  # catalog entry id, when the model is known
    reason: str | None = None  # why it is $0 (not billed) or unpriced
    # Why an operator should review this price (resolution.PREVIEW_PRICE_FOR_GA_ID,
    # resolution.FALLBACK_LIST): the meter counts and logs them.
    warnings: tuple[str, ...] = ()
    resolution: Resolution | None = None  # how the id was resolved (None: not billed)


@dataclass(frozen=True, slots=True)
class _Counts:
    """Usage cut into disjoint parts, each billed at one rate."""

    fresh_other: int  # prompt tokens not from the cache, not audio (nor image/video, if apart)
    fresh_visual: int  # prompt image and video tokens, where the price bills them apart
    fresh_audio: int
    cached_other: int
    cached_audio: int
    tool_use: int
    output_text: int
    output_image: int
    output_audio: int
    thinking: int


def _split(u: Usage, visual_apart: bool = False) -> _Counts:
    # cached is part of prompt, audio part of prompt, cached audio part of both; images and audio
    # part of the candidates. Clamp so inconsistent counts can never bill a negative amount.
    prompt = u.prompt_tokens
    audio = min(u.audio_prompt_tokens, prompt)
    cached = min(u.cached_tokens, prompt)
    cached_audio = min(u.cached_audio_tokens, cached, audio)
    cached_other = min(cached - cached_audio, prompt - audio)
    # Whatever the cache holds beyond the non-audio prompt must be audio (details may be absent).
    cached_audio = cached - cached_other
    out_image = min(u.output_image_tokens, u.output_tokens)
    out_audio = min(u.output_audio_tokens, u.output_tokens - out_image)
    fresh_other = prompt - audio - cached_other
    # The Live API's promptTokensDetails count image and video apart from text (and Live has
    # no context cache): with an input_image_video rate they leave the text's share.
    visual = 0
    if visual_apart:
        visual = min(u.image_prompt_tokens + u.video_prompt_tokens, fresh_other)
    return _Counts(
        fresh_other=fresh_other - visual,
        fresh_visual=visual,
        fresh_audio=audio - cached_audio,
        cached_other=cached_other,
        cached_audio=cached_audio,
        tool_use=u.tool_use_prompt_tokens,
        output_text=u.output_tokens - out_image - out_audio,
        output_image=out_image,
        output_audio=out_audio,
        thinking=u.thinking_tokens,
    )


class _Pricer:
    """Builds the lines of one call; holds the tier so each line is priced the same way."""

    def __init__(self, price: ModelPrice, *, long: bool, batch: bool) -> None:
        self.price = price
        self.long = long
        self.batch = batch
        self.lines: list[CostLine] = []

    def fail(self, cls: type[PricingError], message: str) -> PricingError:
        return cls(message, model=self.price.id, price_list=self.price.price_list)

    def rate(self, kind: str, modalities: frozenset[str] = frozenset()) -> Rate:
        rate = self.price.rates.get(kind)
        if rate is None:
            raise self.fail(MissingRate, f"no {kind} rate")
        uncovered = modalities - (rate.covers or ALL_MODALITIES)
        if uncovered:
            raise self.fail(
                UnmeterableUsage,
                f"the {kind} rate covers {', '.join(sorted(rate.covers or ()))} only; "
                f"{', '.join(sorted(uncovered))} tokens have other rates and usageMetadata "
                "does not count them apart",
            )
        return rate

    def audio_rate(self, kind: str) -> Rate:
        own = self.price.rates.get(f"{kind}_audio")
        if own is not None and own.unit in TOKEN_UNITS:
            return own
        base = self.price.rates.get(kind)
        if base is not None and "audio" in (base.covers or ALL_MODALITIES):
            return base
        if own is not None:  # per-second only: per_million explains it cannot be used
            return own
        why = f"the {kind} rate excludes audio" if base is not None else f"no {kind} rate either"
        raise self.fail(MissingRate, f"no {kind}_audio rate, and {why}")

    def add(self, label: str, tokens: int, rate: Rate, *, cached: bool = False) -> None:
        per_million, basis = self.per_million(rate, cached=cached)
        usd = tokens * per_million / _MILLION
        self.lines.append(CostLine(label, tokens, per_million, usd, rate.source, basis))

    def per_million(self, rate: Rate, *, cached: bool) -> tuple[Decimal, str]:
        long, batch, p = self.long, self.batch, self.price
        tier = "long context" if long else "standard"
        value = rate.long if long else rate.usd
        if batch:
            batch_value = rate.batch_long if long else rate.batch
            if batch_value is not None:
                value, tier = batch_value, f"batch, {tier}"
            elif value is not None and p.batch_discount is not None:
                value = value * (1 - p.batch_discount)
                base = rate.long if long else rate.usd
                tier = f"batch, {tier}: {base} x (1 - {p.batch_discount}) = {value}"
            elif cached:
                # The seeds give cached and batch prices in separate columns, never combined: a
                # cache hit in a batch call keeps the (already lower) cached rate.
                tier = f"{tier} cached rate (no batch cached rate)"
            else:
                raise self.fail(MissingRate, f"no batch rate for {rate.kind}")
        if value is None:
            raise self.fail(MissingRate, f"no long-context rate for {rate.kind}")
        if rate.unit == "1M tokens":
            return value, tier
        if rate.unit == "1k tokens":
            return value * _THOUSAND, f"{tier}: {value} $/1k tokens x 1000"
        if rate.unit == "1k chars" and p.chars_per_token is not None:
            derived = value * p.chars_per_token * _THOUSAND
            return derived, f"{tier}: {value} $/1k chars x {p.chars_per_token} chars/token x 1000"
        raise self.fail(
            UnmeterableUsage,
            f"{rate.kind} is priced per {rate.unit}; usageMetadata counts tokens",
        )


def compute_cost(usage: Usage, price: ModelPrice, *, batch: bool = False) -> Cost:
    """The cost of one billed (HTTP 200) call. Raises a :class:`PricingError` rather than guess."""
    if price.billing == "media":
        raise UnmeterableUsage(
            "priced per image or second of media; usageMetadata has no such count",
            model=price.id,
            price_list=price.price_list,
        )
    threshold = price.long_context_threshold
    # promptTokenCount (cached tokens included) is the size of the request's input context.
    long = threshold is not None and usage.prompt_tokens > threshold
    visual_apart = "input_image_video" in price.rates
    n = _split(usage, visual_apart)
    pr = _Pricer(price, long=long, batch=batch)
    non_audio = price.input_modalities - {"audio"}
    if visual_apart:
        non_audio -= {"image", "video"}
    with localcontext() as ctx:
        ctx.prec = 60  # exact: no product of a count and a rate comes near this many digits
        if n.fresh_other:
            pr.add("input", n.fresh_other, pr.rate("input", non_audio))
        if n.fresh_visual:
            pr.add("input_image_video", n.fresh_visual, pr.rate("input_image_video"))
        if n.fresh_audio:
            pr.add("input_audio", n.fresh_audio, pr.audio_rate("input"))
        if n.cached_other:
            pr.add("cached_input", n.cached_other, pr.rate("cached_input", non_audio), cached=True)
        if n.cached_audio:
            pr.add("cached_input_audio", n.cached_audio, pr.audio_rate("cached_input"), cached=True)
        if n.tool_use:
            pr.add("tool_use_input", n.tool_use, pr.rate("input", frozenset({"text"})))
        # A model with a separate thinking price bills all output of a call that thought at it.
        thinking_rate = price.rates.get("output_thinking") if n.thinking else None
        if n.output_text:
            pr.add("output", n.output_text, thinking_rate or pr.rate("output"))
        if n.thinking:
            pr.add("thinking", n.thinking, thinking_rate or pr.rate("output"))
        if n.output_image:
            pr.add("output_image", n.output_image, pr.rate("output_image"))
        if n.output_audio:
            pr.add("output_audio", n.output_audio, pr.rate("output_audio"))
        lines = pr.lines
        if price.discount and lines:
            subtotal = sum((line.usd for line in lines), Decimal(0))
            lines.append(
                CostLine(
                    "discount",
                    0,
                    Decimal(0),
                    -(subtotal * price.discount),
                    price.discount_source or "override file",
                    f"{price.discount} of {subtotal}",
                )
            )
        total = sum((line.usd for line in lines), Decimal(0))
    return Cost(
        usd=total.quantize(_QUANTUM, rounding=ROUND_HALF_UP),
        price_list=price.price_list,
        price_version=price.price_version,
        model=price.id,
        lines=tuple(lines),
        long_context=long,
        batch=batch,
        long_context_threshold=threshold,
        prompt_tokens=usage.prompt_tokens,
        approximate=price.approximation is not None,
    )


def price_call(
    catalog: Catalog,
    model: str,
    usage: Usage,
    *,
    status: int,
    at: datetime | None,
    batch: bool = False,
    price_list: str | None = None,
) -> PricedCall:
    """Price one finished call: $0 unless HTTP 200, unpriced (None) when it cannot be priced.

    With no explicit ``price_list`` the id resolves over the default list, then the fallback
    (:meth:`Catalog.resolution`). A call the default list's entry cannot price (a rate it lacks)
    is priced by the fallback list's entry for the same id, if one is set; the result names the
    list that priced it and carries the resolution's warnings.
    """
    if status != 200:
        reason = f"HTTP {status}: only HTTP 200 replies are billed"
        list_name = catalog.info(price_list).name
        return PricedCall(Decimal(0), True, list_name, None, None, reason=reason)
    res = catalog.resolution(model, at=at, price_list=price_list)
    result = _price(res, usage, batch)
    fallback = catalog.fallback_list
    if result.priced or price_list is not None or fallback is None:
        return result
    if res.price_list != catalog.default_list:
        return result
    alt = _price(catalog.resolution(model, at=at, price_list=fallback), usage, batch)
    if not alt.priced:
        return result
    warnings = alt.warnings if FALLBACK_LIST in alt.warnings else (*alt.warnings, FALLBACK_LIST)
    return replace(alt, warnings=warnings, reason=f"priced on {fallback}: {result.reason}")


def price_operation(
    catalog: Catalog, operation: str, model: str, usage: Usage, *, status: int
) -> PricedCall:
    """Price a finished call of ``operation`` now: free operations cost exactly $0."""
    if operation in FREE_OPERATIONS:
        return PricedCall(Decimal(0), True, None, None, None, reason=f"{operation} is not billed")
    return price_call(catalog, model, usage, status=status, at=None)


def _price(res: Resolution, usage: Usage, batch: bool) -> PricedCall:
    price = res.price
    if price is None:
        reason = f"unknown model {res.requested!r} in price list {' or '.join(res.lists)}"
        return PricedCall(None, False, res.lists[0], None, None, reason=reason, resolution=res)
    try:
        cost = compute_cost(usage, price, batch=batch)
    except PricingError as exc:
        return PricedCall(
            None, False, price.price_list, price.price_version, None, price.id, str(exc),
            resolution=res,
        )  # fmt: skip
    return PricedCall(
        cost.usd, True, price.price_list, cost.price_version, cost, price.id,
        warnings=res.warnings, resolution=res,
    )  # fmt: skip
