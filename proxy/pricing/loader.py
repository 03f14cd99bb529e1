"""Reading price lists and the override file: YAML text in, validated price data out.

Every error is a ``ValueError`` that names the file and the field, so a bad price stops the proxy
at start-up instead of mispricing calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError

from .prices import (
    GA,
    PREVIEW,
    Discount,
    ModelPrice,
    PriceList,
    PriceListInfo,
    Rate,
    normalize_model,
)
from .resolution import find_in_list
from .schema import (
    ENGINE_KINDS,
    KINDS,
    TOKEN_UNITS,
    DiscountFile,
    ModelFile,
    OverrideFile,
    PriceListFile,
    ReleaseFile,
)

__all__ = ["apply_overrides", "read_price_lists"]

_COVERABLE = frozenset({"input", "cached_input"})


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML would silently keep the last)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
    if dupes:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate key(s) {', '.join(dupes)}", node.start_mark
        )
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _read_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.load(
            text, Loader=_UniqueKeyLoader
        )  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ValueError(f"{origin}: not valid YAML: {exc}") from None


def _rate(kind: str, raw: Any, model: ModelFile, origin: str) -> Rate:
    where = f"{origin}: model {model.id!r}, rate {kind!r}"
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind (known: {', '.join(sorted(KINDS))})")
    if raw.covers is not None and kind not in _COVERABLE:
        raise ValueError(f"{where}: only input and cached_input rates take 'covers'")
    if kind in ENGINE_KINDS and raw.unit not in TOKEN_UNITS and raw.unit not in ("image", "second"):
        raise ValueError(f"{where}: unit {raw.unit!r} makes no sense for a metered kind")
    if raw.unit == "1k chars" and model.characters is None:
        raise ValueError(f"{where}: a '1k chars' rate needs the model's 'characters' ratio")
    return Rate(
        kind=kind,
        unit=raw.unit,
        usd=raw.usd,
        long=raw.long,
        batch=raw.batch,
        batch_long=raw.batch_long,
        covers=frozenset(raw.covers) if raw.covers is not None else None,
        source=raw.source,
        note=raw.note,
    )


def _release(m: ModelFile, lst: PriceList, origin: str) -> ReleaseFile:
    release = m.release
    if release is None:  # an override that does not say: the id keeps its release, else GA
        history = lst.prices.get(normalize_model(m.id))
        if history:
            p = history[0]
            source = p.stage_source or p.section
            return ReleaseFile(stage=p.stage, preview_of=p.preview_of, source=source)
        return ReleaseFile(stage=GA, source="override file")
    if release.stage == PREVIEW and not release.preview_of:
        raise ValueError(f"{origin}: model {m.id!r}: a preview names the ids it previews")
    if release.stage == GA and release.preview_of:
        raise ValueError(f"{origin}: model {m.id!r}: only a preview has 'preview_of'")
    return release


def _model_price(m: ModelFile, lst: PriceList, version: str, origin: str) -> ModelPrice:
    info = lst.info
    release = _release(m, lst, origin)
    if m.batch_discount is not None and m.batch_discount.fraction >= 1:
        raise ValueError(f"{origin}: model {m.id!r}: batch discount must be below 1")
    if m.characters is not None and m.characters.per_token == 0:
        raise ValueError(f"{origin}: model {m.id!r}: characters per token must be positive")
    limits = m.limits
    return ModelPrice(
        id=normalize_model(m.id),
        name=m.name,
        price_list=info.name,
        version=version,
        effective_from=m.effective_from,
        section=m.section,
        billing=m.billing,
        rates=MappingProxyType({k: _rate(k, r, m, origin) for k, r in m.rates.items()}),
        aliases=tuple(normalize_model(a) for a in m.aliases),
        input_modalities=frozenset(m.input_modalities),
        long_context_threshold=m.long_context.threshold if m.long_context else None,
        long_context_source=m.long_context.source if m.long_context else None,
        chars_per_token=m.characters.per_token if m.characters else None,
        chars_source=m.characters.source if m.characters else None,
        batch_discount=m.batch_discount.fraction if m.batch_discount else None,
        batch_discount_source=m.batch_discount.source if m.batch_discount else None,
        context_window=limits.context_window if limits else None,
        input_token_limit=limits.input_token_limit if limits else None,
        max_output_tokens=limits.max_output_tokens if limits else None,
        limits_source=limits.source if limits else None,
        approximation=m.approximation,
        notes=m.notes,
        stage=release.stage,
        preview_of=tuple(normalize_model(n) for n in release.preview_of),
        stage_source=release.source,
    )


def _add(lst: PriceList, price: ModelPrice, origin: str, *, replace_same_date: bool) -> None:
    history = lst.prices.setdefault(price.id, [])
    same = [p for p in history if p.effective_from == price.effective_from]
    if same and not replace_same_date:
        raise ValueError(
            f"{origin}: model {price.id!r} is listed twice with effective_from "
            f"{price.effective_from} in price list {lst.info.name!r}"
        )
    history[:] = [p for p in history if p.effective_from != price.effective_from] + [price]
    history.sort(key=lambda p: p.effective_from or date.min)
    for name in (price.id, *price.aliases):
        owner = lst.names.setdefault(name, price.id)
        if owner != price.id:
            raise ValueError(
                f"{origin}: {name!r} names both {owner!r} and {price.id!r} "
                f"in price list {lst.info.name!r}"
            )
    # Aliases and the release belong to the model, not to one of its prices: every price of the
    # id carries them (the newest entry's release wins).
    aliases = tuple(
        sorted(n for n, owner in lst.names.items() if owner == price.id and n != price.id)
    )
    owned = {price.id, *aliases}
    if owned & set(price.preview_of):
        raise ValueError(f"{origin}: model {price.id!r} cannot be a preview of its own id")
    for previews in lst.previews.values():
        if price.id in previews:
            previews.remove(price.id)
    for bare in price.preview_of:
        lst.previews.setdefault(bare, []).append(price.id)
    history[:] = [
        replace(
            p,
            aliases=aliases,
            stage=price.stage,
            preview_of=price.preview_of,
            stage_source=price.stage_source,
        )
        for p in history
    ]


def _validated(cls: type[Any], doc: Any, origin: str) -> Any:
    try:
        return cls.model_validate(doc)
    except ValidationError as exc:
        raise ValueError(f"{origin}: invalid price data:\n{exc}") from None


def read_price_lists(documents: Iterable[tuple[str, str]]) -> dict[str, PriceList]:
    """Parse ``(origin, yaml text)`` pairs, one price list each; ``origin`` names it in errors."""
    lists: dict[str, PriceList] = {}
    for origin, text in documents:
        doc: PriceListFile = _validated(PriceListFile, _read_yaml(text, origin), origin)
        stem = Path(origin).stem
        if stem != doc.price_list:
            raise ValueError(f"{origin}: declares price_list {doc.price_list!r}, file is {stem!r}")
        if doc.price_list in lists:
            raise ValueError(f"{origin}: price list {doc.price_list!r} defined twice")
        info = PriceListInfo(doc.price_list, doc.version, doc.as_of, doc.source, doc.notes)
        lst = lists[doc.price_list] = PriceList(info)
        for m in doc.models:
            dated = m.effective_from.isoformat() if m.effective_from else None
            version = m.version or dated or doc.version
            _add(lst, _model_price(m, lst, version, origin), origin, replace_same_date=False)
    return lists


def apply_overrides(lists: dict[str, PriceList], origin: str, text: str) -> list[Discount]:
    doc: OverrideFile = _validated(OverrideFile, _read_yaml(text, origin) or {}, origin)
    for m in doc.models:
        lst = lists.get(m.price_list)
        if lst is None:
            raise ValueError(
                f"{origin}: model {m.id!r}: unknown price list {m.price_list!r} "
                f"(known: {', '.join(sorted(lists))})"
            )
        version = m.version or (f"override-{m.effective_from}" if m.effective_from else "override")
        # Same id and date as an existing price: the operator corrects it; otherwise it is added.
        _add(lst, _model_price(m, lst, version, origin), origin, replace_same_date=True)
    return [_make_discount(d, lists, origin) for d in doc.discounts]


def _make_discount(d: DiscountFile, lists: Mapping[str, PriceList], origin: str) -> Discount:
    if d.discount >= 1:
        raise ValueError(f"{origin}: discount {d.discount} must be below 1 (it is a fraction)")
    if d.price_list is not None and d.price_list not in lists:
        raise ValueError(f"{origin}: discount for unknown price list {d.price_list!r}")
    models: frozenset[str] | None = None  # None: every model
    if d.model != "*":
        scope = [lists[d.price_list]] if d.price_list else list(lists.values())
        # The entry the name resolves to in each list (they may differ: a preview on one list,
        # the GA model on another).
        found = (find_in_list(lst, d.model, day=None) for lst in scope)
        models = frozenset(f"{hit.price_list}/{hit.model_id}" for hit in found if hit is not None)
        if not models:
            raise ValueError(f"{origin}: discount names unknown model {d.model!r}")
    return Discount(d.discount, d.price_list, models, d.effective_from, d.source)
