"""The one list of token kinds, and everything built from it."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from sqlalchemy import inspect

from proxy.db.tables import UsageEvent, UsageRollup
from proxy.metering.ledger_event import LedgerEvent
from proxy.metrics import TOKENS
from proxy.openai.chat import completion_usage
from proxy.usage import REPORTED_KINDS, TOKEN_KINDS, Usage, openai_usage_counts

FULL = {
    "promptTokenCount": 1000,
    "cachedContentTokenCount": 400,
    "candidatesTokenCount": 200,
    "thoughtsTokenCount": 50,
    "toolUsePromptTokenCount": 7,
    "promptTokensDetails": [
        {"modality": "TEXT", "tokenCount": 700},
        {"modality": "AUDIO", "tokenCount": 300},
    ],
    "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 100}],
    "candidatesTokensDetails": [
        {"modality": "IMAGE", "tokenCount": 120},
        {"modality": "AUDIO", "tokenCount": 30},
    ],
}


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, Usage()),
        (
            FULL,
            Usage(
                prompt_tokens=1000, cached_tokens=400, output_tokens=200, thinking_tokens=50,
                tool_use_prompt_tokens=7, audio_prompt_tokens=300, cached_audio_tokens=100,
                output_image_tokens=120, output_audio_tokens=30,
            ),
        ),
        # Malformed counts are absent, never a crash or a negative.
        ({"promptTokenCount": -5, "candidatesTokenCount": "12", "thoughtsTokenCount": True},
         Usage()),
        ({"promptTokensDetails": "AUDIO"}, Usage()),
        ({"promptTokensDetails": [{"modality": "AUDIO"}, "x"]}, Usage()),
    ],
)  # fmt: skip
def test_usage_from_metadata(metadata: dict[str, Any], expected: Usage) -> None:
    assert Usage.from_metadata(metadata) == expected


def test_the_kinds_are_the_usage_fields_in_order() -> None:
    assert [k.name for k in TOKEN_KINDS] == [f.name for f in fields(Usage) if f.name != "estimated"]


def test_every_kind_is_a_ledger_column_and_every_reported_kind_a_rollup_column() -> None:
    event_columns = inspect(UsageEvent).columns.keys()
    rollup_columns = inspect(UsageRollup).columns.keys()
    for kind in TOKEN_KINDS:
        assert kind.name in event_columns
        assert (kind.name in rollup_columns) is kind.reported
    assert "total_tokens" in REPORTED_KINDS and "total_tokens" in rollup_columns


def test_a_ledger_row_round_trips_every_kind() -> None:
    usage = Usage.from_metadata(FULL)
    event = LedgerEvent(
        tenant_id=1, key_id=2, model="m", operation="generateContent", route="native",
        streamed=False, status=200, latency_ms=1.0, usage=usage,
    )  # fmt: skip
    row = event.as_row()
    assert {k.name: row[k.name] for k in TOKEN_KINDS} == usage.counts()
    assert row["total_tokens"] == 1000 + 200 + 50 + 7
    assert LedgerEvent.from_row(row) == event


def test_the_tokens_metric_names_the_exported_kinds() -> None:
    exported = [k.metric for k in TOKEN_KINDS if k.metric is not None]
    assert exported == ["prompt", "cached", "output", "thinking", "tool_use", "audio"]
    assert ", ".join(exported) in TOKENS._documentation


def test_openai_usage_objects_add_up_from_the_kinds() -> None:
    usage = Usage.from_metadata(FULL)
    assert completion_usage(usage) == {
        "prompt_tokens": 1007,  # prompt + tool-use prompt
        "completion_tokens": 250,  # visible output + thinking
        "total_tokens": 1257,
        "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 300},
        "completion_tokens_details": {"reasoning_tokens": 50, "audio_tokens": 30},
    }
    assert openai_usage_counts(usage, "responses") == {
        "input_tokens": 1007,
        "input_tokens_details.cached_tokens": 400,
        "output_tokens": 250,
        "output_tokens_details.reasoning_tokens": 50,
    }
