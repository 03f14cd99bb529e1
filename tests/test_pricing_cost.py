"""The cost engine, on worked examples computed by hand from the seeds (docs/pricing.md).

Each expected amount is written out as the sum it comes from: tokens x USD per 1M tokens / 1M.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.pricing.catalog import Catalog
from proxy.pricing.cost import (
    Cost,
    MissingRate,
    PricingError,
    UnmeterableUsage,
    compute_cost,
    price_call,
)
from proxy.usage import Usage
from tests.fakes.gemini import FIXTURES

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def per_million(*terms: tuple[int, str]) -> Decimal:
    """Sum of tokens x rate / 1,000,000, exactly: how the examples in docs/pricing.md read."""
    return sum((Decimal(n) * Decimal(r) / 1_000_000 for n, r in terms), Decimal(0))


@dataclass(frozen=True)
class Case:
    id: str
    price_list: str
    model: str
    usage: Usage
    expected: Decimal
    batch: bool = False
    long_context: bool = False
    lines: dict[str, int] = field(default_factory=dict)  # kind -> tokens, where worth checking


CASES = [
    # ---------------------------------------------------------------- Gemini API (seed 000)
    Case(
        "api/2.0-flash/text",
        "gemini-api",
        "gemini-2.0-flash",
        Usage(prompt_tokens=1_000, output_tokens=500),
        per_million((1_000, "0.10"), (500, "0.40")),  # 0.0003
    ),
    Case(
        "api/2.0-flash/mixed-audio-prompt",
        "gemini-api",
        "models/gemini-2.0-flash-001",
        Usage(prompt_tokens=10_000, audio_prompt_tokens=4_000, output_tokens=1_000),
        per_million((6_000, "0.10"), (4_000, "0.70"), (1_000, "0.40")),  # 0.0038
        lines={"input": 6_000, "input_audio": 4_000, "output": 1_000},
    ),
    Case(
        "api/2.0-flash/cached-text",
        "gemini-api",
        "gemini-2.0-flash",
        Usage(prompt_tokens=100_000, cached_tokens=80_000, output_tokens=2_000),
        per_million((20_000, "0.10"), (80_000, "0.025"), (2_000, "0.40")),  # 0.0048
        lines={"input": 20_000, "cached_input": 80_000},
    ),
    Case(
        "api/2.0-flash/cached-audio",
        "gemini-api",
        "gemini-2.0-flash",
        Usage(
            prompt_tokens=5_230,
            audio_prompt_tokens=4_800,
            cached_tokens=4_096,
            cached_audio_tokens=4_096,
            output_tokens=11,
        ),
        per_million((430, "0.10"), (704, "0.70"), (4_096, "0.175"), (11, "0.40")),
        lines={"input": 430, "input_audio": 704, "cached_input_audio": 4_096},
    ),
    Case(
        "api/2.0-flash/tool-use-as-input",
        "gemini-api",
        "gemini-2.0-flash",
        Usage(prompt_tokens=1_000, tool_use_prompt_tokens=2_000, output_tokens=100),
        per_million((1_000, "0.10"), (2_000, "0.10"), (100, "0.40")),  # 0.00034
        lines={"tool_use_input": 2_000},
    ),
    Case(
        "api/2.0-flash-lite/1M-each",
        "gemini-api",
        "gemini-2.0-flash-lite",
        Usage(prompt_tokens=1_000_000, audio_prompt_tokens=1_000, output_tokens=1_000_000),
        Decimal("0.375"),  # one input rate for every modality: 0.075 + 0.30
    ),
    Case(
        "api/2.5-flash-preview/no-thinking",
        "gemini-api",
        "gemini-2.5-flash-preview-05-20",
        Usage(prompt_tokens=2_000, output_tokens=1_000),
        per_million((2_000, "0.15"), (1_000, "0.6")),  # 0.0009
    ),
    Case(
        "api/2.5-flash-preview/thinking-rate-for-all-output",
        "gemini-api",
        "gemini-2.5-flash-preview-04-17",
        Usage(prompt_tokens=2_000, output_tokens=1_000, thinking_tokens=3_000),
        per_million((2_000, "0.15"), (1_000, "3.5"), (3_000, "3.5")),  # 0.0143
        lines={"output": 1_000, "thinking": 3_000},
    ),
    Case(
        "api/2.5-flash-preview/audio",
        "gemini-api",
        "gemini-2.5-flash-preview-04-17",
        Usage(prompt_tokens=1_000, audio_prompt_tokens=1_000, output_tokens=100),
        per_million((1_000, "1"), (100, "0.6")),  # 0.00106
    ),
    Case(
        "api/2.5-pro/threshold-minus-1",
        "gemini-api",
        "gemini-2.5-pro-preview-05-06",
        Usage(prompt_tokens=199_999, output_tokens=1_000),
        per_million((199_999, "1.25"), (1_000, "10")),  # 0.25999875
    ),
    Case(
        "api/2.5-pro/at-threshold",
        "gemini-api",
        "gemini-2.5-pro-preview-05-06",
        Usage(prompt_tokens=200_000, output_tokens=1_000),
        per_million((200_000, "1.25"), (1_000, "10")),  # 0.26
    ),
    Case(
        "api/2.5-pro/threshold-plus-1",
        "gemini-api",
        "gemini-2.5-pro-preview-05-06",
        Usage(prompt_tokens=200_001, output_tokens=1_000),
        per_million((200_001, "2.5"), (1_000, "15")),  # 0.5150025
        long_context=True,
    ),
    Case(
        "api/2.5-pro/cached-plus-thinking",
        "gemini-api",
        "gemini-2.5-pro-preview-05-06",
        Usage(
            prompt_tokens=150_000, cached_tokens=100_000, output_tokens=2_000, thinking_tokens=8_000
        ),
        per_million((50_000, "1.25"), (100_000, "0.31"), (2_000, "10"), (8_000, "10")),  # 0.1935
    ),
    Case(
        # The cache counts towards the threshold: 150k fresh + 150k cached = 300k > 200k.
        "api/2.5-pro/cached-counts-toward-threshold",
        "gemini-api",
        "gemini-2.5-pro-preview-05-06",
        Usage(
            prompt_tokens=300_000, cached_tokens=150_000, output_tokens=1_000, thinking_tokens=1_000
        ),
        per_million((150_000, "2.5"), (150_000, "0.625"), (1_000, "15"), (1_000, "15")),
        long_context=True,
    ),
    Case(
        # Tool-use tokens are billed but not compared with the threshold.
        "api/2.5-pro/tool-use-not-in-threshold",
        "gemini-api",
        "gemini-2.5-pro-preview-05-06",
        Usage(prompt_tokens=200_000, tool_use_prompt_tokens=50_000, output_tokens=100),
        per_million((200_000, "1.25"), (50_000, "1.25"), (100, "10")),
    ),
    Case(
        "api/1.5-flash/threshold-minus-1",
        "gemini-api",
        "gemini-1.5-flash",
        Usage(prompt_tokens=127_999, output_tokens=1_000),
        per_million((127_999, "0.075"), (1_000, "0.3")),  # 0.009899925
    ),
    Case(
        "api/1.5-flash/at-threshold",
        "gemini-api",
        "gemini-1.5-flash-002",
        Usage(prompt_tokens=128_000, output_tokens=1_000),
        per_million((128_000, "0.075"), (1_000, "0.3")),  # 0.0099
    ),
    Case(
        "api/1.5-flash/threshold-plus-1-cached",
        "gemini-api",
        "gemini-1.5-flash-latest",
        Usage(prompt_tokens=128_001, cached_tokens=100_000, output_tokens=1_000),
        per_million((28_001, "0.15"), (100_000, "0.0375"), (1_000, "0.6")),
        long_context=True,
    ),
    Case(
        "api/1.5-flash-8b/cached",
        "gemini-api",
        "gemini-1.5-flash-8b-001",
        Usage(prompt_tokens=10_000, cached_tokens=4_000, output_tokens=1_000),
        per_million((6_000, "0.0375"), (4_000, "0.01"), (1_000, "0.15")),  # 0.000415
    ),
    Case(
        "api/1.5-pro/standard",
        "gemini-api",
        "gemini-1.5-pro",
        Usage(prompt_tokens=100_000, output_tokens=10_000),
        per_million((100_000, "1.25"), (10_000, "5")),  # 0.175
    ),
    Case(
        "api/1.5-pro/long",
        "gemini-api",
        "gemini-1.5-pro",
        Usage(prompt_tokens=1_000_000, output_tokens=10_000),
        per_million((1_000_000, "2.5"), (10_000, "10")),  # 2.6
        long_context=True,
    ),
    Case(
        "api/gemma-3/no-tokens-no-cost",
        "gemini-api",
        "gemma-3-27b-it",
        Usage(),
        Decimal(0),
    ),
    # ---------------------------------------------------------------- Vertex AI (seed 004)
    Case(
        "vertex/3-pro/thinking",
        "vertex-ai",
        "gemini-3-pro-preview",
        Usage(prompt_tokens=10_000, output_tokens=2_000, thinking_tokens=3_000),
        per_million((10_000, "2"), (2_000, "12"), (3_000, "12")),  # 0.08
    ),
    Case(
        "vertex/3-pro/long-cached",
        "vertex-ai",
        "gemini-3-pro-preview",
        Usage(prompt_tokens=200_001, cached_tokens=50_000, output_tokens=1_000),
        per_million((150_001, "4"), (50_000, "0.4"), (1_000, "18")),  # 0.638004
        long_context=True,
    ),
    Case(
        "vertex/3-pro/batch",
        "vertex-ai",
        "gemini-3-pro",
        Usage(prompt_tokens=100_000, output_tokens=10_000),
        per_million((100_000, "1"), (10_000, "6")),  # 0.16
        batch=True,
    ),
    Case(
        "vertex/3-pro/batch-long",
        "vertex-ai",
        "gemini-3-pro",
        Usage(prompt_tokens=300_000, output_tokens=10_000),
        per_million((300_000, "2"), (10_000, "9")),  # 0.69
        batch=True,
        long_context=True,
    ),
    Case(
        # 1,120 image tokens = one 1K image; the seed rounds it to 0,134 $.
        "vertex/3-pro/image-output",
        "vertex-ai",
        "gemini-3-pro-image-preview",
        Usage(prompt_tokens=100, output_tokens=1_120, output_image_tokens=1_120),
        per_million((100, "2"), (1_120, "120")),  # 0.1346
        lines={"output_image": 1_120},
    ),
    Case(
        "vertex/3-flash/audio-cached-thinking",
        "vertex-ai",
        "gemini-3-flash-preview",
        Usage(
            prompt_tokens=10_000,
            audio_prompt_tokens=6_000,
            cached_tokens=5_000,
            cached_audio_tokens=3_000,
            output_tokens=500,
            thinking_tokens=500,
        ),
        per_million(
            (2_000, "0.5"), (3_000, "1"), (2_000, "0.05"), (3_000, "0.1"), (500, "3"), (500, "3")
        ),  # 0.0074
        lines={
            "input": 2_000,
            "input_audio": 3_000,
            "cached_input": 2_000,
            "cached_input_audio": 3_000,
        },
    ),
    Case(
        "vertex/2.5-pro/at-threshold",
        "vertex-ai",
        "gemini-2.5-pro",
        Usage(prompt_tokens=200_000, output_tokens=100),
        per_million((200_000, "1.25"), (100, "10")),  # 0.251
    ),
    Case(
        "vertex/2.5-pro/threshold-plus-1",
        "vertex-ai",
        "gemini-2.5-pro",
        Usage(prompt_tokens=200_001, output_tokens=100),
        per_million((200_001, "2.5"), (100, "15")),  # 0.5015025
        long_context=True,
    ),
    Case(
        # No batch x cached column in the seed: cache hits keep the cached rate in batch.
        "vertex/2.5-pro/batch-long-cached",
        "vertex-ai",
        "gemini-2.5-pro",
        Usage(prompt_tokens=250_000, cached_tokens=200_000, output_tokens=1_000),
        per_million((50_000, "1.25"), (200_000, "0.250"), (1_000, "7.5")),  # 0.12
        batch=True,
        long_context=True,
    ),
    Case(
        "vertex/2.5-computer-use",
        "vertex-ai",
        "gemini-2.5-computer-use-preview-10-2025",
        Usage(prompt_tokens=1_000, output_tokens=1_000),
        per_million((1_000, "1.25"), (1_000, "10")),  # 0.01125
    ),
    Case(
        "vertex/2.5-flash/fixture-cached-audio",
        "vertex-ai",
        "gemini-2.5-flash",
        Usage(
            prompt_tokens=5_230,
            audio_prompt_tokens=4_800,
            cached_tokens=4_096,
            cached_audio_tokens=4_096,
            output_tokens=11,
            thinking_tokens=144,
        ),
        per_million((430, "0.30"), (704, "1"), (4_096, "0.100"), (11, "2.50"), (144, "2.50")),
    ),
    Case(
        # 1,290 tokens = one 1024x1024 image (seed 004 line 133).
        "vertex/2.5-flash/image-output",
        "vertex-ai",
        "gemini-2.5-flash-image",
        Usage(prompt_tokens=20, output_tokens=1_300, output_image_tokens=1_290),
        per_million((20, "0.30"), (10, "2.50"), (1_290, "30")),  # 0.038731
        lines={"output": 10, "output_image": 1_290},
    ),
    Case(
        "vertex/2.5-flash/batch-image-output",
        "vertex-ai",
        "gemini-2.5-flash-image",
        Usage(prompt_tokens=20, output_tokens=1_290, output_image_tokens=1_290),
        per_million((20, "0.15"), (1_290, "15")),
        batch=True,
    ),
    Case(
        "vertex/2.5-flash-lite/batch-audio",
        "vertex-ai",
        "gemini-2.5-flash-lite",
        Usage(prompt_tokens=10_000, audio_prompt_tokens=10_000, output_tokens=1_000),
        per_million((10_000, "0.15"), (1_000, "0.2")),  # 0.0017
        batch=True,
    ),
    Case(
        "vertex/2.0-flash/online",
        "vertex-ai",
        "gemini-2.0-flash-001",
        Usage(prompt_tokens=1_000_000, output_tokens=1_000_000),
        Decimal("0.75"),  # 0.15 + 0.60
    ),
    Case(
        "vertex/2.0-flash/batch",
        "vertex-ai",
        "gemini-2.0-flash",
        Usage(prompt_tokens=1_000_000, output_tokens=1_000_000),
        Decimal("0.375"),  # 0.075 + 0.30
        batch=True,
    ),
    Case(
        "vertex/2.0-flash/cached-audio",
        "vertex-ai",
        "gemini-2.0-flash",
        Usage(prompt_tokens=1_000, audio_prompt_tokens=1_000, cached_tokens=1_000),
        per_million((1_000, "0.25")),  # no cache details: the cache can only hold audio here
        lines={"cached_input_audio": 1_000},
    ),
    Case(
        "vertex/2.0-flash-lite/audio",
        "vertex-ai",
        "gemini-2.0-flash-lite",
        Usage(prompt_tokens=1_000, audio_prompt_tokens=1_000),
        per_million((1_000, "0.075")),
    ),
    Case(
        "vertex/2.0-flash-live/audio-only",
        "vertex-ai",
        "gemini-2.0-flash-live-001",
        Usage(
            prompt_tokens=1_000,
            audio_prompt_tokens=1_000,
            output_tokens=1_000,
            output_audio_tokens=1_000,
        ),
        per_million((1_000, "3"), (1_000, "12")),  # 0.015
    ),
    Case(
        # promptTokensDetails count image and video apart: the Live rates by modality.
        "vertex/2.5-flash-live/text-audio-image-video",
        "vertex-ai",
        "gemini-live-2.5-flash",
        Usage(
            prompt_tokens=1_000,
            audio_prompt_tokens=300,
            image_prompt_tokens=100,
            video_prompt_tokens=200,
            output_tokens=50,
        ),
        per_million((400, "0.5"), (300, "3"), (300, "3"), (50, "2")),
        lines={"input": 400, "input_audio": 300, "input_image_video": 300, "output": 50},
    ),
    Case(
        "gemini/2.0-flash-live/text-only",
        "gemini-api",
        "gemini-2.0-flash-live-001",
        Usage(prompt_tokens=1_000, output_tokens=100),
        per_million((1_000, "0.35"), (100, "1.5")),
    ),
    Case(
        # 0.00001875 $/1k chars x 4 chars/token = 0.075 $/1M tokens; output 0.000075 -> 0.30.
        "vertex/1.5-flash/characters",
        "vertex-ai",
        "gemini-1.5-flash",
        Usage(prompt_tokens=100_000, output_tokens=100_000),
        per_million((100_000, "0.075"), (100_000, "0.30")),  # 0.0375
    ),
    Case(
        "vertex/1.5-flash/characters-long",
        "vertex-ai",
        "gemini-1.5-flash-002",
        Usage(prompt_tokens=128_001, output_tokens=1_000),
        per_million((128_001, "0.15"), (1_000, "0.6")),
        long_context=True,
    ),
    Case(
        "vertex/1.5-flash/characters-batch-50-percent",
        "vertex-ai",
        "gemini-1.5-flash",
        Usage(prompt_tokens=100_000, output_tokens=100_000),
        per_million((100_000, "0.0375"), (100_000, "0.15")),  # 0.01875
        batch=True,
    ),
    Case(
        "vertex/1.5-pro/characters-audio",
        "vertex-ai",
        "gemini-1.5-pro",
        Usage(prompt_tokens=1_000, audio_prompt_tokens=400, output_tokens=1_000),
        per_million((600, "1.25"), (400, "1.25"), (1_000, "5")),  # 0.00625
    ),
    Case(
        "vertex/gemini-embedding/online",
        "vertex-ai",
        "gemini-embedding-001",
        Usage(prompt_tokens=1_000),
        per_million((1_000, "0.15")),  # 0.00015 $ per 1k tokens
    ),
    Case(
        "vertex/gemini-embedding/batch",
        "vertex-ai",
        "gemini-embedding-001",
        Usage(prompt_tokens=1_000),
        per_million((1_000, "0.12")),
        batch=True,
    ),
    Case(
        "vertex/text-embedding/characters",
        "vertex-ai",
        "text-embedding-005",
        Usage(prompt_tokens=1_000),
        per_million((1_000, "0.1")),  # 0.000025 $/1k chars x 4
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_worked_example(catalog: Catalog, case: Case) -> None:
    price = catalog.resolve(case.model, at=AT, price_list=case.price_list)
    assert price is not None
    cost = compute_cost(case.usage, price, batch=case.batch)
    assert cost.usd == case.expected
    assert cost.long_context is case.long_context
    assert cost.batch is case.batch
    assert cost.price_list == case.price_list
    assert sum(line.usd for line in cost.lines) == case.expected  # no rounding needed here
    got = {line.kind: line.tokens for line in cost.lines}
    for kind, tokens in case.lines.items():
        assert got[kind] == tokens, kind


def test_every_token_is_billed_once(catalog: Catalog) -> None:
    price = catalog.resolve("gemini-3-flash-preview", price_list="vertex-ai")
    assert price is not None
    usage = Usage(
        prompt_tokens=10_000,
        audio_prompt_tokens=6_000,
        cached_tokens=5_000,
        cached_audio_tokens=3_000,
        tool_use_prompt_tokens=700,
        output_tokens=500,
        thinking_tokens=400,
    )
    cost = compute_cost(usage, price)
    assert sum(line.tokens for line in cost.lines) == usage.total_tokens


def test_fixture_reply_prices_as_by_hand(catalog: Catalog) -> None:
    reply = json.loads((FIXTURES / "generate_cached_audio.json").read_text("utf-8"))
    usage = Usage.from_metadata(reply["usageMetadata"])
    pc = price_call(
        catalog, reply["modelVersion"], usage, status=200, at=AT, price_list="vertex-ai"
    )
    assert pc.cost == per_million(
        (430, "0.30"), (704, "1"), (4_096, "0.100"), (11, "2.50"), (144, "2.50")
    )


# -- rounding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        # 1 x 0.01875 / 1M = 0.00000001875: eleven decimals, rounded half up to ten.
        ("gemini-1.5-flash", Usage(prompt_tokens=1, cached_tokens=1), "0.0000000188"),
        # 1 x 0.025 / 1M = 0.000000025: exact at ten decimals.
        ("gemini-2.0-flash", Usage(prompt_tokens=1, cached_tokens=1), "0.0000000250"),
        ("gemini-2.0-flash", Usage(prompt_tokens=3, output_tokens=7), "0.0000031000"),
    ],
    ids=["half-up", "exact", "sum"],
)
def test_total_is_rounded_half_up_to_ten_places(
    catalog: Catalog, model: str, usage: Usage, expected: str
) -> None:
    price = catalog.resolve(model)
    assert price is not None
    cost = compute_cost(usage, price)
    assert format(cost.usd, "f") == expected
    assert cost.usd.as_tuple().exponent == -10


# -- refusals: never $0 -------------------------------------------------------------------

REFUSALS = [
    ("api/2.5-flash-preview/cache-coming-soon", "gemini-api", "gemini-2.5-flash-preview-04-17",
     Usage(prompt_tokens=10, cached_tokens=5), False, MissingRate, "no cached_input"),
    ("api/2.0-flash-lite/no-cache", "gemini-api", "gemini-2.0-flash-lite",
     Usage(prompt_tokens=10, cached_tokens=5), False, MissingRate, "no cached_input"),
    ("api/no-batch-column", "gemini-api", "gemini-2.0-flash",
     Usage(prompt_tokens=10, output_tokens=1), True, MissingRate, "no batch rate"),
    ("api/2.0-flash/image-per-image", "gemini-api", "gemini-2.0-flash",
     Usage(prompt_tokens=10, output_tokens=1_290, output_image_tokens=1_290), False,
     UnmeterableUsage, "per image"),
    ("api/2.0-flash/no-audio-output", "gemini-api", "gemini-2.0-flash",
     Usage(prompt_tokens=10, output_tokens=10, output_audio_tokens=10), False,
     MissingRate, "no output_audio"),
    ("api/gemma-free-tier-only", "gemini-api", "gemma-3-27b-it",
     Usage(prompt_tokens=10, output_tokens=1), False, MissingRate, "no input rate"),
    ("api/text-embedding-004-free-tier-only", "gemini-api", "text-embedding-004",
     Usage(prompt_tokens=10), False, MissingRate, "no input rate"),
    ("api/imagen-per-image", "gemini-api", "imagen-3.0-generate-002",
     Usage(prompt_tokens=10), False, UnmeterableUsage, "per image"),
    ("vertex/3-pro/long-image", "vertex-ai", "gemini-3-pro-image-preview",
     Usage(prompt_tokens=200_001, output_tokens=1_120, output_image_tokens=1_120), False,
     MissingRate, "no long-context rate for output_image"),
    ("vertex/1.5-flash/no-cache-rate", "vertex-ai", "gemini-1.5-flash",
     Usage(prompt_tokens=10, cached_tokens=5), False, MissingRate, "no cached_input"),
    ("vertex/1.0-pro/image-and-text-inseparable", "vertex-ai", "gemini-1.0-pro",
     Usage(prompt_tokens=10, output_tokens=1), False, UnmeterableUsage, "image, video"),
    ("vertex/image-generation/video-rate", "vertex-ai", "gemini-2.0-flash-preview-image-generation",
     Usage(prompt_tokens=10), False, UnmeterableUsage, "video"),
    ("vertex/image-generation/no-batch", "vertex-ai", "gemini-2.0-flash-preview-image-generation",
     Usage(prompt_tokens=10, audio_prompt_tokens=10), True, MissingRate, "no batch rate"),
    ("vertex/multimodalembedding", "vertex-ai", "multimodalembedding@001",
     Usage(prompt_tokens=10), False, UnmeterableUsage, "image, video"),
    ("vertex/veo", "vertex-ai", "veo-3.0-generate-001",
     Usage(prompt_tokens=10), False, UnmeterableUsage, "per image or second"),
    ("vertex/computer-use/no-cache", "vertex-ai", "gemini-2.5-computer-use-preview",
     Usage(prompt_tokens=10, cached_tokens=10), False, MissingRate, "no cached_input"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("price_list", "model", "usage", "batch", "error", "message"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_refuses_rather_than_guess(
    catalog: Catalog,
    price_list: str,
    model: str,
    usage: Usage,
    batch: bool,
    error: type[PricingError],
    message: str,
) -> None:
    price = catalog.resolve(model, price_list=price_list)
    assert price is not None
    with pytest.raises(error, match=message) as info:
        compute_cost(usage, price, batch=batch)
    assert info.value.model == price.id
    assert info.value.price_list == price_list
    pc = price_call(catalog, model, usage, status=200, at=AT, batch=batch, price_list=price_list)
    assert (pc.cost, pc.priced, pc.detail) == (None, False, None)
    assert pc.model == price.id
    assert pc.reason is not None and message in pc.reason


# -- price_call: what the meter records --------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 503, 504])
def test_only_http_200_is_billed(catalog: Catalog, status: int) -> None:
    usage = Usage(prompt_tokens=1_000_000, output_tokens=1_000_000)
    for model in ("gemini-2.0-flash", "no-such-model"):
        pc = price_call(catalog, model, usage, status=status, at=AT)
        assert pc.cost == Decimal(0)
        assert pc.priced is True
        assert pc.price_list == "gemini-api"
        assert pc.detail is None
        assert pc.reason is not None and str(status) in pc.reason


def test_http_200_is_billed(catalog: Catalog) -> None:
    pc = price_call(
        catalog, "models/gemini-2.0-flash", Usage(prompt_tokens=1_000), status=200, at=AT
    )
    assert pc.priced and pc.cost == Decimal("0.0001")
    assert (pc.price_list, pc.price_version, pc.model) == (
        "gemini-api",
        "2025-05-07",
        "gemini-2.0-flash",
    )
    assert isinstance(pc.detail, Cost) and pc.detail.usd == pc.cost


@pytest.mark.parametrize(
    "model", ["gpt-4o", "gemini-2.5-pro-exp-03-25", "gemini-3-pro-preview", ""]
)
def test_unknown_model_is_unpriced_never_free(catalog: Catalog, model: str) -> None:
    pc = price_call(catalog, model, Usage(prompt_tokens=1_000, output_tokens=10), status=200, at=AT)
    assert pc.cost is None and pc.priced is False
    assert (pc.price_list, pc.price_version, pc.detail, pc.model) == (
        "gemini-api",
        None,
        None,
        None,
    )
    assert pc.reason is not None and "unknown model" in pc.reason


def test_price_list_argument_overrides_the_default(catalog: Catalog) -> None:
    usage = Usage(prompt_tokens=1_000_000)
    api = price_call(catalog, "gemini-2.0-flash", usage, status=200, at=AT)
    vertex = price_call(
        catalog, "gemini-2.0-flash", usage, status=200, at=AT, price_list="vertex-ai"
    )
    assert (api.cost, vertex.cost) == (Decimal("0.1"), Decimal("0.15"))
    assert vertex.price_version == "seed-004"


def test_unknown_price_list_is_a_configuration_error(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="unknown price list"):
        price_call(catalog, "gemini-2.0-flash", Usage(), status=200, at=AT, price_list="azure")


def test_at_none_means_now(catalog: Catalog) -> None:
    pc = price_call(catalog, "gemini-2.0-flash", Usage(prompt_tokens=10), status=200, at=None)
    assert pc.priced and pc.cost == Decimal("0.000001")


# -- the override file in the engine ---------------------------------------------------------

OVERRIDES = """
models:
  - price_list: gemini-api
    id: gemini-2.0-flash
    name: Gemini 2.0 Flash
    effective_from: 2026-03-01
    rates:
      input: {usd: "0.08", source: "contract"}
      output: {usd: "0.32", source: "contract"}
discounts:
  - discount: "0.10"
    price_list: gemini-api
    source: "negotiated 10%"
"""


@pytest.fixture
def overridden(tmp_path: Path) -> Catalog:
    path = tmp_path / "prices.yaml"
    path.write_text(OVERRIDES, encoding="utf-8")
    return Catalog.load(overrides=path)


@pytest.mark.parametrize(
    ("at", "expected", "version"),
    [
        # (1,000 x 0.10 + 500 x 0.40) / 1M = 0.0003, less 10% = 0.00027
        (datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC), "0.00027", "2025-05-07+discount=0.10"),
        # (1,000 x 0.08 + 500 x 0.32) / 1M = 0.00024, less 10% = 0.000216
        (datetime(2026, 3, 1, tzinfo=UTC), "0.000216", "override-2026-03-01+discount=0.10"),
    ],
    ids=["before-new-price", "from-new-price"],
)
def test_discount_and_newer_price(
    overridden: Catalog, at: datetime, expected: str, version: str
) -> None:
    usage = Usage(prompt_tokens=1_000, output_tokens=500)
    pc = price_call(overridden, "gemini-2.0-flash", usage, status=200, at=at)
    assert pc.cost == Decimal(expected)
    assert pc.price_version == version
    assert pc.detail is not None
    discount = pc.detail.lines[-1]
    assert discount.kind == "discount" and discount.usd < 0
    assert discount.source == "negotiated 10%"


# -- properties ------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=3_000_000)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    # Arbitrary, even inconsistent, counts: the engine must clamp, never go negative.
    return Usage(
        prompt_tokens=draw(counts),
        cached_tokens=draw(counts),
        output_tokens=draw(counts),
        thinking_tokens=draw(counts),
        tool_use_prompt_tokens=draw(counts),
        audio_prompt_tokens=draw(counts),
        cached_audio_tokens=draw(counts),
    )


@functools.cache
def _catalog(default_list: str) -> Catalog:
    # Hypothesis runs a test many times in one call: it cannot use pytest's fixtures.
    return Catalog.load(default_list=default_list)


@settings(deadline=None)  # the first example loads the catalog; a busy CI machine is slow
@given(usage=usages(), batch=st.booleans())
def test_cost_is_never_negative_and_sums_its_lines(usage: Usage, batch: bool) -> None:
    catalog = _catalog("vertex-ai")
    for model in (
        "gemini-2.5-pro", "gemini-2.5-flash", "gemini-3-flash-preview", "gemini-2.0-flash-lite"
    ):  # fmt: skip
        price = catalog.resolve(model)
        assert price is not None
        cost = compute_cost(usage, price, batch=batch)
        assert cost.usd >= 0
        assert all(line.tokens >= 0 and line.usd >= 0 for line in cost.lines)
        exact = sum((line.usd for line in cost.lines), Decimal(0))
        assert abs(exact - cost.usd) <= Decimal("0.00000000005")
        assert sum(line.tokens for line in cost.lines) == (
            max(usage.prompt_tokens, 0)
            + usage.tool_use_prompt_tokens
            + usage.output_tokens
            + usage.thinking_tokens
        )


@settings(deadline=None)
@given(prompt=st.integers(min_value=0, max_value=2_000_000), output=counts)
def test_long_context_never_costs_less(prompt: int, output: int) -> None:
    catalog = _catalog("gemini-api")
    price = catalog.resolve("gemini-2.5-pro-preview-05-06")
    assert price is not None
    here = compute_cost(Usage(prompt_tokens=prompt, output_tokens=output), price)
    more = compute_cost(Usage(prompt_tokens=prompt + 1, output_tokens=output), price)
    assert more.usd >= here.usd
