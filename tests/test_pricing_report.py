"""The text the CLI prints: ``gemini-meter prices`` and ``gemini-meter prices quote``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.pricing.catalog import Catalog
from proxy.pricing.report import format_catalog, format_quote, quote

AT = datetime(2026, 1, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.mark.parametrize("price_list", ["gemini-api", "vertex-ai"])
def test_catalog_lists_every_model(catalog: Catalog, price_list: str) -> None:
    text = format_catalog(catalog, price_list)
    assert text.splitlines()[0].startswith(f"Price list {price_list}")
    for price in catalog.entries(price_list):
        assert f"\n{price.id}  {price.name}" in text


def test_catalog_defaults_to_the_default_list(catalog: Catalog) -> None:
    text = format_catalog(catalog)
    assert "Price list gemini-api (default), version 2025-05-07" in text
    assert "long context: prompt above 200,000 tokens" in text
    assert "no paid-tier rates: calls are unpriced" in text  # Gemma 3, Text Embedding 004


def test_catalog_with_sources(catalog: Catalog) -> None:
    text = format_catalog(catalog, "vertex-ai", sources=True)
    assert "seeds/004_8191c03ed1050dc1.txt:57 § Gemini 3" in text
    assert "per-character rates priced at 4 chars/token" in text
    assert "media model" in text


def test_quote_shows_each_line_and_how(catalog: Catalog) -> None:
    pc = quote(
        catalog,
        "models/gemini-2.5-pro-preview-05-06",
        prompt_tokens=200_001,
        output_tokens=1_000,
        cached_tokens=100_000,
        thinking_tokens=500,
        at=AT,
    )
    text = format_quote(pc, requested_model="models/gemini-2.5-pro-preview-05-06")
    assert (
        'model       gemini-2.5-pro-preview-05-06 (requested "models/gemini-2.5-pro-preview-05-06")'
        in text
    )
    assert "price list  gemini-api, version 2025-05-07" in text
    assert "long: prompt 200,001 > 200,000 tokens" in text
    # 100,001 x 2.5 + 100,000 x 0.625 + 1,000 x 15 + 500 x 15, per million
    assert "total       $0.3350025000" in text
    for row in ("input         100,001  2.5", "cached_input  100,000  0.625", "thinking      500"):
        assert row in text
    assert "seeds/000_601105fe334b0f1f.txt:42" in text


def test_quote_of_a_derived_rate_explains_it(catalog: Catalog) -> None:
    pc = quote(
        catalog, "gemini-1.5-pro", prompt_tokens=1_000, output_tokens=0, batch=True,
        price_list="vertex-ai", at=AT,
    )  # fmt: skip
    text = format_quote(pc)
    assert "approximate" in text
    assert "0.0003125 x (1 - 0.50)" in text and "x 4 chars/token" in text
    assert "batch       yes" in text


def test_quote_of_a_tiny_cost_is_not_in_exponent_notation(catalog: Catalog) -> None:
    pc = quote(catalog, "gemini-2.0-flash", prompt_tokens=1, output_tokens=0, at=AT)
    assert "total       $0.0000001000" in format_quote(pc)


@pytest.mark.parametrize(
    ("model", "kwargs", "expected"),
    [
        ("gpt-4o", {}, "UNPRICED: unknown model 'gpt-4o'"),
        (
            "gemini-2.5-flash-preview-04-17",
            {"cached_tokens": 10},
            "UNPRICED: gemini-2.5-flash-preview-04-17 (gemini-api): no cached_input rate",
        ),
        ("gemini-2.0-flash", {"batch": True}, "UNPRICED: gemini-2.0-flash (gemini-api): no batch"),
    ],
    ids=["unknown", "missing-cache-rate", "missing-batch-rate"],
)
def test_quote_of_an_unpriced_call(
    catalog: Catalog, model: str, kwargs: dict[str, object], expected: str
) -> None:
    pc = quote(catalog, model, prompt_tokens=100, output_tokens=10, at=AT, **kwargs)  # type: ignore[arg-type]
    assert format_quote(pc).startswith(expected)


def test_quote_accepts_a_cost(catalog: Catalog) -> None:
    pc = quote(catalog, "gemini-2.0-flash", prompt_tokens=1_000, output_tokens=500, at=AT)
    assert pc.detail is not None
    assert format_quote(pc.detail) == format_quote(pc)
