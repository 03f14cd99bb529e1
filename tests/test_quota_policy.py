"""The quota arithmetic as tables: periods and their resets, windows, header durations,
threshold crossings, units, allowed-model patterns; and the worst-case estimate of a call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from proxy.quotas.estimate import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    MEDIA_MIN_TOKENS,
    estimate_call,
    max_output_tokens,
    prompt_tokens,
)
from proxy.quotas.policy import (
    crossed,
    format_reset,
    model_allowed,
    period_end,
    period_label,
    period_start,
    retry_after,
    units_to_usd,
    usd_to_units,
    window_end,
    window_index,
)
from tests.test_quota_fixtures import catalog


def utc(
    year: int, month: int, day: int, h: int = 0, m: int = 0, s: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, h, m, s, us, tzinfo=UTC)


PERIODS = [
    # period, at, start, end (the reset), label
    ("day", utc(2026, 3, 10, 12, 0, 10), utc(2026, 3, 10), utc(2026, 3, 11), "d2026-03-10"),
    ("day", utc(2026, 3, 10), utc(2026, 3, 10), utc(2026, 3, 11), "d2026-03-10"),
    ("day", utc(2026, 12, 31, 23, 59, 59), utc(2026, 12, 31), utc(2027, 1, 1), "d2026-12-31"),
    ("week", utc(2026, 3, 10, 12), utc(2026, 3, 9), utc(2026, 3, 16), "w2026-03-09"),
    ("week", utc(2026, 3, 9), utc(2026, 3, 9), utc(2026, 3, 16), "w2026-03-09"),
    ("week", utc(2026, 3, 15, 23, 59), utc(2026, 3, 9), utc(2026, 3, 16), "w2026-03-09"),
    ("week", utc(2027, 1, 1), utc(2026, 12, 28), utc(2027, 1, 4), "w2026-12-28"),
    ("month", utc(2026, 3, 10, 12), utc(2026, 3, 1), utc(2026, 4, 1), "m2026-03"),
    ("month", utc(2026, 12, 31, 23), utc(2026, 12, 1), utc(2027, 1, 1), "m2026-12"),
    ("month", utc(2028, 2, 29, 1), utc(2028, 2, 1), utc(2028, 3, 1), "m2028-02"),
    # Another zone, or naive (read as UTC): periods are UTC calendar periods.
    (
        "day",
        datetime(2026, 3, 10, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
        utc(2026, 3, 11),
        utc(2026, 3, 12),
        "d2026-03-11",
    ),
    ("month", datetime(2026, 3, 31, 23, 0), utc(2026, 3, 1), utc(2026, 4, 1), "m2026-03"),
]


@pytest.mark.parametrize(("period", "at", "start", "end", "label"), PERIODS)
def test_calendar_periods(
    period: Any, at: datetime, start: datetime, end: datetime, label: str
) -> None:
    assert period_start(period, at) == start
    assert period_end(period, at) == end
    assert period_label(period, at) == label


@pytest.mark.parametrize(
    ("at", "index", "end"),
    [
        (utc(2026, 3, 10, 12, 0, 10), 29552400, utc(2026, 3, 10, 12, 1)),
        (utc(2026, 3, 10, 12, 0, 59, 999999), 29552400, utc(2026, 3, 10, 12, 1)),
        (utc(2026, 3, 10, 12, 1), 29552401, utc(2026, 3, 10, 12, 2)),
    ],
)
def test_minute_windows(at: datetime, index: int, end: datetime) -> None:
    assert window_index(at) == index
    assert window_end(at) == end


@pytest.mark.parametrize(
    ("seconds", "text", "retry"),
    [
        (0, "0ms", 1),
        (0.2501, "251ms", 1),
        (1, "1s", 1),
        (29.5, "29.5s", 30),
        (50, "50s", 50),
        (60, "1m0s", 60),
        (90.25, "1m30.25s", 91),
        (6 * 3600, "6h0m0s", 21600),
        (-3, "0ms", 1),
    ],
)
def test_reset_durations(seconds: float, text: str, retry: int) -> None:
    now = utc(2026, 3, 10)
    assert format_reset(seconds) == text
    assert retry_after(now + timedelta(seconds=seconds), now) == retry


@pytest.mark.parametrize(
    ("before", "after", "limit", "passed"),
    [
        (0, 79, 100, ()),
        (0, 80, 100, (Decimal("0.8"),)),
        (79, 81, 100, (Decimal("0.8"),)),
        (80, 99, 100, ()),  # reached before: not again
        (99, 100, 100, (Decimal("1"),)),
        (50, 150, 100, (Decimal("0.8"), Decimal("1"))),
        (100, 120, 100, ()),
        (81, 70, 100, ()),  # a correction downwards crosses nothing
        (0, 10, 0, ()),
    ],
)
def test_threshold_crossings(
    before: int, after: int, limit: int, passed: tuple[Decimal, ...]
) -> None:
    assert crossed(before, after, limit) == passed


@pytest.mark.parametrize(
    ("usd", "units"),
    [
        (Decimal("0.0000000001"), 1),
        (Decimal("0.00000000001"), 1),  # holds and limits round up
        (Decimal("12.5"), 125_000_000_000),
        (Decimal(0), 0),
    ],
)
def test_money_units(usd: Decimal, units: int) -> None:
    assert usd_to_units(usd) == units
    assert units_to_usd(units) == usd.quantize(Decimal("1e-10"), rounding="ROUND_CEILING")


@pytest.mark.parametrize(
    ("model", "patterns", "allowed"),
    [
        ("gemini-2.5-flash", None, True),
        ("gemini-2.5-flash", [], False),
        ("models/Gemini-2.5-Flash", ["gemini-2.5-flash"], True),
        ("gemini-2.5-flash-lite", ["gemini-2.5-flash"], False),
        ("gemini-2.5-flash-lite", ["gemini-2.5-*"], True),
        ("gemini-2.0-flash", ["gemini-2.5-*", "models/gemini-2.0-flash"], True),
    ],
)
def test_allowed_models(model: str, patterns: list[str] | None, allowed: bool) -> None:
    assert model_allowed(model, patterns) is allowed


# -- the worst case of a call ------------------------------------------------------------------


def text(n: int) -> dict[str, Any]:
    return {"contents": [{"parts": [{"text": "a" * n}]}]}


def part(p: dict[str, Any]) -> dict[str, Any]:
    return {"contents": [{"parts": [p]}]}


TOOLS = {"tools": [{"functionDeclarations": [{"name": "abcd", "parameters": {"q": 1}}]}]}
CALL = part({"functionResponse": {"name": "f", "response": {"ok": True}}})
IMAGE = part({"inlineData": {"mimeType": "image/png", "data": "AAAA"}})
SOUND = part({"inline_data": {"mime_type": "audio/mp3", "data": "A" * 400_000}})  # 300,000 bytes
FILE = part({"fileData": {"fileUri": "gs://b/v.mp4"}})


@pytest.mark.parametrize(
    ("request_body", "tokens", "audio"),
    [
        (text(400), 100, 0),
        (text(401), 101, 0),  # rounds up
        ({"contents": [{"role": "user", "parts": [{"text": "abcd"}]}]}, 2, 0),
        # Everything that reaches the model counts: system, tools (schema keys too), calls.
        ({"systemInstruction": {"parts": [{"text": "a" * 8}]}}, 2, 0),
        (TOOLS, 5, 0),  # "name" "abcd" "parameters" "q" "1": 20 characters
        (CALL, 5, 0),
        # Configuration does not.
        ({**text(4), "generationConfig": {"stopSequences": ["x" * 400]}}, 1, 0),
        # Media: an allowance per part, or a token per 64 bytes when larger.
        (IMAGE, MEDIA_MIN_TOKENS, 0),
        (SOUND, 300_000 // 64 + 1, 300_000 // 64 + 1),
        (FILE, MEDIA_MIN_TOKENS, 0),
    ],
)
def test_prompt_estimate(request_body: dict[str, Any], tokens: int, audio: int) -> None:
    assert prompt_tokens(request_body) == (tokens, audio)


@pytest.mark.parametrize(
    ("config", "cap", "operation", "expected"),
    [
        ({}, None, "generateContent", DEFAULT_MAX_OUTPUT_TOKENS),
        ({}, 8192, "generateContent", 8192),
        ({"generationConfig": {"maxOutputTokens": 100}}, 8192, "streamGenerateContent", 100),
        ({"generation_config": {"max_output_tokens": 100}}, None, "generateContent", 100),
        ({"generationConfig": {"maxOutputTokens": 99_999}}, 8192, "generateContent", 8192),
        ({"generationConfig": {"maxOutputTokens": 100, "candidateCount": 3}}, None, "x", 300),
        ({"generationConfig": {"maxOutputTokens": "lots"}}, None, "generateContent", 65_536),
        ({"generationConfig": {"maxOutputTokens": 100}}, None, "batchEmbedContents", 0),
    ],
)
def test_max_output(config: dict[str, Any], cap: int | None, operation: str, expected: int) -> None:
    assert max_output_tokens(config, cap, operation) == expected


def max_out(n: int) -> dict[str, Any]:
    return {"generationConfig": {"maxOutputTokens": n}}


def test_worst_case_cost_bills_the_dearest_output_and_long_context() -> None:
    cat = catalog()
    flash = estimate_call(cat, "gemini-2.5-flash", {**text(4000), **max_out(1000)})
    # 1,000 prompt tokens at $0.15/M, 1,000 output tokens at the thinking rate $3.5/M.
    assert flash.cost_usd == Decimal("0.00015") + Decimal("0.0035")
    pro = estimate_call(cat, "gemini-2.5-pro", {**text(4 * 200_001), **max_out(10)})
    # Past 200k prompt tokens: the long-context rates, $2.5/M in and $15/M out.
    assert pro.cost_usd == Decimal(200_001) * Decimal("2.5") / 1_000_000 + Decimal("0.00015")
    assert estimate_call(cat, "no-such-model", text(4)).cost_usd is None
    embed = estimate_call(cat, "gemini-2.5-flash", text(400), "batchEmbedContents")
    assert embed.max_output_tokens == 0 and embed.total_tokens == 100
