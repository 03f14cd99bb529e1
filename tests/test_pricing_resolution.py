"""Which price a call gets for the id an app names (docs/pricing.md, section 2): the entry and the
exact cost for each id, every amount traced to its seed line; the warnings; `prices resolve` in
the CLI and the admin API; the warning metric and log line; the id table in docs/pricing.md."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from proxy.cli import main
from proxy.pricing.catalog import Catalog
from proxy.pricing.cost import price_call
from proxy.pricing.report import explain, format_id_table, format_resolution
from proxy.pricing.resolution import FALLBACK_LIST, PREVIEW_PRICE_FOR_GA_ID
from proxy.settings import Settings
from proxy.usage import Usage
from tests.conftest import RunningProxy
from tests.fakes.gemini import text_reply, usage_metadata
from tests.test_metrics import sample, wait_for
from tests.test_pricing_catalog import GOOD_LIST, SEEDS, _appears

ROOT = Path(__file__).resolve().parents[1]
AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
ADMIN = {"authorization": "Bearer admin-token-for-tests"}
SEED_FILES = {"000": "000_601105fe334b0f1f.txt", "004": "004_8191c03ed1050dc1.txt"}
# The issue's call: 1,000 prompt tokens, 200 visible and 800 thinking tokens.
USAGE = Usage(prompt_tokens=1_000, output_tokens=200, thinking_tokens=800)

# The catalogs a proxy builds (proxy/services.py) for three configurations.
CONFIGS = {
    "shipped": ("gemini-api", "vertex-ai"),  # the settings' defaults (checked below)
    "no-fallback": ("gemini-api", None),  # GEMINI_METER_PRICE_LIST_FALLBACK=""
    "vertex-first": ("vertex-ai", "gemini-api"),
}
_CATALOGS = {
    name: Catalog.load(default, None, fallback) for name, (default, fallback) in CONFIGS.items()
}

# (tokens, USD per 1M tokens, "seed:line" the rate is printed on)
Term = tuple[int, str, str]


@dataclass(frozen=True)
class Row:
    config: str
    model: str  # as the app sends it
    entry: str | None  # "<list>/<catalog id>"; None: unpriced
    stage: str | None
    warnings: tuple[str, ...]
    terms: tuple[Term, ...]  # the cost, line by line

    @property
    def cost(self) -> Decimal | None:
        if self.entry is None:
            return None
        return sum((Decimal(n) * Decimal(r) / 1_000_000 for n, r, _ in self.terms), Decimal(0))


FB, PV = FALLBACK_LIST, PREVIEW_PRICE_FOR_GA_ID
# Vertex's GA 2.5 Flash: input 0.30 (004:93), output with reasoning 2.50 (004:95).
VERTEX_25_FLASH = ((1_000, "0.30", "004:93"), (200, "2.50", "004:95"), (800, "2.50", "004:95"))
# The Gemini API's 2.5 Flash preview: input 0.15 (000:25); the call thought, so all its output is
# at the thinking rate 3.5 (000:26, rule 4).
API_25_FLASH_PREVIEW = ((1_000, "0.15", "000:25"), (200, "3.5", "000:26"), (800, "3.5", "000:26"))
VERTEX_25_PRO = ((1_000, "1.25", "004:83"), (200, "10", "004:84"), (800, "10", "004:84"))
API_25_PRO_PREVIEW = ((1_000, "1.25", "000:42"), (200, "10", "000:43"), (800, "10", "000:43"))
API_20_FLASH = ((1_000, "0.10", "000:56"), (200, "0.40", "000:57"), (800, "0.40", "000:57"))
VERTEX_3_PRO = ((1_000, "2", "004:57"), (200, "12", "004:58"), (800, "12", "004:58"))

ROWS = [
    # -- the shipped settings: the Gemini API list, then Vertex AI's --------------------------
    # GA ids of 2.5 Flash: the Gemini API page prices only the preview, Vertex the GA model.
    Row("shipped", "gemini-2.5-flash", "vertex-ai/gemini-2.5-flash", "ga", (FB,), VERTEX_25_FLASH),
    Row("shipped", "models/gemini-2.5-flash", "vertex-ai/gemini-2.5-flash", "ga", (FB,),
        VERTEX_25_FLASH),
    Row("shipped", "gemini-2.5-flash-001", "vertex-ai/gemini-2.5-flash", "ga", (FB,),
        VERTEX_25_FLASH),
    Row("shipped", "gemini-2.5-flash-latest", "vertex-ai/gemini-2.5-flash", "ga", (FB,),
        VERTEX_25_FLASH),
    Row("shipped", "projects/p/locations/us-central1/publishers/google/models/Gemini-2.5-Flash@001",
        "vertex-ai/gemini-2.5-flash", "ga", (FB,), VERTEX_25_FLASH),
    # Preview ids of 2.5 Flash: the preview price seed 000 gives (its id, line 17).
    Row("shipped", "gemini-2.5-flash-preview-04-17", "gemini-api/gemini-2.5-flash-preview-04-17",
        "preview", (), API_25_FLASH_PREVIEW),
    Row("shipped", "models/gemini-2.5-flash-preview-05-20",
        "gemini-api/gemini-2.5-flash-preview-04-17", "preview", (), API_25_FLASH_PREVIEW),
    Row("shipped", "gemini-2.5-flash-image-preview", "vertex-ai/gemini-2.5-flash-image", "ga",
        (FB,), VERTEX_25_FLASH),  # a preview id with no preview price anywhere: its GA price
    Row("shipped", "gemini-2.5-pro", "vertex-ai/gemini-2.5-pro", "ga", (FB,), VERTEX_25_PRO),
    Row("shipped", "gemini-2.5-pro-preview-05-06", "gemini-api/gemini-2.5-pro-preview-05-06",
        "preview", (), API_25_PRO_PREVIEW),
    Row("shipped", "gemini-2.0-flash", "gemini-api/gemini-2.0-flash", "ga", (), API_20_FLASH),
    Row("shipped", "gemini-2.0-flash-001", "gemini-api/gemini-2.0-flash", "ga", (), API_20_FLASH),
    Row("shipped", "gemini-2.0-flash-lite-001", "gemini-api/gemini-2.0-flash-lite", "ga", (),
        ((1_000, "0.075", "000:74"), (200, "0.30", "000:75"), (800, "0.30", "000:75"))),
    Row("shipped", "gemini-1.5-flash-8b-latest", "gemini-api/gemini-1.5-flash-8b", "ga", (),
        ((1_000, "0.0375", "000:144"), (200, "0.15", "000:145"), (800, "0.15", "000:145"))),
    # Gemini 3: only previews, only on Vertex.
    Row("shipped", "gemini-3-pro-preview", "vertex-ai/gemini-3-pro-preview", "preview", (FB,),
        VERTEX_3_PRO),
    Row("shipped", "gemini-3-pro", "vertex-ai/gemini-3-pro-preview", "preview", (PV, FB),
        VERTEX_3_PRO),  # no seed prices it as GA: the preview price, flagged
    Row("shipped", "gemini-3-flash-preview", "vertex-ai/gemini-3-flash-preview", "preview", (FB,),
        ((1_000, "0.5", "004:61"), (200, "3", "004:63"), (800, "3", "004:63"))),
    Row("shipped", "gemini-2.5-flash-lite", "vertex-ai/gemini-2.5-flash-lite", "ga", (FB,),
        ((1_000, "0.1", "004:111"), (200, "0.4", "004:113"), (800, "0.4", "004:113"))),
    Row("shipped", "gemini-2.5-flash-lite-preview-06-17", "vertex-ai/gemini-2.5-flash-lite", "ga",
        (FB,), ((1_000, "0.1", "004:111"), (200, "0.4", "004:113"), (800, "0.4", "004:113"))),
    Row("shipped", "gemini-2.5-computer-use-preview-10-2025",
        "vertex-ai/gemini-2.5-computer-use-preview", "preview", (FB,),
        ((1_000, "1.25", "004:87"), (200, "10", "004:88"), (800, "10", "004:88"))),
    # Unknown: unpriced, never $0.
    Row("shipped", "gemini-2.5-pro-exp-03-25", None, None, (), ()),
    Row("shipped", "gemini-2.5-flash-preview-tts", None, None, (), ()),
    Row("shipped", "tunedModels/my-model", None, None, (), ()),
    Row("shipped", "gpt-4o", None, None, (), ()),
    # -- no fallback list: the Gemini API page alone -------------------------------------------
    # The GA id has only a preview price there: priced from it, flagged.
    Row("no-fallback", "gemini-2.5-flash", "gemini-api/gemini-2.5-flash-preview-04-17", "preview",
        (PV,), API_25_FLASH_PREVIEW),
    Row("no-fallback", "gemini-2.5-pro-001", "gemini-api/gemini-2.5-pro-preview-05-06", "preview",
        (PV,), API_25_PRO_PREVIEW),
    Row("no-fallback", "gemini-2.5-flash-preview-04-17",
        "gemini-api/gemini-2.5-flash-preview-04-17", "preview", (), API_25_FLASH_PREVIEW),
    Row("no-fallback", "gemini-3-pro-preview", None, None, (), ()),
    # -- Vertex AI first, the Gemini API as the fallback ---------------------------------------
    Row("vertex-first", "gemini-2.5-flash", "vertex-ai/gemini-2.5-flash", "ga", (),
        VERTEX_25_FLASH),
    Row("vertex-first", "gemini-2.0-flash", "vertex-ai/gemini-2.0-flash", "ga", (),
        ((1_000, "0.15", "004:152"), (200, "0.60", "004:154"), (800, "0.60", "004:154"))),
    # The preview id seed 000 gives beats Vertex's GA price of the same model.
    Row("vertex-first", "gemini-2.5-flash-preview-04-17",
        "gemini-api/gemini-2.5-flash-preview-04-17", "preview", (FB,), API_25_FLASH_PREVIEW),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.config}:{r.model}" for r in ROWS])
def test_the_id_gets_its_entry_and_exact_cost(row: Row) -> None:
    catalog = _CATALOGS[row.config]
    pc = price_call(catalog, row.model, USAGE, status=200, at=AT)
    assert pc.cost == row.cost
    assert pc.priced is (row.entry is not None)
    assert pc.warnings == row.warnings
    res = catalog.resolution(row.model, at=AT)
    if row.entry is None:
        assert res.price is None and pc.model is None
        assert pc.reason is not None and "unknown model" in pc.reason
        return
    assert res.price is not None
    assert f"{pc.price_list}/{pc.model}" == row.entry == f"{res.price_list}/{res.price.id}"
    assert res.price.stage == row.stage
    assert pc.detail is not None and pc.detail.usd == row.cost  # exact: no rounding needed


def test_every_amount_is_on_the_seed_line_the_table_names() -> None:
    if not SEEDS.is_dir():
        pytest.skip("the seeds are not beside the repository")
    seeds = {k: (SEEDS / name).read_text("utf-8").splitlines() for k, name in SEED_FILES.items()}
    for row in ROWS:
        for _, rate, where in row.terms:
            seed, line = where.split(":")
            assert _appears(Decimal(rate), seeds[seed][int(line) - 1]), (row.model, rate, where)


def test_the_issue_numbers() -> None:
    """The issue's call was $0.00365 at the preview rates; the GA id now costs $0.0028."""
    shipped = _CATALOGS["shipped"]
    ga = price_call(shipped, "gemini-2.5-flash", USAGE, status=200, at=AT)
    preview = price_call(shipped, "gemini-2.5-flash-preview-04-17", USAGE, status=200, at=AT)
    assert (ga.cost, preview.cost) == (Decimal("0.0028"), Decimal("0.00365"))


def test_the_shipped_config_is_the_settings_default() -> None:
    fields = Settings.model_fields
    assert (fields["price_list"].default, fields["price_list_fallback"].default) == CONFIGS[
        "shipped"
    ]


# -- the why -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "steps"),
    [
        (
            "Models/Gemini-2.5-Flash-001",
            [
                "'Models/Gemini-2.5-Flash-001' is read as 'gemini-2.5-flash-001' "
                "(path 'Models/' dropped, lower-cased)",
                "version suffix '-001' dropped: 'gemini-2.5-flash-001' -> 'gemini-2.5-flash'",
                "'gemini-2.5-flash' is the id of vertex-ai/gemini-2.5-flash",
                "a GA id: priced at the GA price (seeds/004_8191c03ed1050dc1.txt:91,92",
                "the default list gemini-api has no GA price for it (its preview entry "
                "gemini-api/gemini-2.5-flash-preview-04-17 answers only when no list has a GA "
                "price): priced on the fallback list vertex-ai",
            ],
        ),
        (
            "gemini-2.5-flash-preview-05-20",
            [
                "preview suffix '-preview-05-20' dropped",
                "gemini-api/gemini-2.5-flash-preview-04-17 is its seed's preview of "
                "'gemini-2.5-flash'",
                "a preview id: priced at the preview price its seed gives "
                "(seeds/000_601105fe334b0f1f.txt:15,17,21",
            ],
        ),
        ("gemini-live-2.5-flash", ["is an alias of vertex-ai/gemini-2.5-flash-live"]),
        ("gemini-3-pro", ["a GA id no list prices as GA: priced from the preview", "review this"]),
        ("gemini-9", ["no entry of gemini-api or vertex-ai answers for 'gemini-9'"]),
    ],
    ids=["prefix-case-suffix-fallback", "preview-of", "alias", "preview-for-ga", "unknown"],
)  # fmt: skip
def test_the_resolution_says_why(model: str, steps: list[str]) -> None:
    why = "\n".join(_CATALOGS["shipped"].resolution(model, at=AT).why)
    for step in steps:
        assert step in why


# -- a rate the default list's entry lacks --------------------------------------------------------


def test_a_rate_the_preview_lacks_is_priced_on_the_fallback_and_flagged() -> None:
    # 000 line 27: the 2.5 Flash preview's cache price is "Sắp ra mắt!" (coming soon).
    usage = Usage(prompt_tokens=1_000, cached_tokens=400, output_tokens=200, thinking_tokens=800)
    shipped = price_call(
        _CATALOGS["shipped"], "gemini-2.5-flash-preview-04-17", usage, status=200, at=AT
    )
    # Vertex's GA 2.5 Flash: 600 x 0.30 (004:93), 400 cached x 0.030 (004:93), 1,000 x 2.50 (004:95)
    assert (
        shipped.cost
        == (600 * Decimal("0.30") + 400 * Decimal("0.030") + 1_000 * Decimal("2.50")) / 1_000_000
    )
    assert (shipped.price_list, shipped.model, shipped.warnings) == (
        "vertex-ai",
        "gemini-2.5-flash",
        (FB,),
    )
    assert shipped.reason is not None and "no cached_input rate" in shipped.reason
    alone = price_call(
        _CATALOGS["no-fallback"], "gemini-2.5-flash-preview-04-17", usage, status=200, at=AT
    )
    assert (alone.cost, alone.priced) == (None, False)
    answer = explain(_CATALOGS["shipped"], "gemini-2.5-flash-preview-04-17", at=AT)
    assert "cache hits" in answer["cannot_price"]
    assert answer["cannot_price_goes_to"] == "vertex-ai/gemini-2.5-flash"


def test_text_models_have_no_image_rate() -> None:
    """004 prints image output in the 2.5 Flash table; it is the image model's (line 96)."""
    catalog = _CATALOGS["shipped"]
    text = catalog.resolve("gemini-2.5-flash", at=AT)
    image = catalog.resolve("gemini-2.5-flash-image", at=AT)
    assert text is not None and "output_image" not in text.rates
    assert image is not None and image.rates["output_image"].usd == Decimal("30")
    usage = Usage(prompt_tokens=20, output_tokens=1_290, output_image_tokens=1_290)
    assert price_call(catalog, "gemini-2.5-flash", usage, status=200, at=AT).priced is False
    # 20 x 0.30 + 1,290 x 30 (004:93, 96)
    assert price_call(catalog, "gemini-2.5-flash-image", usage, status=200, at=AT).cost == Decimal(
        "0.038706"
    )


# -- the override file ------------------------------------------------------------------------

GA_OVERRIDE = """
models:
  # Google's GA price of 2.5 Flash on the Developer API (an operator's transcription).
  - price_list: gemini-api
    id: gemini-2.5-flash
    name: Gemini 2.5 Flash
    effective_from: 2026-02-01
    section: "ai.google.dev pricing, 2026-02-01"
    rates:
      input: {usd: "0.30", covers: [text, image, video], source: "ai.google.dev"}
      input_audio: {usd: "1", source: "ai.google.dev"}
      output: {usd: "2.50", source: "ai.google.dev"}
  # A preview the seeds do not have.
  - price_list: gemini-api
    id: gemini-3-pro-preview
    name: Gemini 3 Pro (preview), Developer API
    release: {stage: preview, preview_of: [gemini-3-pro], source: "ai.google.dev"}
    rates:
      input: {usd: "2", source: "ai.google.dev"}
      output: {usd: "12", source: "ai.google.dev"}
discounts:
  - discount: "0.10"
    model: gemini-2.5-flash
    source: "2.5 Flash, any list"
"""


@pytest.fixture
def overridden(tmp_path: Path) -> Catalog:
    path = tmp_path / "prices.yaml"
    path.write_text(GA_OVERRIDE, encoding="utf-8")
    return Catalog.load(overrides=path, fallback_list="vertex-ai")


@pytest.mark.parametrize(
    ("model", "at", "entry", "warnings"),
    [
        # Before the operator's GA price starts: Vertex's GA price, as without it.
        ("gemini-2.5-flash", datetime(2026, 1, 31), "vertex-ai/gemini-2.5-flash", (FB,)),
        # From its date: the default list has a GA price, so the GA id stays there.
        ("gemini-2.5-flash", datetime(2026, 2, 1), "gemini-api/gemini-2.5-flash", ()),
        ("gemini-2.5-flash-001", datetime(2026, 2, 1), "gemini-api/gemini-2.5-flash", ()),
        # The preview ids keep the preview price.
        ("gemini-2.5-flash-preview-04-17", datetime(2026, 2, 1, tzinfo=UTC),
         "gemini-api/gemini-2.5-flash-preview-04-17", ()),
        ("gemini-2.5-flash-preview-05-20", datetime(2026, 2, 1, tzinfo=UTC),
         "gemini-api/gemini-2.5-flash-preview-04-17", ()),
        # The operator's preview on the default list beats Vertex's.
        ("gemini-3-pro-preview", AT, "gemini-api/gemini-3-pro-preview", ()),
        ("gemini-3-pro-preview-11-2025", AT, "gemini-api/gemini-3-pro-preview", ()),
        ("gemini-3-pro", AT, "gemini-api/gemini-3-pro-preview", (PV,)),
    ],
)  # fmt: skip
def test_override_prices_follow_the_rule(
    overridden: Catalog, model: str, at: datetime, entry: str, warnings: tuple[str, ...]
) -> None:
    res = overridden.resolution(model, at=at)
    assert res.price is not None
    assert (f"{res.price_list}/{res.price.id}", res.warnings) == (entry, warnings)


def test_a_discount_names_a_model_on_every_list(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text('discounts:\n  - {discount: "0.10", model: gemini-2.5-flash, source: s}\n')
    catalog = Catalog.load(overrides=path, fallback_list="vertex-ai")
    # The entry "gemini-2.5-flash" names on each list: Vertex's GA entry; on the Gemini API list,
    # which has no GA price for it, the preview (its last resort).
    for model, price_list in [
        ("gemini-2.5-flash", "vertex-ai"),
        ("gemini-2.5-flash-preview-04-17", "gemini-api"),
    ]:
        price = catalog.resolve(model, at=AT, price_list=price_list)
        assert price is not None and price.discount == Decimal("0.10"), model
    other = catalog.resolve("gemini-2.0-flash", at=AT)
    assert other is not None and other.discount == 0


def test_a_discount_follows_a_ga_override(overridden: Catalog) -> None:
    # With a GA price of its own on the Gemini API list, the name is that entry there: the
    # preview ids are not discounted.
    ga = overridden.resolve("gemini-2.5-flash", at=datetime(2026, 2, 1, tzinfo=UTC))
    preview = overridden.resolve("gemini-2.5-flash-preview-04-17", at=AT)
    assert ga is not None and (ga.price_list, ga.discount) == ("gemini-api", Decimal("0.10"))
    assert preview is not None and preview.discount == 0


@pytest.mark.parametrize(
    ("release", "message"),
    [
        ("{stage: preview, source: s}", "a preview names the ids it previews"),
        ("{stage: ga, preview_of: [x], source: s}", "only a preview has 'preview_of'"),
        ("{stage: preview, preview_of: [m], source: s}", "cannot be a preview of its own id"),
        ("{stage: beta, source: s}", "stage"),
        ("{stage: ga}", "source"),
    ],
    ids=["preview-of-nothing", "ga-preview-of", "preview-of-itself", "unknown-stage", "no-source"],
)
def test_bad_release_is_refused(release: str, message: str) -> None:
    text = GOOD_LIST.replace("release: {stage: ga, source: s}", f"release: {release}")
    assert text != GOOD_LIST
    with pytest.raises(ValueError, match=message):
        Catalog.from_documents([("data/test.yaml", text)], default_list="test")


def test_a_package_entry_needs_a_release() -> None:
    text = GOOD_LIST.replace("    release: {stage: ga, source: s}\n", "")
    assert text != GOOD_LIST
    with pytest.raises(ValueError, match="release"):
        Catalog.from_documents([("data/test.yaml", text)], default_list="test")


# -- the id table in docs/pricing.md ------------------------------------------------------------


def test_the_documented_id_table_is_the_catalogs() -> None:
    doc = (ROOT / "docs" / "pricing.md").read_text("utf-8")
    m = re.search(r"<!-- ids:begin -->\n(.*?)<!-- ids:end -->", doc, flags=re.DOTALL)
    assert m is not None, "docs/pricing.md has no id table"
    expected = format_id_table(_CATALOGS["shipped"], at=AT)
    assert m[1] == expected, "regenerate it with: gemini-meter prices resolve --all"
    # Every name the catalog answers for is a row, once.
    rows = re.findall(r"^\| `([^`]+)` \|", m[1], flags=re.MULTILINE)
    assert rows == _CATALOGS["shipped"].names()


# -- the CLI and the admin API give the same answer ---------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it: its own process, no GEMINI_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    return subprocess.run(
        [sys.executable, "-m", "proxy", "prices", "resolve", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """``gemini-meter prices resolve ...`` in this process (a new process costs seconds)."""
    for name in [k for k in os.environ if k.startswith("GEMINI_")]:
        monkeypatch.delenv(name)

    def run(*args: str) -> tuple[int, str]:
        code = main(["prices", "resolve", *args])
        return code, capsys.readouterr().out

    return run


def test_cli_and_admin_api_answer_alike(
    proxy: RunningProxy, run_cli: Callable[..., tuple[int, str]]
) -> None:
    model = "models/gemini-2.5-flash-001"
    cli = _cli(model, "--at", "2026-01-15", "--format", "json")
    assert cli.returncode == 0, cli.stderr
    api = httpx.get(
        f"{proxy.url}/admin/prices/resolve",
        params={"model": model, "at": "2026-01-15"},
        headers=ADMIN,
    )
    assert api.status_code == 200
    assert api.json() == orjson.loads(cli.stdout)
    answer = api.json()
    assert (answer["price_list"], answer["entry"], answer["stage"]) == (
        "vertex-ai", "gemini-2.5-flash", "ga",
    )  # fmt: skip
    assert answer["version"] == "seed-004" and answer["warnings"] == [FB]
    [output] = [r for r in answer["rates"] if r["kind"] == "output"]
    assert output["usd"] == "2.5"
    assert output["source"].startswith("seeds/004_8191c03ed1050dc1.txt:95")
    code, text = run_cli(model, "--at", "2026-01-15")
    assert code == 0 and text == format_resolution(answer)
    assert "price list  vertex-ai (fallback list), version seed-004" in text
    assert "version suffix '-001' dropped" in text


def test_cli_unpriced_and_table(run_cli: Callable[..., tuple[int, str]]) -> None:
    code, text = run_cli("gpt-4o")
    assert code == 1 and text.startswith("UNPRICED: gpt-4o")
    code, text = run_cli("--all", "--at", "2026-01-15")
    assert code == 0 and text == format_id_table(_CATALOGS["shipped"], at=AT)
    assert run_cli()[0] == 2  # neither an id nor --all


@pytest.mark.parametrize(
    ("params", "headers", "status", "param"),
    [
        ({"model": "gemini-2.5-flash"}, {}, 401, None),
        ({"model": "gemini-2.5-flash", "at": "yesterday"}, ADMIN, 400, "at"),
        ({"model": "gemini-2.5-flash", "price_list": "azure"}, ADMIN, 400, "price_list"),
        ({}, ADMIN, 400, "query.model"),
    ],
    ids=["no-token", "bad-at", "unknown-list", "no-model"],
)
def test_admin_resolve_refuses_bad_requests(
    proxy: RunningProxy,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    param: str | None,
) -> None:
    r = httpx.get(f"{proxy.url}/admin/prices/resolve", params=params, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["param"] == param


def test_admin_resolve_one_list_and_unpriced(proxy: RunningProxy) -> None:
    url = f"{proxy.url}/admin/prices/resolve"
    alone = httpx.get(
        url, params={"model": "gemini-2.5-flash", "price_list": "gemini-api"}, headers=ADMIN
    )
    assert alone.status_code == 200
    assert (alone.json()["entry"], alone.json()["warnings"]) == (
        "gemini-2.5-flash-preview-04-17",
        [PV],
    )
    unknown = httpx.get(url, params={"model": "gpt-4o"}, headers=ADMIN).json()
    assert unknown["priced"] is False and "price_list" not in unknown


# -- the meter: ledger row, warning metric, one log line ------------------------------------------


def _warnings(model: str, price_list: str, reason: str) -> float:
    return sample(
        "gemini_meter_price_warnings_total", model=model, price_list=price_list, reason=reason
    )


def _generate(p: RunningProxy, model: str) -> httpx.Response:
    p.fake.enqueue(text_reply("ok", usage_metadata(1_000, 200, thoughts=800)))
    return httpx.post(
        f"{p.url}/v1beta/models/{model}:generateContent",
        headers={"x-goog-api-key": p.key},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )


def test_meter_prices_the_ga_id_at_the_ga_price_and_warns_once(
    proxy: RunningProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gemini_meter.pricing")
    before = _warnings("gemini-2.5-flash", "vertex-ai", FB)
    quiet = _warnings("gemini-2.0-flash", "gemini-api", FB)
    for model in ("gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.0-flash"):
        assert _generate(proxy, model).status_code == 200
    rows = proxy.rows(3)
    assert [(r["model"], r["price_list"], r["price_version"], r["cost_usd"]) for r in rows] == [
        ("gemini-2.5-flash", "vertex-ai", "seed-004", Decimal("0.0028")),  # ROWS: 004:93, 95
        ("gemini-2.5-flash", "vertex-ai", "seed-004", Decimal("0.0028")),
        ("gemini-2.0-flash", "gemini-api", "2025-05-07", Decimal("0.0005")),  # 000:56, 57
    ]
    wait_for(lambda: _warnings("gemini-2.5-flash", "vertex-ai", FB) == before + 2, what="warnings")
    assert _warnings("gemini-2.0-flash", "gemini-api", FB) == quiet
    logged = [r.getMessage() for r in caplog.records if r.name == "gemini_meter.pricing"]
    assert len(logged) == 1  # once per model and reason
    assert "fallback_list" in logged[0] and "'gemini-2.5-flash'" in logged[0]
    assert "vertex-ai/gemini-2.5-flash" in logged[0] and "prices resolve" in logged[0]


def test_meter_warns_of_a_preview_price_for_a_ga_id(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gemini_meter.pricing")
    p = start_proxy(sqlite_url, price_list_fallback="")
    before = _warnings("gemini-2.5-flash", "gemini-api", PV)
    assert _generate(p, "gemini-2.5-flash").status_code == 200
    [row] = p.rows()
    assert (row["price_list"], row["cost_usd"]) == ("gemini-api", Decimal("0.00365"))  # 000:25, 26
    wait_for(lambda: _warnings("gemini-2.5-flash", "gemini-api", PV) == before + 1, what="warning")
    [line] = [r.getMessage() for r in caplog.records if r.name == "gemini_meter.pricing"]
    assert PV in line and "review this price" in line
