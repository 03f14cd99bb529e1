"""The plain data of prices: rates, model prices, price lists, and model-id normalization.

No I/O and no validation here: :mod:`proxy.pricing.loader` builds these from the YAML files and
:mod:`proxy.pricing.catalog` answers questions about them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

__all__ = [
    "ALL_MODALITIES",
    "GA",
    "PREVIEW",
    "Discount",
    "ModelPrice",
    "PriceList",
    "PriceListInfo",
    "Rate",
    "normalize_model",
    "strip_version",
]

ALL_MODALITIES: frozenset[str] = frozenset({"text", "image", "video", "audio"})

# Suffixes that name a version or a dated snapshot of the same model and price: -001, -latest,
# -preview, -preview-05-20, -preview-09-2025, Vertex's @001. "-exp" is deliberately absent:
# experimental models are different (often free-tier) models, so they stay unknown and visible.
_VERSION_SUFFIX = re.compile(r"(?:-latest|-\d{3}|-preview(?:-\d{2}-\d{2}|-\d{2}-\d{4})?|@[\w.-]+)$")

# Release stages: a seed labels a model "preview" (Bản xem trước, aperçu) or prices it unlabelled.
GA = "ga"
PREVIEW = "preview"


def normalize_model(model: str) -> str:
    """``" models/Gemini-2.5-Flash "`` -> ``"gemini-2.5-flash"``: no path, no blanks, lower case.

    Everything up to the last ``/`` goes, so ``models/x``, ``tunedModels/x`` and Vertex's
    ``projects/p/locations/l/publishers/google/models/x`` all become ``x``.
    """
    return model.strip().rsplit("/", 1)[-1].strip().lower()


def strip_version(name: str) -> tuple[str, str] | None:
    """``"gemini-2.5-flash-001"`` -> ``("gemini-2.5-flash", "-001")``; None if no suffix ends it."""
    m = _VERSION_SUFFIX.search(name)
    if m is None or m.start() == 0:
        return None
    return name[: m.start()], m.group(0)


@dataclass(frozen=True, slots=True)
class Rate:
    """One rate of a model: USD per ``unit``, by tier (standard, long context, batch)."""

    kind: str
    unit: str
    usd: Decimal
    long: Decimal | None
    batch: Decimal | None
    batch_long: Decimal | None
    covers: frozenset[str] | None
    source: str
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """A model's price in one price list, in force from ``effective_from`` (None: always)."""

    id: str
    name: str
    price_list: str
    version: str
    effective_from: date | None
    section: str
    billing: str
    rates: Mapping[str, Rate]
    aliases: tuple[str, ...] = ()
    input_modalities: frozenset[str] = ALL_MODALITIES
    long_context_threshold: int | None = None
    long_context_source: str | None = None
    chars_per_token: Decimal | None = None
    chars_source: str | None = None
    batch_discount: Decimal | None = None
    batch_discount_source: str | None = None
    context_window: int | None = None
    input_token_limit: int | None = None
    max_output_tokens: int | None = None
    limits_source: str | None = None
    approximation: str | None = None
    notes: tuple[str, ...] = ()
    # The release its seed prices: GA, or a preview of the models in ``preview_of`` (bare ids
    # this entry does not own). Like aliases, it belongs to the model id, not to one price.
    stage: str = GA
    preview_of: tuple[str, ...] = ()
    stage_source: str | None = None
    # Filled in by Catalog.resolve from the override file's discounts.
    discount: Decimal = Decimal(0)
    discount_source: str | None = None

    @property
    def is_preview(self) -> bool:
        return self.stage == PREVIEW

    @property
    def price_version(self) -> str:
        """What the ledger records: the price's version, and the discount if one applied."""
        return f"{self.version}+discount={self.discount}" if self.discount else self.version


@dataclass(frozen=True, slots=True)
class PriceListInfo:
    name: str
    version: str
    as_of: date | None
    source: str
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Discount:
    fraction: Decimal
    price_list: str | None
    models: frozenset[str] | None  # "<list>/<id>" of the entries it covers; None: every model
    effective_from: date | None
    source: str


@dataclass(slots=True)
class PriceList:
    info: PriceListInfo
    prices: dict[str, list[ModelPrice]] = field(default_factory=dict)  # id -> by effective_from
    names: dict[str, str] = field(default_factory=dict)  # id or alias -> id
    previews: dict[str, list[str]] = field(default_factory=dict)  # bare id -> preview entry ids

    def stage(self, model_id: str) -> str:
        return self.prices[model_id][0].stage

    def in_force(self, model_id: str, day: date | None) -> ModelPrice | None:
        """The id's price in force on ``day`` (None: any day, the newest)."""
        history = self.prices[model_id]
        if day is None:
            return history[-1]
        in_force = [p for p in history if p.effective_from is None or p.effective_from <= day]
        return in_force[-1] if in_force else None
