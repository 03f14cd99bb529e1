"""Views of the catalog, of a quote and of a resolution, for ``gemini-meter prices …`` and the
admin API's ``/admin/prices/resolve``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..usage import Usage
from .catalog import Catalog, ModelPrice, Rate
from .cost import USD_PLACES, Cost, PricedCall, price_call
from .prices import PREVIEW
from .schema import TOKEN_UNITS

__all__ = [
    "explain",
    "format_catalog",
    "format_id_table",
    "format_quote",
    "format_resolution",
    "quote",
]


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


def _release(p: ModelPrice) -> str:
    return f"preview of {', '.join(p.preview_of)}" if p.stage == PREVIEW else "GA"


def _model_block(p: ModelPrice, sources: bool) -> list[str]:
    since = f"from {p.effective_from}" if p.effective_from else "baseline"
    head = f"{p.id}  {p.name}  [{since}, version {p.price_version}, {_release(p)}]"
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


# -- resolution: which entry a call to an id gets, and why -----------------------------------------

# Rates a call may need, and the shape of call that needs each (docs/pricing.md, rule 2).
_NEEDS = {
    "cached_input": "cache hits",
    "input_audio": "audio prompts",
    "cached_input_audio": "cached audio",
    "output_image": "image output",
    "output_audio": "audio output",
}


def _missing(p: ModelPrice) -> list[str]:
    """The kinds of call this price cannot meter (they go to the fallback list, if one is set)."""
    if p.billing == "media" or not p.rates:
        return ["every call"]
    missing = []
    for kind, need in _NEEDS.items():
        rate = p.rates.get(kind)
        base = p.rates.get(kind.removesuffix("_audio")) if kind.endswith("_audio") else None
        covered = base is not None and "audio" in (base.covers or {"audio"})
        if (rate is None or rate.unit not in TOKEN_UNITS) and not covered:
            missing.append(need)
    tokens = [r for r in p.rates.values() if r.unit in TOKEN_UNITS]
    if p.batch_discount is None and not any(r.batch is not None for r in tokens):
        missing.append("batch calls")
    return missing


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else _amount(value)


def explain(
    catalog: Catalog, model: str, *, at: datetime | None = None, price_list: str | None = None
) -> dict[str, Any]:
    """How a call to ``model`` at ``at`` would be priced: list, entry, version, rates, and why.

    Plain JSON-ready data (amounts as decimal strings): the CLI prints it, the admin API returns it.
    """
    res = catalog.resolution(model, at=at, price_list=price_list)
    out: dict[str, Any] = {
        "model": model,
        "normalized": res.normalized,
        "at": res.day.isoformat() if res.day else None,
        "lists": list(res.lists),
        "preview_id": res.preview_id,
        "priced": res.price is not None,
        "why": list(res.why),
        "warnings": list(res.warnings),
    }
    p, hit = res.price, res.hit
    if p is None or hit is None:
        return out
    fallback = None
    if price_list is None and catalog.fallback_list and p.price_list == catalog.default_list:
        alt = catalog.resolution(model, at=at, price_list=catalog.fallback_list)
        if alt.price is not None:
            fallback = f"{alt.price.price_list}/{alt.price.id}"
    missing = _missing(p)
    out.update(
        price_list=p.price_list,
        fallback=p.price_list != res.lists[0],
        entry=p.id,
        name=p.name,
        matched=hit.name,
        via=hit.via,
        section=p.section,
        version=p.price_version,
        effective_from=p.effective_from.isoformat() if p.effective_from else None,
        stage=p.stage,
        preview_of=list(p.preview_of),
        stage_source=p.stage_source,
        long_context_threshold=p.long_context_threshold,
        discount=_decimal(p.discount) if p.discount else None,
        rates=[
            {
                "kind": r.kind,
                "unit": r.unit,
                "usd": _decimal(r.usd),
                "long": _decimal(r.long),
                "batch": _decimal(r.batch),
                "batch_long": _decimal(r.batch_long),
                "covers": sorted(r.covers) if r.covers is not None else None,
                "source": r.source,
            }
            for r in p.rates.values()
        ],
        cannot_price=missing,
        cannot_price_goes_to=fallback if missing else None,
    )
    return out


def format_resolution(answer: dict[str, Any]) -> str:
    """:func:`explain`'s answer as text, for ``gemini-meter prices resolve``."""
    why = [f"  - {line}" for line in answer["why"]]
    if not answer["priced"]:
        return "\n".join([f"UNPRICED: {answer['model']}", "why", *why]) + "\n"
    where = " (fallback list)" if answer["fallback"] else ""
    stage = f"preview of {', '.join(answer['preview_of'])}" if answer["stage"] == PREVIEW else "GA"
    lines = [
        f"model       {answer['model']}" + (" (a preview id)" if answer["preview_id"] else ""),
        f"at          {answer['at']} (UTC)",
        f"price list  {answer['price_list']}{where}, version {answer['version']}",
        f"entry       {answer['entry']}  {answer['name']}  [{stage}]",
        f"section     {answer['section']}",
        f"release     {answer['stage_source']}",
    ]
    if answer["long_context_threshold"] is not None:
        lines.append(f"long        prompt above {answer['long_context_threshold']:,} tokens")
    if answer["warnings"]:
        lines.append(f"warnings    {', '.join(answer['warnings'])} (review this price)")
    lines += ["why", *why]
    if answer["cannot_price"]:
        goes = answer["cannot_price_goes_to"]
        then = f"priced on {goes}" if goes else "unpriced"
        lines.append(f"this entry cannot price {', '.join(answer['cannot_price'])}: {then}")
    if answer["rates"]:
        rows = [["kind", "unit", "standard", "long", "batch", "batch long", "source"]]
        rows += [
            [
                r["kind"] + (f" ({', '.join(r['covers'])})" if r["covers"] else ""),
                r["unit"],
                *(r[k] or "-" for k in ("usd", "long", "batch", "batch_long")),
                r["source"],
            ]
            for r in answer["rates"]
        ]
        lines += ["rates (USD per unit)", *_table(rows)]
    return "\n".join(lines) + "\n"


def _short_section(section: str) -> str:
    # "seeds/000_601105fe334b0f1f.txt:15 § Bản xem trước …" -> "000:15 § Bản xem trước …"
    head, sep, rest = section.partition(" § ")
    if head.startswith("seeds/") and ".txt:" in head:
        name, _, line = head.removeprefix("seeds/").partition(".txt:")
        head = f"{name[:3]}:{line}"
    return f"{head}{sep}{rest}"


def format_id_table(catalog: Catalog, *, at: datetime | None = None) -> str:
    """Every id the catalog answers for, as Markdown (docs/pricing.md shows the shipped one)."""
    rows = [
        "| id | price list | entry | section | version | release | warnings |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in catalog.names():
        res = catalog.resolution(name, at=at)
        p = res.price
        if p is None:
            rows.append(f"| `{name}` | — | — | — | — | unpriced | |")
            continue
        rows.append(
            f"| `{name}` | {p.price_list} | `{p.id}` | {_short_section(p.section)} "
            f"| {p.price_version} | {_release(p)} | {', '.join(res.warnings)} |"
        )
    return "\n".join(rows) + "\n"
