"""The price catalog: price lists loaded from package data, the operator's overrides, model ids.

One YAML file per price list (``data/gemini-api.yaml``, ``data/vertex-ai.yaml``), transcribed
from the seed pages with a source on every rate and on every entry's release (GA or preview).
:meth:`Catalog.resolution` finds the entry an id names (:mod:`proxy.pricing.resolution`) on the
default list, then the fallback. A model may have several prices over time: the one in force at
the call's time applies, so a newer price added in the override file never rewrites the cost of
calls already made. See docs/pricing.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path

from .loader import apply_overrides, read_price_lists
from .prices import Discount, ModelPrice, PriceList, PriceListInfo, Rate, normalize_model
from .resolution import Resolution, resolve

__all__ = ["Catalog", "ModelPrice", "PriceListInfo", "Rate", "Resolution", "normalize_model"]

# Resolutions kept per catalog: the ids apps send are few, and each call asks again.
_CACHE_SIZE = 4096


def _utc_day(at: datetime | None) -> date:
    if at is None:
        return datetime.now(UTC).date()
    if at.tzinfo is None:  # naive times are UTC, as everywhere in the proxy
        return at.date()
    return at.astimezone(UTC).date()


class Catalog:
    """Every price list, with the operator's overrides applied. Immutable once built."""

    def __init__(
        self,
        lists: Mapping[str, PriceList],
        default_list: str,
        discounts: Iterable[Discount] = (),
        fallback_list: str | None = None,
    ) -> None:
        for name in (default_list, fallback_list):
            if name is not None and name not in lists:
                raise ValueError(f"unknown price list {name!r} (known: {', '.join(sorted(lists))})")
        self._lists = dict(lists)
        self._discounts = tuple(discounts)
        self.default_list = default_list
        # Where a call the default list cannot price is priced instead (None: nowhere).
        self.fallback_list = fallback_list if fallback_list != default_list else None
        self._resolved: dict[tuple[str, str | None, date], Resolution] = {}

    # ------------------------------------------------------------------ building
    @classmethod
    def load(
        cls,
        default_list: str = "gemini-api",
        overrides: Path | None = None,
        fallback_list: str | None = None,
    ) -> Catalog:
        """Read the package's price lists and, if given, the operator's override file."""
        data = resources.files("proxy.pricing").joinpath("data")
        documents = [
            (f"pricing/data/{entry.name}", entry.read_text(encoding="utf-8"))
            for entry in sorted(data.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".yaml")
        ]
        override_doc = None
        if overrides is not None:
            try:
                override_doc = (str(overrides), overrides.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ValueError(f"price override file {overrides}: {exc.strerror}") from None
        return cls.from_documents(
            documents,
            default_list=default_list,
            overrides=override_doc,
            fallback_list=fallback_list,
        )

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[tuple[str, str]],
        *,
        default_list: str = "gemini-api",
        overrides: tuple[str, str] | None = None,
        fallback_list: str | None = None,
    ) -> Catalog:
        """Build from ``(origin, yaml text)`` pairs; ``origin`` names the file in errors."""
        lists = read_price_lists(documents)
        discounts = apply_overrides(lists, *overrides) if overrides is not None else []
        return cls(lists, default_list, discounts, fallback_list)

    # ------------------------------------------------------------------ queries
    @property
    def price_lists(self) -> tuple[str, ...]:
        return tuple(sorted(self._lists))

    def info(self, price_list: str | None = None) -> PriceListInfo:
        return self._list(price_list).info

    def resolve(
        self, model: str, *, at: datetime | None = None, price_list: str | None = None
    ) -> ModelPrice | None:
        """The price of ``model`` in force at ``at`` (default: now); None if it has none.

        With no ``price_list``, by the catalog's rule over the default and fallback lists.
        """
        return self.resolution(model, at=at, price_list=price_list).price

    def resolution(
        self, model: str, *, at: datetime | None = None, price_list: str | None = None
    ) -> Resolution:
        """Which entry prices a call to ``model`` at ``at``, and why (docs/pricing.md, section 2).

        ``price_list`` None: the default list, then the fallback; a named list: that list only.
        """
        day = _utc_day(at)
        key = (model, price_list, day)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        lists = [self._list(price_list)]
        if price_list is None and self.fallback_list is not None:
            lists.append(self._lists[self.fallback_list])
        res = resolve(lists, model, day)
        if res.price is not None and res.hit is not None:
            discount = self._discount(res.hit.price_list, res.hit.model_id, day)
            if discount is not None:
                price = replace(
                    res.price, discount=discount.fraction, discount_source=discount.source
                )
                res = replace(res, price=price)
        if len(self._resolved) >= _CACHE_SIZE:
            self._resolved.clear()
        self._resolved[key] = res
        return res

    def names(self) -> list[str]:
        """Every name an entry answers for: ids, aliases and the bare ids previews are of."""
        found: set[str] = set()
        for lst in self._lists.values():
            found.update(lst.names, lst.previews)
        return sorted(found)

    def entries(self, price_list: str | None = None) -> list[ModelPrice]:
        """Every price of every model of a list, past and future ones included, by id and date."""
        lst = self._list(price_list)
        return [p for model_id in sorted(lst.prices) for p in lst.prices[model_id]]

    def max_output_tokens(self, model: str, *, price_list: str | None = None) -> int | None:
        """The model's output cap where the price data gives one (the seeds give none)."""
        price = self.resolve(model, price_list=price_list)
        return price.max_output_tokens if price else None

    def _list(self, price_list: str | None) -> PriceList:
        name = price_list or self.default_list
        try:
            return self._lists[name]
        except KeyError:
            raise ValueError(
                f"unknown price list {name!r} (known: {', '.join(sorted(self._lists))})"
            ) from None

    def _discount(self, price_list: str, model_id: str, day: date) -> Discount | None:
        matching = [
            d
            for d in self._discounts
            if d.price_list in (None, price_list)
            and (d.models is None or f"{price_list}/{model_id}" in d.models)
            and (d.effective_from is None or d.effective_from <= day)
        ]
        if not matching:
            return None
        # The most specific discount wins (a model over "*", a list over all), then the newest.
        return max(
            matching,
            key=lambda d: (
                d.models is not None,
                d.price_list is not None,
                d.effective_from or date.min,
            ),
        )
