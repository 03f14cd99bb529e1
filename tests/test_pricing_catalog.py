"""The price catalog: the data files against the seeds, model id resolution, effective dates,
the override file, and refusal of bad data."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.pricing.catalog import Catalog, ModelPrice, normalize_model
from proxy.pricing.prices import strip_version
from proxy.pricing.schema import ENGINE_KINDS, TOKEN_UNITS

SEEDS = Path(__file__).resolve().parents[1].parent / "shared" / "seeds"
DATA = Path(__file__).resolve().parents[1] / "proxy" / "pricing" / "data"
# "seeds/<file>:<line>[,<line>...] § <section> › <row>": the amount is on one of those lines.
SOURCE = re.compile(r"^seeds/(\d{3}_[0-9a-f]{16}\.txt):(\d+(?:,\d+)*) § \S")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def _all_prices(catalog: Catalog) -> list[ModelPrice]:
    return [p for name in catalog.price_lists for p in catalog.entries(name)]


# -- what the catalog holds ----------------------------------------------------------------

EXPECTED_IDS = {
    "gemini-api": {
        "gemini-2.5-flash-preview-04-17",
        "gemini-2.5-pro-preview-05-06",
        "gemini-2.0-flash",
        "gemini-2.0-flash-live",
        "gemini-2.0-flash-lite",
        "imagen-3",
        "veo-2",
        "gemma-3",
        "gemini-1.5-flash",
        "gemini-1.5-flash-8b",
        "gemini-1.5-pro",
        "text-embedding-004",
    },
    "vertex-ai": {
        "gemini-3-pro-preview",
        "gemini-3-pro-image-preview",
        "gemini-3-flash-preview",
        "gemini-2.5-pro",
        "gemini-2.5-computer-use-preview",
        "gemini-2.5-flash",
        "gemini-2.5-flash-image",
        "gemini-2.5-flash-live",
        "gemini-2.5-flash-lite",
        "gemini-2.0-flash",
        "gemini-2.0-flash-image-generation",
        "gemini-2.0-flash-live-preview",
        "gemini-2.0-flash-lite",
        "gemini-1.5-flash",
        "gemini-1.5-pro",
        "gemini-1.0-pro",
        "gemini-embedding",
        "text-embedding",
        "multimodalembedding",
        "imagen-4-ultra",
        "imagen-4",
        "imagen-4-fast",
        "imagen-3",
        "imagen-3-fast",
        "imagegeneration",
        "imagetext",
        "imagen-product-recontext",
        "virtual-try-on",
        "veo-3.1",
        "veo-3.1-fast",
        "veo-3",
        "veo-3-fast",
        "veo-2",
        "lyria-2",
    },
}


@pytest.mark.parametrize("price_list", sorted(EXPECTED_IDS))
def test_every_seed_model_is_catalogued(catalog: Catalog, price_list: str) -> None:
    assert {p.id for p in catalog.entries(price_list)} == EXPECTED_IDS[price_list]


def test_lists_and_versions(catalog: Catalog) -> None:
    assert catalog.price_lists == ("gemini-api", "vertex-ai")
    assert catalog.default_list == "gemini-api"
    assert catalog.info().version == "2025-05-07"
    assert catalog.info("vertex-ai").version == "seed-004"
    assert Catalog.load(default_list="vertex-ai").default_list == "vertex-ai"


def test_every_amount_is_a_decimal(catalog: Catalog) -> None:
    for price in _all_prices(catalog):
        for rate in price.rates.values():
            for amount in (rate.usd, rate.long, rate.batch, rate.batch_long):
                assert amount is None or type(amount) is Decimal, (price.id, rate.kind)


def test_every_rate_names_a_seed_line(catalog: Catalog) -> None:
    for price in _all_prices(catalog):
        assert SOURCE.match(price.section), price.section
        for rate in price.rates.values():
            assert SOURCE.match(rate.source), (price.id, rate.kind, rate.source)
        for extra in (price.long_context_source, price.chars_source, price.batch_discount_source):
            assert extra is None or SOURCE.match(extra), (price.id, extra)


def _appears(amount: Decimal, line: str) -> bool:
    text = str(amount)
    forms = {text, text.replace(".", ",")}
    return any(re.search(rf"(?<![\d,.]){re.escape(f)}(?![\d])", line) for f in forms)


@pytest.mark.skipif(not SEEDS.is_dir(), reason="shared/seeds is not beside the repository")
def test_every_amount_is_transcribed_from_its_source_line(catalog: Catalog) -> None:
    """Each rate's number is on the seed line its source names (comma or dot decimals)."""
    seeds: dict[str, list[str]] = {}
    problems = []
    for price in _all_prices(catalog):
        for rate in price.rates.values():
            m = SOURCE.match(rate.source)
            assert m is not None
            name, numbers = m.group(1), [int(n) for n in m.group(2).split(",")]
            lines = seeds.setdefault(name, (SEEDS / name).read_text("utf-8").splitlines())
            line = " | ".join(lines[n - 1] for n in numbers)
            for amount in (rate.usd, rate.long, rate.batch, rate.batch_long):
                if amount is not None and not (amount == 0 or _appears(amount, line)):
                    problems.append(
                        f"{price.price_list}/{price.id}/{rate.kind}: {amount} not in {line!r}"
                    )
    assert problems == []


@pytest.mark.skipif(not SEEDS.is_dir(), reason="shared/seeds is not beside the repository")
@pytest.mark.parametrize(
    ("price_list", "model", "kind", "seed_line", "words"),
    [
        ("gemini-api", "gemini-2.5-pro", "input", 42, "<= 200.000"),
        ("gemini-api", "gemini-1.5-flash", "input", 128, "<= 128.000"),
        ("vertex-ai", "gemini-2.5-pro", "input", 81, "<= 200 000"),
        ("vertex-ai", "gemini-1.5-flash", "input", 241, "=< 128 000"),
    ],
    ids=["api-2.5-pro", "api-1.5-flash", "vertex-2.5", "vertex-legacy"],
)
def test_thresholds_are_the_seeds_inclusive_bounds(
    catalog: Catalog, price_list: str, model: str, kind: str, seed_line: int, words: str
) -> None:
    """The seeds bill the standard rate up to and including the threshold ("<=")."""
    name = "000_601105fe334b0f1f.txt" if price_list == "gemini-api" else "004_8191c03ed1050dc1.txt"
    assert words in (SEEDS / name).read_text("utf-8").splitlines()[seed_line - 1]
    price = catalog.resolve(model, price_list=price_list)
    assert price is not None
    threshold = int(re.sub(r"\D", "", words))
    assert price.long_context_threshold == threshold


# How the seeds label a preview: Vietnamese (000), English and French (004).
PREVIEW_LABEL = re.compile(r"xem trước|preview|aperçu", re.IGNORECASE)


@pytest.mark.skipif(not SEEDS.is_dir(), reason="shared/seeds is not beside the repository")
def test_every_release_is_the_seeds_label(catalog: Catalog) -> None:
    """A preview entry cites a line that labels it preview; a GA entry cites unlabelled lines."""
    problems = []
    for price in _all_prices(catalog):
        m = SOURCE.match(price.stage_source or "")
        assert m is not None, (price.id, price.stage_source)
        lines = (SEEDS / m.group(1)).read_text("utf-8").splitlines()
        text = " | ".join(lines[int(n) - 1] for n in m.group(2).split(","))
        if bool(PREVIEW_LABEL.search(text)) != price.is_preview:
            problems.append(f"{price.price_list}/{price.id} is {price.stage}: {text!r}")
        if price.is_preview:
            # A preview's id is a preview id; where the seed gives the id (000), it is that one.
            cut = strip_version(price.id)
            assert cut is not None and cut[1].startswith("-preview"), price.id
            assert price.preview_of and not set(price.preview_of) & {price.id, *price.aliases}
            if m.group(1).startswith("000"):
                assert price.id in text, price.id
    assert problems == []


def test_metered_rates_have_token_units_or_are_flagged(catalog: Catalog) -> None:
    for price in _all_prices(catalog):
        if price.billing == "media":
            assert not set(price.rates) & ENGINE_KINDS, price.id
            continue
        for kind in ENGINE_KINDS & set(price.rates):
            rate = price.rates[kind]
            assert rate.unit in TOKEN_UNITS or rate.unit in ("image", "second"), (price.id, kind)
        if price.billing == "characters":
            assert price.chars_per_token == Decimal(4) and price.approximation, price.id


@pytest.mark.parametrize(
    ("price_list", "model", "expected"),
    [
        ("gemini-api", "gemini-2.0-flash", None),
        ("gemini-api", "gemini-2.5-pro", None),
        ("vertex-ai", "gemini-3-pro", None),
        ("vertex-ai", "gemini-1.0-pro", 32000),
    ],
)
def test_limits_come_only_from_the_seeds(
    catalog: Catalog, price_list: str, model: str, expected: int | None
) -> None:
    # The seeds give no output caps; 1.0 Pro's 32k is a context window, not an output cap.
    assert catalog.max_output_tokens(model, price_list=price_list) is None
    price = catalog.resolve(model, price_list=price_list)
    assert price is not None
    if expected is not None:
        assert price.context_window == expected


def test_max_output_tokens_of_an_unknown_model_is_none(catalog: Catalog) -> None:
    assert catalog.max_output_tokens("no-such-model") is None


# -- model ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("  models/gemini-2.5-flash\n", "gemini-2.5-flash"),
        ("Models/Gemini-2.5-Flash", "gemini-2.5-flash"),
        ("tunedModels/my-tuned-model", "my-tuned-model"),
        (
            "projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001",
            "gemini-2.0-flash-001",
        ),
    ],
    ids=["plain", "models-prefix", "whitespace", "case", "tuned", "vertex-path"],
)
def test_normalize_model(raw: str, expected: str) -> None:
    assert normalize_model(raw) == expected


RESOLUTION = [
    # (price list, model as sent, catalog id or None), one list at a time. Across lists (the
    # default, then the fallback) see tests/test_pricing_resolution.py.
    # The Gemini API seed prices 2.5 Flash and Pro as previews only: on that list alone a bare id
    # gets the preview entry as the last resort (flagged; with the fallback list it gets Vertex's
    # GA price instead).
    ("gemini-api", "gemini-2.5-flash", "gemini-2.5-flash-preview-04-17"),
    ("gemini-api", "models/gemini-2.5-flash", "gemini-2.5-flash-preview-04-17"),
    ("gemini-api", "gemini-2.5-flash-preview-04-17", "gemini-2.5-flash-preview-04-17"),
    ("gemini-api", "gemini-2.5-flash-preview-05-20", "gemini-2.5-flash-preview-04-17"),
    ("gemini-api", "gemini-2.5-flash-001", "gemini-2.5-flash-preview-04-17"),
    ("gemini-api", "gemini-2.5-pro-preview-05-06", "gemini-2.5-pro-preview-05-06"),
    ("gemini-api", "gemini-2.5-pro-preview-03-25", "gemini-2.5-pro-preview-05-06"),
    ("gemini-api", "gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("gemini-api", "gemini-2.0-flash-lite", "gemini-2.0-flash-lite"),
    ("gemini-api", "gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"),
    ("gemini-api", "gemini-2.0-flash-lite-preview-02-05", "gemini-2.0-flash-lite"),
    ("gemini-api", "gemini-2.0-flash-live-001", "gemini-2.0-flash-live"),
    ("gemini-api", "gemini-1.5-flash-latest", "gemini-1.5-flash"),
    ("gemini-api", "gemini-1.5-flash-002", "gemini-1.5-flash"),
    ("gemini-api", "gemini-1.5-flash-8b", "gemini-1.5-flash-8b"),
    ("gemini-api", "gemini-1.5-flash-8b-001", "gemini-1.5-flash-8b"),
    ("gemini-api", "gemini-1.5-flash-8b-latest", "gemini-1.5-flash-8b"),
    ("gemini-api", "models/gemini-1.5-pro-latest", "gemini-1.5-pro"),
    ("gemini-api", "gemma-3-27b-it", "gemma-3"),
    ("gemini-api", "imagen-3.0-generate-002", "imagen-3"),
    ("gemini-api", "veo-2.0-generate-001", "veo-2"),
    ("gemini-api", "text-embedding-004", "text-embedding-004"),
    # Not on the Gemini API seed page, or experimental: unknown, hence unpriced.
    ("gemini-api", "gemini-2.5-pro-exp-03-25", None),
    ("gemini-api", "gemini-2.0-flash-exp", None),
    ("gemini-api", "gemini-3-pro-preview", None),
    ("gemini-api", "gemini-2.5-flash-lite", None),
    ("gemini-api", "gemini-embedding-001", None),
    ("gemini-api", "gemini-2.5-flash-preview-tts", None),
    ("gemini-api", "gpt-4o", None),
    ("gemini-api", "", None),
    ("vertex-ai", "gemini-3-pro-preview", "gemini-3-pro-preview"),
    ("vertex-ai", "gemini-3-pro-image-preview", "gemini-3-pro-image-preview"),
    ("vertex-ai", "gemini-3-pro", "gemini-3-pro-preview"),  # no GA price anywhere: flagged
    ("vertex-ai", "gemini-3-flash-preview", "gemini-3-flash-preview"),
    ("vertex-ai", "gemini-2.5-flash", "gemini-2.5-flash"),
    ("vertex-ai", "gemini-2.5-flash-image", "gemini-2.5-flash-image"),
    ("vertex-ai", "gemini-2.5-flash-image-preview", "gemini-2.5-flash-image"),
    ("vertex-ai", "gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
    ("vertex-ai", "gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    ("vertex-ai", "gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
    ("vertex-ai", "gemini-2.5-computer-use-preview-10-2025", "gemini-2.5-computer-use-preview"),
    ("vertex-ai", "gemini-live-2.5-flash-preview", "gemini-2.5-flash-live"),
    ("vertex-ai", "gemini-2.0-flash-live-preview-04-09", "gemini-2.0-flash-live-preview"),
    ("vertex-ai", "gemini-2.0-flash-preview-image-generation", "gemini-2.0-flash-image-generation"),
    ("vertex-ai", "gemini-1.0-pro-002", "gemini-1.0-pro"),
    ("vertex-ai", "gemini-embedding-001", "gemini-embedding"),
    ("vertex-ai", "text-embedding-005", "text-embedding"),
    ("vertex-ai", "text-multilingual-embedding-002", "text-embedding"),
    ("vertex-ai", "multimodalembedding@001", "multimodalembedding"),
    ("vertex-ai", "imagen-4.0-generate-001", "imagen-4"),
    ("vertex-ai", "imagen-4.0-ultra-generate-001", "imagen-4-ultra"),
    ("vertex-ai", "imagegeneration@006", "imagegeneration"),
    ("vertex-ai", "veo-3.1-generate-preview", "veo-3.1"),
    ("vertex-ai", "veo-3.0-fast-generate-001", "veo-3-fast"),
    ("vertex-ai", "lyria-002", "lyria-2"),
    ("vertex-ai", "gemma-3-27b-it", None),
    ("vertex-ai", "claude-sonnet-4-5", None),
]


@pytest.mark.parametrize(
    ("price_list", "model", "expected"),
    RESOLUTION,
    ids=[f"{pl}:{m or 'empty'}" for pl, m, _ in RESOLUTION],
)
def test_resolve(catalog: Catalog, price_list: str, model: str, expected: str | None) -> None:
    price = catalog.resolve(model, price_list=price_list)
    assert (price.id if price else None) == expected
    if price is not None:
        assert price.price_list == price_list


def test_resolve_uses_the_default_list(catalog: Catalog) -> None:
    price = catalog.resolve("gemini-2.0-flash")
    assert price is not None and price.price_list == "gemini-api"
    assert Catalog.load(default_list="vertex-ai").resolve("gemini-3-pro-preview") is not None


def test_unknown_price_list_is_an_error(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="unknown price list 'azure'"):
        catalog.resolve("gemini-2.0-flash", price_list="azure")
    with pytest.raises(ValueError, match="unknown price list 'azure'"):
        Catalog.load(default_list="azure")
    with pytest.raises(ValueError, match="unknown price list 'aws'"):
        Catalog.load(fallback_list="aws")


def test_fallback_list_prices_what_the_default_cannot() -> None:
    from proxy.pricing.cost import price_call
    from proxy.usage import Usage

    usage = Usage(prompt_tokens=1_000_000, output_tokens=1_000_000)
    strict = Catalog.load()
    with_fallback = Catalog.load(fallback_list="vertex-ai")
    # Gemini 3 Pro is not on the May 2025 Developer API page, only on the Vertex list.
    assert price_call(strict, "gemini-3-pro-preview", usage, status=200, at=None).priced is False
    alt = price_call(with_fallback, "gemini-3-pro-preview", usage, status=200, at=None)
    assert alt.priced and alt.price_list == "vertex-ai"
    # A model the default list prices stays on the default list.
    own = price_call(with_fallback, "gemini-2.0-flash", usage, status=200, at=None)
    assert own.price_list == "gemini-api"
    # An explicit list is never second-guessed.
    explicit = price_call(
        with_fallback, "gemini-3-pro-preview", usage, status=200, at=None, price_list="gemini-api"
    )
    assert explicit.priced is False


def test_baseline_prices_are_in_force_at_any_time(catalog: Catalog) -> None:
    # The seeds date their capture, not the start of a price: the baseline has no start.
    for at in (datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC), None):
        price = catalog.resolve("gemini-2.0-flash", at=at)
        assert price is not None and price.effective_from is None


# -- the override file ---------------------------------------------------------------------

OVERRIDES = """
models:
  # A newer price for a known model: calls before 2026-01-01 keep the seed price.
  - price_list: gemini-api
    id: gemini-2.0-flash
    name: Gemini 2.0 Flash
    effective_from: 2026-01-01
    section: "operator: contract 2026"
    rates:
      input: {usd: "0.08", source: "contract 2026 § 3"}
      output: {usd: "0.32", source: "contract 2026 § 3"}
  # A model the seeds do not price, with an alias and an output cap.
  - price_list: gemini-api
    id: gemini-2.5-flash-lite
    name: Gemini 2.5 Flash-Lite
    aliases: [gemini-flash-lite-latest]
    version: ops-1
    limits: {max_output_tokens: 65536, source: "operator"}
    rates:
      input: {usd: "0.10", source: "operator"}
      output: {usd: "0.40", source: "operator"}
  # Same id and date as the baseline: replaces (corrects) it.
  - price_list: vertex-ai
    id: gemini-2.0-flash-lite
    name: Gemini 2.0 Flash-Lite (corrected)
    rates:
      input: {usd: "0.07", source: "operator correction"}
      output: {usd: "0.28", source: "operator correction"}
discounts:
  - discount: "0.10"
    price_list: gemini-api
    source: "negotiated 10% on the Developer API"
  - discount: "0.25"
    price_list: gemini-api
    model: models/gemini-1.5-pro-latest
    effective_from: 2026-06-01
    source: "1.5 Pro promotion"
"""


@pytest.fixture
def overridden(tmp_path: Path) -> Catalog:
    path = tmp_path / "prices.yaml"
    path.write_text(OVERRIDES, encoding="utf-8")
    return Catalog.load(overrides=path)


@pytest.mark.parametrize(
    ("at", "version", "input_rate"),
    [
        (datetime(2025, 12, 31, 23, 59, tzinfo=UTC), "2025-05-07+discount=0.10", "0.10"),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), "override-2026-01-01+discount=0.10", "0.08"),
        (datetime(2027, 1, 1), "override-2026-01-01+discount=0.10", "0.08"),
        # 2025-12-31 20:00 at UTC-5 is 2026-01-01 01:00 UTC: the new price.
        (
            datetime(2025, 12, 31, 20, 0, tzinfo=timezone(timedelta(hours=-5))),
            "override-2026-01-01+discount=0.10",
            "0.08",
        ),
    ],
    ids=["day-before", "first-instant", "naive-is-utc", "other-timezone"],
)
def test_newer_price_applies_from_its_date(
    overridden: Catalog, at: datetime, version: str, input_rate: str
) -> None:
    price = overridden.resolve("gemini-2.0-flash-001", at=at)
    assert price is not None
    assert price.price_version == version
    assert price.rates["input"].usd == Decimal(input_rate)
    assert price.discount == Decimal("0.10")


def test_history_is_kept(overridden: Catalog) -> None:
    flash = [p for p in overridden.entries("gemini-api") if p.id == "gemini-2.0-flash"]
    assert [p.effective_from for p in flash] == [None, date(2026, 1, 1)]
    assert all(p.aliases == flash[0].aliases for p in flash)


def test_override_adds_a_model(overridden: Catalog) -> None:
    price = overridden.resolve("models/gemini-flash-lite-latest")
    assert price is not None and price.id == "gemini-2.5-flash-lite"
    assert price.price_version == "ops-1+discount=0.10"
    assert overridden.max_output_tokens("gemini-2.5-flash-lite") == 65536
    assert overridden.resolve("gemini-2.5-flash-lite", price_list="vertex-ai") is not None


def test_override_with_the_same_date_replaces(overridden: Catalog) -> None:
    prices = [p for p in overridden.entries("vertex-ai") if p.id == "gemini-2.0-flash-lite"]
    assert len(prices) == 1
    assert prices[0].version == "override"
    assert prices[0].rates["input"].usd == Decimal("0.07")


@pytest.mark.parametrize(
    ("model", "at", "discount"),
    [
        ("gemini-1.5-pro", datetime(2026, 5, 31, tzinfo=UTC), "0.10"),
        ("gemini-1.5-pro-002", datetime(2026, 6, 1, tzinfo=UTC), "0.25"),
        ("gemini-1.5-flash", datetime(2026, 6, 1, tzinfo=UTC), "0.10"),
    ],
    ids=["list-wide-before", "model-specific-wins", "other-model"],
)
def test_most_specific_discount_in_force_wins(
    overridden: Catalog, model: str, at: datetime, discount: str
) -> None:
    price = overridden.resolve(model, at=at)
    assert price is not None and price.discount == Decimal(discount)


def test_discounts_stay_in_their_list(overridden: Catalog) -> None:
    price = overridden.resolve("gemini-2.0-flash", price_list="vertex-ai")
    assert price is not None and price.discount == 0 and "+discount" not in price.price_version


def test_empty_override_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    assert Catalog.load(overrides=path).resolve("gemini-2.0-flash") is not None


def test_missing_override_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="price override file"):
        Catalog.load(overrides=tmp_path / "nope.yaml")


# -- bad data is refused with a clear message ------------------------------------------------

GOOD_LIST = """
price_list: test
version: v1
currency: USD
source: test
models:
  - id: m
    name: M
    section: s
    release: {stage: ga, source: s}
    rates:
      input: {usd: "1", source: "s:1"}
"""


def _list_with(rates: str, model_extra: str = "") -> str:
    return f"""
price_list: test
version: v1
currency: USD
source: test
models:
  - id: m
    name: M
    section: s
    release: {{stage: ga, source: s}}
{model_extra}    rates:
{rates}"""


BAD_LISTS = [
    ("float-rate", _list_with('      input: {usd: 0.15, source: "s"}\n'), "quoted decimal string"),
    ("int-rate", _list_with('      input: {usd: 1, source: "s"}\n'), "quoted decimal string"),
    ("not-a-number", _list_with('      input: {usd: "abc", source: "s"}\n'), "not a decimal"),
    ("negative", _list_with('      input: {usd: "-1", source: "s"}\n'), "non-negative"),
    ("no-source", _list_with('      input: {usd: "1"}\n'), "source"),
    ("unknown-kind", _list_with('      inptu: {usd: "1", source: "s"}\n'), "unknown kind"),
    ("typo-field", _list_with('      input: {usd: "1", lnog: "2", source: "s"}\n'), "lnog"),
    ("bad-unit", _list_with('      input: {usd: "1", unit: "1M words", source: "s"}\n'), "unit"),
    (
        "covers-on-output",
        _list_with('      output: {usd: "1", covers: [text], source: "s"}\n'),
        "covers",
    ),
    (
        "chars-without-ratio",
        _list_with('      input: {usd: "1", unit: 1k chars, source: "s"}\n'),
        "characters",
    ),
    (
        "metered-per-hour",
        _list_with('      input: {usd: "1", unit: 1M token-hours, source: "s"}\n'),
        "makes no sense",
    ),
    (
        "duplicate-key",
        _list_with('      input: {usd: "1", source: "s"}\n      input: {usd: "2", source: "s"}\n'),
        "duplicate key",
    ),
    (
        "batch-discount-100",
        _list_with(
            '      input: {usd: "1", source: "s"}\n',
            '    batch_discount: {fraction: "1", source: "s"}\n',
        ),
        "below 1",
    ),
    (
        "bad-threshold",
        _list_with(
            '      input: {usd: "1", source: "s"}\n',
            '    long_context: {threshold: 0, source: "s"}\n',
        ),
        "threshold",
    ),
    ("wrong-currency", GOOD_LIST.replace("USD", "EUR"), "currency"),
    ("not-yaml", "models: [unclosed", "not valid YAML"),
    (
        "same-model-twice",
        GOOD_LIST + "  - id: m\n    name: M\n    section: s\n    release: {stage: ga, source: s}\n"
        "    rates: {}\n",
        "listed twice",
    ),
    (
        "alias-clash",
        GOOD_LIST + "  - id: n\n    name: N\n    section: s\n    release: {stage: ga, source: s}\n"
        "    aliases: [m]\n    rates: {}\n",
        "names both",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [b[1:] for b in BAD_LISTS], ids=[b[0] for b in BAD_LISTS]
)
def test_bad_price_list_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Catalog.from_documents([("data/test.yaml", text)], default_list="test")


def test_good_minimal_list_loads() -> None:
    catalog = Catalog.from_documents([("data/test.yaml", GOOD_LIST)], default_list="test")
    assert catalog.resolve("m") is not None


def test_file_name_must_match_list_name() -> None:
    with pytest.raises(ValueError, match="file is 'other'"):
        Catalog.from_documents([("data/other.yaml", GOOD_LIST)], default_list="test")


BAD_OVERRIDES = [
    (
        "unknown-list",
        "models:\n  - {price_list: azure, id: x, name: X, rates: {}}\n",
        "unknown price list 'azure'",
    ),
    ("discount-100", 'discounts:\n  - {discount: "1", source: s}\n', "below 1"),
    ("discount-float", "discounts:\n  - {discount: 0.1, source: s}\n", "quoted decimal"),
    ("discount-no-source", 'discounts:\n  - {discount: "0.1"}\n', "source"),
    (
        "discount-unknown-model",
        'discounts:\n  - {discount: "0.1", model: gpt-4o, source: s}\n',
        "unknown model",
    ),
    (
        "discount-unknown-list",
        'discounts:\n  - {discount: "0.1", price_list: azure, source: s}\n',
        "unknown price list",
    ),
    ("typo", 'discount:\n  - {discount: "0.1", source: s}\n', "discount"),
    (
        "alias-taken",
        "models:\n  - {price_list: gemini-api, id: x, name: X, aliases: [gemini-2.0-flash],"
        " rates: {}}\n",
        "names both",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [b[1:] for b in BAD_OVERRIDES], ids=[b[0] for b in BAD_OVERRIDES]
)
def test_bad_override_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        Catalog.load(overrides=path)


def test_package_data_files_are_the_price_lists() -> None:
    assert sorted(p.stem for p in DATA.glob("*.yaml")) == ["gemini-api", "vertex-ai"]


def test_the_documented_override_example_loads(tmp_path: Path) -> None:
    """docs/pricing.md's override example is a working file."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "pricing.md").read_text("utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 1
    path = tmp_path / "prices.yaml"
    path.write_text(blocks[0], encoding="utf-8")
    catalog = Catalog.load(overrides=path)
    lite = catalog.resolve("gemini-flash-lite-latest", at=datetime(2026, 2, 1, tzinfo=UTC))
    assert lite is not None and lite.price_version == "override+discount=0.10"
    assert catalog.max_output_tokens("gemini-2.5-flash-lite") == 65536
    flash = catalog.resolve("gemini-2.0-flash", at=datetime(2026, 3, 1, tzinfo=UTC))
    assert flash is not None and flash.price_version == "contract-2026+discount=0.10"
    pro = catalog.resolve("gemini-1.5-pro", at=datetime(2025, 6, 1, tzinfo=UTC))
    assert pro is not None and pro.discount == Decimal("0.25")
    gemma = catalog.resolve("gemma-3-27b-it")
    assert gemma is not None and gemma.rates["input"].usd == 0
