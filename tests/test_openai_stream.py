"""Gemini stream events → chat.completion.chunk dicts (pure; fixtures and synthetic events)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.openai.errors import UpstreamStreamError
from proxy.openai.stream import ChatStreamTranslator
from proxy.openai.tool_ids import decode_signature
from proxy.usage import Usage

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "gemini"
SIGNATURE = "CiQBVKhc7vB1mZ3xQ0m2Hn8sZQk1oE5q9yN0cFq3n6y0xg=="
TEXT = "Proxies forward requests from clients to servers and relay the replies back."


def sse_events(name: str) -> list[dict[str, Any]]:
    raw = (FIXTURES / name).read_text().replace("\r\n", "\n")
    return [
        orjson.loads(block.removeprefix("data: "))
        for block in raw.split("\n\n")
        if block.startswith("data: ")
    ]


def translator(include_usage: bool = False) -> ChatStreamTranslator:
    ids = itertools.count()
    return ChatStreamTranslator(
        model="gemini-2.5-flash",
        completion_id="chatcmpl-s",
        created=1700000000,
        include_usage=include_usage,
        new_call_id=lambda: f"call_{next(ids)}",
    )


def run(events: Iterable[Mapping[str, Any]], include_usage: bool = False) -> list[dict[str, Any]]:
    t = translator(include_usage)
    chunks = [c for e in events for c in t.feed(e)]
    return chunks + t.finish()


def accumulate(chunks: list[dict[str, Any]]) -> ChatCompletion:
    """What the OpenAI SDK's own stream helper makes of the chunks."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    # The snapshot, not get_final_completion(), which raises on finish_reason "length".
    return ChatCompletion.model_validate(state.current_completion_snapshot.model_dump())


@pytest.mark.parametrize(
    "events",
    [
        sse_events("stream_text.sse"),
        orjson.loads((FIXTURES / "stream_text.json_array").read_bytes()),
    ],
    ids=["sse", "json_array"],
)
def test_text_stream_with_usage(events: list[dict[str, Any]]) -> None:
    t = translator(include_usage=True)
    per_event = [t.feed(e) for e in events]
    # Each upstream event is translated at once: every one yields a chunk.
    assert [len(c) for c in per_event] == [1, 1, 2]
    chunks = [c for group in per_event for c in group] + t.finish()
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert {(c.id, c.created, c.model, c.object) for c in parsed} == {
        ("chatcmpl-s", 1700000000, "gemini-2.5-flash", "chat.completion.chunk")
    }
    assert parsed[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in parsed[1:-1])
    assert "".join(c.choices[0].delta.content or "" for c in parsed[:-1]) == TEXT
    finish = parsed[-2]
    assert (finish.choices[0].finish_reason, finish.choices[0].delta.content) == ("stop", None)
    assert all(c.choices[0].finish_reason is None for c in parsed[:-2])
    last = parsed[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        12,
        286,
        298,
    )
    assert all(c.usage is None for c in parsed[:-1])  # usage sent once, never repeated
    assert t.usage == Usage(prompt_tokens=12, output_tokens=14, thinking_tokens=272)
    assert accumulate(chunks[:-1]).choices[0].message.content == TEXT


def test_no_usage_chunk_without_include_usage() -> None:
    chunks = run(sse_events("stream_text.sse"))
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)


def test_usage_is_last_seen_never_summed() -> None:
    t = translator()
    for event in sse_events("stream_text.sse")[:2]:
        t.feed(event)
    assert t.usage == Usage(prompt_tokens=12)


def test_error_midway_raises_mapped_error_and_keeps_usage() -> None:
    first, error = sse_events("stream_error_midway.sse")
    t = translator(include_usage=True)
    assert t.feed(first)[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Proxies"}
    with pytest.raises(UpstreamStreamError) as info:
        t.feed(error)
    assert info.value.status == 503
    assert info.value.body == {
        "error": {
            "message": "The model is overloaded. Please try again later.",
            "type": "api_error",
            "param": None,
            "code": None,
        }
    }
    assert t.usage == Usage(prompt_tokens=12)


def call_part(name: str, args: dict[str, Any], sig: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if sig:
        part["thoughtSignature"] = sig
    return part


def event(parts: list[dict[str, Any]], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand]}


def test_tool_calls_stream_with_running_index() -> None:
    chunks = run(
        [
            event([{"text": "thinking", "thought": True}]),
            event([call_part("get_weather", {"city": "Hanoi"}, SIGNATURE)]),
            event([call_part("get_time", {})], finish="STOP"),
        ]
    )
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[0].choices[0].delta.role == "assistant"  # thought-only event: role, no text
    assert parsed[0].choices[0].delta.content == ""
    calls = [tc for c in parsed for ch in c.choices for tc in ch.delta.tool_calls or []]
    assert [(tc.index, tc.function.name, tc.function.arguments) for tc in calls] == [  # type: ignore[union-attr]
        (0, "get_weather", '{"city":"Hanoi"}'),
        (1, "get_time", "{}"),
    ]
    assert decode_signature(calls[0].id or "") == SIGNATURE
    assert calls[0].model_extra == {"extra_content": {"google": {"thought_signature": SIGNATURE}}}
    assert parsed[-1].choices[0].finish_reason == "tool_calls"
    final = accumulate(chunks)
    assert final.choices[0].finish_reason == "tool_calls"
    assert [tc.function.name for tc in final.choices[0].message.tool_calls or []] == [  # type: ignore[union-attr]
        "get_weather",
        "get_time",
    ]


def test_first_event_with_tool_call_has_role_and_no_content() -> None:
    [chunk, finish] = translator().feed(event([call_part("f", {})], finish="STOP"))
    delta = chunk["choices"][0]["delta"]
    assert delta["role"] == "assistant" and "content" not in delta
    assert finish["choices"][0]["finish_reason"] == "tool_calls"


# (id, events, expected [(index, finish_reason, content)] from the SDK's accumulated completion)
CASES: list[tuple[str, list[dict[str, Any]], list[tuple[int, str, str | None]]]] = [
    (
        "max_tokens",
        [event([{"text": "a"}]), event([{"text": "b"}], "MAX_TOKENS")],
        [(0, "length", "ab")],
    ),
    ("safety", [event([{"text": "a"}]), event([], "SAFETY")], [(0, "content_filter", "a")]),
    (
        "blocked_prompt",
        [{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}],
        [(0, "content_filter", "")],
    ),
    ("no_finish_reason_closed_by_finish", [event([{"text": "a"}])], [(0, "stop", "a")]),
    ("empty_stream", [], [(0, "stop", "")]),
    ("empty_event", [{}, event([{"text": "a"}], "STOP")], [(0, "stop", "a")]),
    (
        "two_candidates",
        [
            {
                "candidates": [
                    event([{"text": "x"}])["candidates"][0],
                    event([{"text": "y"}], index=1)["candidates"][0],
                ]
            },
            {
                "candidates": [
                    event([], "STOP")["candidates"][0],
                    event([{"text": "z"}], "STOP", index=1)["candidates"][0],
                ]
            },
        ],
        [(0, "stop", "x"), (1, "stop", "yz")],
    ),
    (
        "parts_after_finish_ignored",
        [event([{"text": "a"}], "STOP"), event([{"text": "late"}])],
        [(0, "stop", "a")],
    ),
]


@pytest.mark.parametrize(("events", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_stream_cases(
    events: list[dict[str, Any]], expected: list[tuple[int, str, str | None]]
) -> None:
    chunks = run(events)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    # Every choice gets exactly one finish_reason, on its last chunk.
    finishes = [
        (ch["index"], ch["finish_reason"])
        for c in chunks
        for ch in c["choices"]
        if ch["finish_reason"]
    ]
    assert sorted(finishes) == [(i, r) for i, r, _ in expected]
    final = accumulate(chunks)
    assert [(c.index, c.finish_reason, c.message.content) for c in final.choices] == expected


def test_finish_is_idempotent() -> None:
    t = translator(include_usage=True)
    t.feed(event([{"text": "a"}], "STOP"))
    assert len(t.finish()) == 1
    assert t.finish() == []


def test_usage_chunk_when_upstream_sent_none() -> None:
    chunks = run([event([{"text": "a"}], "STOP")], include_usage=True)
    usage = ChatCompletionChunk.model_validate(chunks[-1]).usage
    assert usage is not None and usage.total_tokens == 0
