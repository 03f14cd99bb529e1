"""The shape of the price-list files (``data/*.yaml``) and of the operator's override file.

Validation only, no pricing logic: :mod:`proxy.pricing.catalog` turns these into runtime
objects. Every model forbids unknown keys, so a misspelt field is an error, not a silent default.
Amounts must be quoted decimal strings: an unquoted ``0.15`` is parsed by YAML as a binary float,
and money never passes through a float here.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "ENGINE_KINDS",
    "KINDS",
    "TOKEN_UNITS",
    "DiscountFile",
    "Modality",
    "ModelFile",
    "OverrideFile",
    "OverrideModelFile",
    "PriceListFile",
    "RateFile",
    "ReleaseFile",
    "Unit",
]

Modality = Literal["text", "image", "video", "audio"]
Unit = Literal[
    "1M tokens",
    "1k tokens",
    "1k chars",
    "1M token-hours",
    "1k requests",
    "image",
    "second",
    "30 seconds",
    "1M training tokens",
]
# Units the cost engine can turn into a per-token rate ("1k chars" needs a chars-per-token ratio).
TOKEN_UNITS: frozenset[str] = frozenset({"1M tokens", "1k tokens", "1k chars"})

# Kinds the cost engine reads from usageMetadata counts.
ENGINE_KINDS: frozenset[str] = frozenset(
    {
        "input",
        "input_audio",
        "cached_input",
        "cached_input_audio",
        "output",
        "output_thinking",
        "output_image",
        "output_audio",
    }
)
# Every kind a file may name: the engine's, plus rates kept for reference and listing (billed by
# time, per request, per image or second, or for training - nothing usageMetadata counts).
KINDS: frozenset[str] = ENGINE_KINDS | frozenset(
    {
        "input_image",
        "input_video",
        "input_image_video",
        "cache_storage",
        "grounding_search",
        "grounding_web_enterprise",
        "grounding_maps",
        "grounding_your_data",
        "tuning",
        "tuning_table",
        "image_generation",
        "image_upscale",
        "image_edit",
        "captioning",
        "visual_qa",
        "video",
        "video_with_audio",
        "video_advanced_controls",
        "music",
        "embedding_image",
        "embedding_video_plus",
        "embedding_video_standard",
        "embedding_video_essential",
    }
)


def _decimal_string(value: object) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(
            f'must be a quoted decimal string such as "0.15", not {type(value).__name__} {value!r}'
        )
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{value!r} must be a finite, non-negative amount")
    return amount


Amount = Annotated[Decimal, BeforeValidator(_decimal_string)]
Source = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateFile(_Strict):
    """One rate: ``usd`` at the standard tier, optional long-context and batch variants."""

    usd: Amount
    long: Amount | None = None
    batch: Amount | None = None
    batch_long: Amount | None = None
    unit: Unit = "1M tokens"
    covers: tuple[Modality, ...] | None = None
    source: Source
    note: str | None = None


class LongContextFile(_Strict):
    threshold: int = Field(gt=0)
    source: Source


class CharactersFile(_Strict):
    per_token: Amount
    source: Source


class BatchDiscountFile(_Strict):
    fraction: Amount
    source: Source


class LimitsFile(_Strict):
    context_window: int | None = Field(default=None, gt=0)
    input_token_limit: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    source: Source


class ReleaseFile(_Strict):
    """What the seed prices: a GA model, or a preview of the bare ids in ``preview_of``.

    A preview entry owns its own id and aliases (the preview ids the seed gives), never the bare
    id of the model it previews: that one resolves to a GA price (docs/pricing.md, section 2).
    """

    stage: Literal["ga", "preview"]
    preview_of: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    source: Source


class ModelFile(_Strict):
    id: Annotated[str, Field(min_length=1)]
    name: str
    section: Source
    release: ReleaseFile
    aliases: tuple[str, ...] = ()
    billing: Literal["tokens", "characters", "media"] = "tokens"
    input_modalities: tuple[Modality, ...] = ("text", "image", "video", "audio")
    effective_from: date | None = None
    version: str | None = None
    long_context: LongContextFile | None = None
    characters: CharactersFile | None = None
    batch_discount: BatchDiscountFile | None = None
    limits: LimitsFile | None = None
    approximation: str | None = None
    notes: tuple[str, ...] = ()
    rates: dict[str, RateFile]


class PriceListFile(_Strict):
    price_list: Annotated[str, Field(min_length=1)]
    version: Annotated[str, Field(min_length=1)]
    as_of: date | None = None
    currency: Literal["USD"]
    source: Source
    notes: tuple[str, ...] = ()
    models: tuple[ModelFile, ...]


class OverrideModelFile(ModelFile):
    """A model price added by the operator: a new model, or a newer price of a known one."""

    price_list: str
    section: Source = "override file"
    # Absent: the id's release as the package data has it, or GA for an id it does not have.
    release: ReleaseFile | None = None  # type: ignore[assignment]


class DiscountFile(_Strict):
    """A negotiated discount: a fraction taken off every token line of matching calls."""

    discount: Amount
    price_list: str | None = None  # None: every price list
    model: str = "*"
    effective_from: date | None = None
    source: Source


class OverrideFile(_Strict):
    models: tuple[OverrideModelFile, ...] = ()
    discounts: tuple[DiscountFile, ...] = ()
