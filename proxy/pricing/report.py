"""Plain-text views of the catalog and of a quote, for ``gemini-meter prices [quote]``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from ..usage import Usage
from .catalog import Catalog, ModelPrice, Rate
from .cost import USD_PLACES, Cost, PricedCall, price_call

__all__ = ["format_catalog", "format_quote", "quote"]


def _amount(value: Decimal | None) -> str:
    if value is None:
        return "-"
    text = format(value.normalize(), "f")
    return text if value else "0"


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]


def _rate_row(rate: Rate, sources: bool) -> list[str]:
    kind = rate.kind + (f" ({', '.join(sorted(rate.covers))})" if rate.covers else "")
    row = [kind, rate.unit, *(map(_amount, (rate.usd, rate.long, rate.batch, rate.batch_long)))]
    return [*row, rate.source] if sources else row


def _model_block(p: ModelPrice, sources: bool) -> list[str]:
    since = f"from {p.effective_from}" if p.effective_from else "baseline"
    head = f"{p.id}  {p.name}  [{since}, version {p.price_version}]"
    out = [head + (f"  aliases: {', '.join(p.aliases)}" if p.aliases else "")]
    if p.long_context_threshold is not None:
        out.append(f"  long context: prompt above {p.long_context_threshold:,} tokens")
    if p.chars_per_token is not None:
        out.append(f"  per-character rates priced at {_amount(p.chars_per_token)} chars/token")
    if p.batch_discount is not None:
        out.append(f"  batch: {_amount(p.batch_discount * 100)}% off where no batch rate is listed")
    if p.billing == "media":
        out.append("  media model: priced per image or second, not meterable from usage")
    if not p.rates:
        out.append("  no paid-tier rates: calls are unpriced")
        return out
    header = ["kind", "unit", "standard", "long", "batch", "batch long"]
    rows = [header + (["source"] if sources else [])]
    rows += [_rate_row(r, sources) for r in p.rates.values()]
    return out + _table(rows)


def format_catalog(
    catalog: Catalog, price_list: str | None = None, *, sources: bool = False
) -> str:
    """Every model of a price list (default: the catalog's default) with its rates in USD."""
    info = catalog.info(price_list)
    default = " (default)" if info.name == catalog.default_list else ""
    lines = [
        f"Price list {info.name}{default}, version {info.version}, from {info.source}",
        "USD per unit; 'long' applies when the prompt exceeds the model's long-context threshold.",
    ]
    for price in catalog.entries(info.name):
        lines += ["", *_model_block(price, sources)]
    return "\n".join(lines) + "\n"


def format_quote(result: PricedCall | Cost, *, requested_model: str | None = None) -> str:
    """A priced call, line by line: tokens x rate per million = USD, with each rate's source."""
    if isinstance(result, PricedCall):
        if result.detail is None:
            label = "not billed" if result.priced else "UNPRICED"
            amount = "" if result.cost is None else f" - cost ${_amount(result.cost)}"
            return f"{label}: {result.reason}{amount}\n"
        cost = result.detail
    else:
        cost = result
    requested = f' (requested "{requested_model}")' if requested_model else ""
    if cost.long_context_threshold is None:
        context = "no long-context tier"
    elif cost.long_context:
        context = (
            f"long: prompt {cost.prompt_tokens:,} > {cost.long_context_threshold:,} tokens, "
            "so every line is at the long-context rate"
        )
    else:
        context = (
            f"standard: prompt {cost.prompt_tokens:,} <= {cost.long_context_threshold:,} tokens"
        )
    lines = [
        f"model       {cost.model}{requested}",
        f"price list  {cost.price_list}, version {cost.price_version}",
        f"context     {context}",
        f"batch       {'yes' if cost.batch else 'no'}",
    ]
    if cost.approximate:
        lines.append("note        approximate: derived from per-character rates (docs/pricing.md)")
    rows = [["kind", "tokens", "$/1M tokens", "usd", "rate", "source"]]
    rows += [
        [
            line.kind,
            f"{line.tokens:,}",
            _amount(line.rate_per_million),
            _amount(line.usd),
            line.basis,
            line.source,
        ]
        for line in cost.lines
    ]
    lines += ["", *_table(rows, indent="")]
    lines += [
        "",
        f"total       ${cost.usd:f}  (sum of the lines, rounded half up to {USD_PLACES} decimals)",
    ]
    return "\n".join(lines) + "\n"


def quote(
    catalog: Catalog,
    model: str,
    *,
    prompt_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    thinking_tokens: int = 0,
    audio_tokens: int = 0,
    batch: bool = False,
    price_list: str | None = None,
    at: datetime | None = None,
) -> PricedCall:
    """Price a hypothetical HTTP 200 call from CLI-style counts (audio = audio prompt tokens)."""
    usage = Usage(
        prompt_tokens=prompt_tokens,
        cached_tokens=cached_tokens,
        output_tokens=output_tokens,
        thinking_tokens=thinking_tokens,
        audio_prompt_tokens=audio_tokens,
    )
    return price_call(catalog, model, usage, status=200, at=at, batch=batch, price_list=price_list)
