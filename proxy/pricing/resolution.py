"""Which price a model id names: the resolution rule of docs/pricing.md, section 2.

Pure functions over price lists. The id an app sends is read as a name a list knows (path prefix
and case dropped, then version suffixes one at a time), then priced by what it names:

- a preview id (a ``-preview…`` suffix, or an id a seed gives for its preview) at a preview price;
- any other id at a GA price: an entry a seed labels preview owns only its preview ids, never
  the bare id of the model it previews;
- on the default list when it has a price of that kind, else on the fallback list.

When no list has a price of the kind the id names, the other kind answers: a preview id the
seeds price only as GA gets the GA price (nothing to review: that is its model's price); a GA id
the seeds price only as a preview gets the preview price, and the result carries a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from .prices import GA, PREVIEW, ModelPrice, PriceList, normalize_model, strip_version

__all__ = [
    "FALLBACK_LIST",
    "PREVIEW_PRICE_FOR_GA_ID",
    "Hit",
    "Resolution",
    "find_in_list",
    "resolve",
]

# Why a call's price deserves an operator's review (the metric's bounded reason label).
PREVIEW_PRICE_FOR_GA_ID = "preview_price_for_ga_id"
FALLBACK_LIST = "fallback_list"


@dataclass(frozen=True, slots=True)
class Hit:
    """An entry of one list that answers for an id."""

    price_list: str
    model_id: str
    name: str  # the name the entry answered to, once ``depth`` version suffixes came off
    depth: int
    via: str  # "id", "alias" or "preview of"
    stage: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """The price a call to ``requested`` gets on ``day``, and why. ``price`` None: unpriced."""

    requested: str
    normalized: str
    day: date | None
    preview_id: bool
    price: ModelPrice | None
    hit: Hit | None
    lists: tuple[str, ...]  # the lists tried, in order: the default (or the one asked for), then
    # the fallback
    why: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def price_list(self) -> str | None:
        return self.hit.price_list if self.hit else None


def _chain(normalized: str) -> tuple[list[str], list[str]]:
    """The name, then the name without each version suffix in turn; and those suffixes."""
    names, suffixes = [normalized], []
    while (cut := strip_version(names[-1])) is not None:
        names.append(cut[0])
        suffixes.append(cut[1])
    return names, suffixes


def _hits(lst: PriceList, names: Sequence[str], day: date | None) -> tuple[Hit | None, Hit | None]:
    """The first GA entry and the first preview entry of ``lst`` along the chain of names."""
    ga: Hit | None = None
    preview: Hit | None = None
    for depth, name in enumerate(names):
        owner = lst.names.get(name)
        if owner is not None and lst.in_force(owner, day) is not None:
            via = "id" if owner == name else "alias"
            hit = Hit(lst.info.name, owner, name, depth, via, lst.stage(owner))
            if hit.stage == PREVIEW:
                preview = preview or hit
            else:
                ga = ga or hit
        if preview is None:
            # The newest preview entry of the bare id (an override comes after the seed).
            for pid in reversed(lst.previews.get(name, ())):
                if lst.in_force(pid, day) is not None:
                    preview = Hit(lst.info.name, pid, name, depth, "preview of", PREVIEW)
                    break
        if ga is not None and preview is not None:
            break
    return ga, preview


def _is_preview_id(
    lists: Sequence[PriceList], names: Sequence[str], suffixes: Sequence[str]
) -> bool:
    if any(s.startswith("-preview") for s in suffixes):
        return True
    return any(
        (owner := lst.names.get(n)) is not None and lst.stage(owner) == PREVIEW
        for lst in lists
        for n in names
    )


def _ranked(
    lists: Sequence[PriceList], names: Sequence[str], preview_id: bool, day: date | None
) -> list[Hit]:
    """Every answering entry, best first: the kind the id names, then the other kind."""
    found = [_hits(lst, names, day) for lst in lists]
    ga = [g for g, _ in found]
    previews = [p for _, p in found]
    order = [*previews, *ga] if preview_id else [*ga, *previews]
    return [h for h in order if h is not None]


def find_in_list(lst: PriceList, model: str, day: date | None) -> Hit | None:
    """The entry of one list that answers for ``model`` (``day`` None: ignore dates)."""
    names, suffixes = _chain(normalize_model(model))
    ranked = _ranked([lst], names, _is_preview_id([lst], names, suffixes), day)
    return ranked[0] if ranked else None


def resolve(lists: Sequence[PriceList], model: str, day: date | None) -> Resolution:
    """Resolve ``model`` over ``lists`` (the default or requested list first, then the fallback)."""
    normalized = normalize_model(model)
    names, suffixes = _chain(normalized)
    preview_id = _is_preview_id(lists, names, suffixes)
    ranked = _ranked(lists, names, preview_id, day) if normalized else []
    hit = ranked[0] if ranked else None
    by_name = {lst.info.name: lst for lst in lists}
    price = by_name[hit.price_list].in_force(hit.model_id, day) if hit is not None else None
    warnings: list[str] = []
    if hit is not None and hit.stage == PREVIEW and not preview_id:
        warnings.append(PREVIEW_PRICE_FOR_GA_ID)
    if hit is not None and hit.price_list != lists[0].info.name:
        warnings.append(FALLBACK_LIST)
    why = _explain(model, normalized, names, suffixes, preview_id, ranked, price, lists)
    return Resolution(
        requested=model,
        normalized=normalized,
        day=day,
        preview_id=preview_id,
        price=price,
        hit=hit,
        lists=tuple(lst.info.name for lst in lists),
        why=tuple(why),
        warnings=tuple(warnings),
    )


def _explain(
    requested: str,
    normalized: str,
    names: Sequence[str],
    suffixes: Sequence[str],
    preview_id: bool,
    ranked: Sequence[Hit],
    price: ModelPrice | None,
    lists: Sequence[PriceList],
) -> list[str]:
    why: list[str] = []
    raw = requested.strip()
    if normalized != raw:
        changes = []
        if "/" in raw:
            changes.append(f"path {raw.rsplit('/', 1)[0] + '/'!r} dropped")
        if raw.rsplit("/", 1)[-1].strip() != normalized:
            changes.append("lower-cased")
        why.append(f"{requested!r} is read as {normalized!r} ({', '.join(changes) or 'trimmed'})")
    hit = ranked[0] if ranked else None
    if hit is None or price is None:
        tried = ", ".join(repr(n) for n in names)
        where = " or ".join(lst.info.name for lst in lists)
        why.append(f"no entry of {where} answers for {tried}: calls are unpriced, never $0")
        return why
    for i in range(hit.depth):
        kind = "preview suffix" if suffixes[i].startswith("-preview") else "version suffix"
        why.append(f"{kind} {suffixes[i]!r} dropped: {names[i]!r} -> {names[i + 1]!r}")
    entry = f"{hit.price_list}/{hit.model_id}"
    if hit.via == "id":
        why.append(f"{hit.name!r} is the id of {entry}")
    elif hit.via == "alias":
        why.append(f"{hit.name!r} is an alias of {entry}")
    else:
        why.append(f"{entry} is its seed's preview of {hit.name!r}")
    source = price.stage_source or "no source"
    if preview_id and hit.stage == PREVIEW:
        why.append(f"a preview id: priced at the preview price its seed gives ({source})")
    elif preview_id:
        why.append(f"a preview id no list has a preview price for: its GA price ({source})")
    elif hit.stage == GA:
        why.append(f"a GA id: priced at the GA price ({source})")
    else:
        why.append(
            f"a GA id no list prices as GA: priced from the preview entry ({source}); "
            "review this price (add the GA price in the override file)"
        )
    default = lists[0].info.name
    if hit.price_list != default:
        kind = "preview" if preview_id else "GA"
        passed = [h for h in ranked if h.price_list == default]
        other = "GA" if preview_id else "preview"
        only = (
            f" (its {other} entry {default}/{passed[0].model_id} answers only when no list has "
            f"a {kind} price)"
            if passed
            else ""
        )
        why.append(
            f"the default list {default} has no {kind} price for it{only}: priced on the "
            f"fallback list {hit.price_list}"
        )
    return why
