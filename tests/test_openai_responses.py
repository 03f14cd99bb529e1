"""Responses API request → Gemini body, reply → response object, and the typed stream events
(pure tables; the events are checked with the openai SDK's own models and accumulator)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx2
import openai
import orjson
import pydantic
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from proxy.errors import BadRequest
from proxy.openai.errors import UpstreamStreamError
from proxy.openai.messages import DUMMY_THOUGHT_SIGNATURE
from proxy.openai.responses import (
    Conversation,
    ItemIds,
    ResponsesCall,
    conversation_after,
    gemini_reply_to_response,
    responses_request_to_gemini,
)
from proxy.openai.responses_stream import ResponsesStreamTranslator, encode_event
from proxy.openai.tool_ids import SEPARATOR, decode_signature

SIGNATURE = "CiQBVKhc7vB1mZ3xQ0m2Hn8sZQk1oE5q9yN0cFq3n6y0xg=="
MODEL = "gemini-2.5-flash"


def call(**body: Any) -> ResponsesCall:
    body.setdefault("model", MODEL)
    body.setdefault("input", "Hi")
    return responses_request_to_gemini(body)


def ids() -> ItemIds:
    counter = itertools.count(1)
    return ItemIds(item=lambda prefix: f"{prefix}_{next(counter)}", call=lambda: "call_x")


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


HI = [user("Hi")]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": True,
}
WEATHER_DECL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parametersJsonSchema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TIME = {"type": "function", "name": "get_time"}
# What the Agents SDK sends back after a tool call (the model's function_call item as output).
CALL_ITEM = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "get_weather",
    "arguments": '{"city": "Paris"}',
    "status": "completed",
}
FC_PART = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}


def response_part(name: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"functionResponse": {"name": name, "response": response}}


# (id, request fields, expected Gemini body)
REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("string_input", {}, {"contents": HI}),
    ("easy_message", {"input": [{"role": "user", "content": "Hi"}]}, {"contents": HI}),
    (
        "instructions_first_then_system_and_developer",
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Answer in French."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hi"}],
                },
                {"role": "system", "content": [{"type": "input_text", "text": "No emoji."}]},
            ],
        },
        {
            "contents": HI,
            "systemInstruction": {
                "parts": [
                    {"text": "Be brief."},
                    {"text": "Answer in French."},
                    {"text": "No emoji."},
                ]
            },
        },
    ),
    (
        "assistant_output_items_replayed",
        {
            "input": [
                {"role": "user", "content": "Hi"},
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}
                    ],
                },
                {"role": "user", "content": "Bye"},
            ]
        },
        {"contents": [*HI, {"role": "model", "parts": [{"text": "Hello!"}]}, user("Bye")]},
    ),
    (
        "tool_round_trip",
        {
            "input": [
                {"role": "user", "content": "Weather?"},
                CALL_ITEM,
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ],
            "tools": [WEATHER],
        },
        {
            "contents": [
                user("Weather?"),
                {"role": "model", "parts": [FC_PART]},
                {"role": "user", "parts": [response_part("get_weather", {"result": "sunny"})]},
            ],
            "tools": [{"functionDeclarations": [WEATHER_DECL]}],
        },
    ),
    (
        "parallel_calls_share_turns_reasoning_dropped",
        {
            "input": [
                {"role": "user", "content": "Weather and time?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant", "content": "Checking."},
                CALL_ITEM,
                {**CALL_ITEM, "call_id": "call_2", "name": "get_time", "arguments": ""},
                {"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "clear"}'},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "noon"}],
                },
            ]
        },
        {
            "contents": [
                user("Weather and time?"),
                {
                    "role": "model",
                    "parts": [
                        {"text": "Checking."},
                        FC_PART,
                        {"functionCall": {"name": "get_time", "args": {}}},
                    ],
                },
                {
                    "role": "user",
                    "parts": [
                        response_part("get_weather", {"sky": "clear"}),
                        response_part("get_time", {"result": "noon"}),
                    ],
                },
            ]
        },
    ),
    (
        "signature_from_call_id",
        {
            "input": [
                {"role": "user", "content": "Weather?"},
                {
                    **CALL_ITEM,
                    "call_id": f"call_1{SEPARATOR}CiQBVKhc7vB1mZ3xQ0m2Hn8sZQk1oE5q9yN0cFq3n6y0xg",
                },
            ]
        },
        {
            "contents": [
                user("Weather?"),
                {"role": "model", "parts": [{**FC_PART, "thoughtSignature": SIGNATURE}]},
            ]
        },
    ),
    (
        "media",
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {
                            "type": "input_image",
                            "image_url": "data:image/png;base64,iVBO",
                            "detail": "low",
                        },
                        {"type": "input_image", "image_url": "https://example.com/cat.webp"},
                        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE"},
                        {"type": "input_file", "file_data": "JVBE", "filename": "a.pdf"},
                        {"type": "input_file", "file_url": "https://example.com/a.pdf"},
                        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                    ],
                }
            ]
        },
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"text": "What is this?"},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                        {
                            "fileData": {
                                "mimeType": "image/webp",
                                "fileUri": "https://example.com/cat.webp",
                            }
                        },
                        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
                        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
                        {
                            "fileData": {
                                "mimeType": "application/pdf",
                                "fileUri": "https://example.com/a.pdf",
                            }
                        },
                        {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
                    ],
                }
            ]
        },
    ),
    (
        "tool_choice_required",
        {"tools": [WEATHER, TIME], "tool_choice": "required"},
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [WEATHER_DECL, {"name": "get_time"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        },
    ),
    (
        "tool_choice_named",
        {"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "name": "get_time"}},
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [WEATHER_DECL, {"name": "get_time"}]}],
            "toolConfig": {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
            },
        },
    ),
    (
        "tool_choice_allowed_tools_auto",
        {
            "tools": [WEATHER, TIME],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "function", "name": "get_time"}],
            },
        },
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [{"name": "get_time"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        },
    ),
    (
        "web_search_is_google_search",
        {"tools": [{"type": "web_search", "search_context_size": "high"}]},
        {"contents": HI, "tools": [{"googleSearch": {}}]},
    ),
    (
        "web_search_forced_turns_functions_off",
        {
            "tools": [TIME, {"type": "web_search_preview"}],
            "tool_choice": {"type": "web_search_preview"},
        },
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [{"name": "get_time"}]}, {"googleSearch": {}}],
            "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
        },
    ),
    (
        "tool_choice_none_leaves_search_out",
        {"tools": [TIME, {"type": "web_search"}], "tool_choice": "none"},
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [{"name": "get_time"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
        },
    ),
    (
        "json_schema",
        {
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "city",
                    "strict": True,
                    "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
                "verbosity": "low",
            }
        },
        {
            "contents": HI,
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                },
            },
        },
    ),
    (
        "json_object",
        {"text": {"format": {"type": "json_object"}}},
        {"contents": HI, "generationConfig": {"responseMimeType": "application/json"}},
    ),
    (
        "sampling_and_limit",
        {"temperature": 0.3, "top_p": 0.8, "max_output_tokens": 200},
        {
            "contents": HI,
            "generationConfig": {"temperature": 0.3, "topP": 0.8, "maxOutputTokens": 200},
        },
    ),
    (
        "reasoning_effort_and_summary",
        {"reasoning": {"effort": "low", "summary": "auto"}},
        {
            "contents": HI,
            "generationConfig": {
                "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}
            },
        },
    ),
    (
        "reasoning_effort_gemini3",
        {"model": "gemini-3-pro-preview", "reasoning": {"effort": "medium"}},
        {"contents": HI, "generationConfig": {"thinkingConfig": {"thinkingLevel": "high"}}},
    ),
    (
        "google_thinking_config",
        {"extra_body": {"google": {"thinking_config": {"thinking_budget": 0}}}},
        {"contents": HI, "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}},
    ),
    (
        "gemini3_missing_signature_filled",
        {
            "model": "gemini-3-pro-preview",
            "input": [{"role": "user", "content": "Weather?"}, CALL_ITEM],
        },
        {
            "contents": [
                user("Weather?"),
                {
                    "role": "model",
                    "parts": [{**FC_PART, "thoughtSignature": DUMMY_THOUGHT_SIGNATURE}],
                },
            ]
        },
    ),
    (
        "dropped_parameters",
        {
            "store": True,
            "include": ["reasoning.encrypted_content"],
            "metadata": {"trace": "1"},
            "parallel_tool_calls": False,
            "truncation": "auto",
            "service_tier": "auto",
            "prompt_cache_key": "k",
            "stream_options": {"include_obfuscation": False},
            "max_tool_calls": 3,
            "background": False,
            "top_logprobs": 0,
            "previous_response_id": None,
        },
        {"contents": HI},
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_request(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert call(**body).request == expected


def test_call_fields() -> None:
    c = call(stream=True, safety_identifier="alice", tools=[{"type": "web_search"}])
    assert (c.model, c.stream, c.user, c.web_search) == (MODEL, True, "alice", True)
    assert call(user="bob", safety_identifier="alice").user == "bob"
    assert call().web_search is False


# (id, request fields, the param the 400 names)
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("previous_response_id", {"previous_response_id": "resp_1"}, "previous_response_id"),
    ("conversation", {"conversation": "conv_1"}, "conversation"),
    ("background", {"background": True}, "background"),
    ("prompt_template", {"prompt": {"id": "pmpt_1"}}, "prompt"),
    ("top_logprobs", {"top_logprobs": 5}, "top_logprobs"),
    ("unknown", {"frobnicate": 1}, "frobnicate"),
    ("include_logprobs", {"include": ["message.output_text.logprobs"]}, "include[0]"),
    (
        "file_search",
        {"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]},
        "tools[0].type",
    ),
    ("computer", {"tools": [TIME, {"type": "computer_use_preview"}]}, "tools[1].type"),
    ("code_interpreter", {"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
    ("image_generation", {"tools": [{"type": "image_generation"}]}, "tools[0].type"),
    ("mcp", {"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
    ("custom_tool", {"tools": [{"type": "custom", "name": "x"}]}, "tools[0].type"),
    (
        "search_domains",
        {"tools": [{"type": "web_search", "filters": {"allowed_domains": ["a.com"]}}]},
        "tools[0].filters.allowed_domains",
    ),
    ("duplicate_function", {"tools": [TIME, TIME]}, "tools[1].name"),
    ("choice_search_without_tool", {"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    (
        "choice_mcp",
        {"tools": [TIME], "tool_choice": {"type": "mcp", "server_label": "x"}},
        "tool_choice.type",
    ),
    (
        "choice_undeclared",
        {"tools": [TIME], "tool_choice": {"type": "function", "name": "nope"}},
        "tool_choice.name",
    ),
    ("item_reference", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ("computer_call_item", {"input": [{"type": "computer_call", "id": "c"}]}, "input[0].type"),
    (
        "output_without_call",
        {"input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"}]},
        "input[0].call_id",
    ),
    (
        "image_output",
        {
            "input": [
                CALL_ITEM,
                {
                    "type": "function_call_output",
                    "call_id": "call_1",
                    "output": [{"type": "input_image", "image_url": "data:image/png;base64,AA"}],
                },
            ]
        },
        "input[1].output[0].type",
    ),
    ("bad_arguments", {"input": [{**CALL_ITEM, "arguments": "[1]"}]}, "input[0].arguments"),
    (
        "image_file_id",
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
        "input[0].content[0].file_id",
    ),
    (
        "unknown_part",
        {"input": [{"role": "user", "content": [{"type": "text", "text": "chat-style"}]}]},
        "input[0].content[0].type",
    ),
    (
        "image_in_system",
        {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "x"}]}]},
        "input[0].content[0].type",
    ),
    ("tool_role", {"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ("empty_input", {"input": []}, "input"),
    ("only_instructions", {"input": [{"role": "system", "content": "x"}]}, "input"),
    ("effort", {"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ("summary", {"reasoning": {"summary": "verbose"}}, "reasoning.summary"),
    (
        "effort_and_google",
        {"reasoning": {"effort": "low"}, "google": {"thinking_config": {"thinking_budget": 0}}},
        "reasoning.effort",
    ),
    (
        "schema_name",
        {"text": {"format": {"type": "json_schema", "schema": {}}}},
        "text.format.name",
    ),
    ("format_type", {"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ("text_key", {"text": {"colour": "red"}}, "text.colour"),
    ("max_output_tokens", {"max_output_tokens": 0}, "max_output_tokens"),
    ("temperature", {"temperature": 3}, "temperature"),
    ("metadata_value", {"metadata": {"n": 1}}, "metadata.n"),
]


@pytest.mark.parametrize(("body", "param"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_request_names_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as err:
        call(**body)
    assert err.value.param == param and err.value.status_code == 400


def test_refused_hosted_tool_says_why() -> None:
    with pytest.raises(BadRequest, match="vector stores live at OpenAI"):
        call(tools=[{"type": "file_search"}])
    with pytest.raises(BadRequest, match="send the whole conversation in 'input'"):
        call(previous_response_id="resp_1")


# --- replies -------------------------------------------------------------------------------------


def usage_md(prompt: int, output: int, thoughts: int = 0, cached: int = 0) -> dict[str, Any]:
    md = {"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": 0}
    if thoughts:
        md["thoughtsTokenCount"] = thoughts
    if cached:
        md["cachedContentTokenCount"] = cached
    return md


def reply(parts: list[dict[str, Any]], finish: str = "STOP", **candidate: Any) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish, **candidate}
        ],
        "usageMetadata": usage_md(12, 5, thoughts=7, cached=4),
    }


def respond(gemini: dict[str, Any], c: ResponsesCall | None = None, **kw: Any) -> Response:
    body = gemini_reply_to_response(
        gemini,
        c or call(),
        model=MODEL,
        response_id="resp_1",
        created_at=1700000000,
        ids=ids(),
        **kw,
    )
    # Through JSON, as a client gets it, and into the SDK's own model.
    return Response.model_validate(orjson.loads(orjson.dumps(body)))


def test_text_reply() -> None:
    r = respond(reply([{"text": "Hello "}, {"text": "there"}]))
    assert (r.id, r.object, r.status, r.model, r.created_at) == (
        "resp_1",
        "response",
        "completed",
        MODEL,
        1700000000,
    )
    assert r.output_text == "Hello there"
    [item] = r.output
    assert item.type == "message" and item.id == "msg_1" and item.status == "completed"
    u = r.usage
    assert u is not None
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (12, 5 + 7, 24)
    assert u.input_tokens_details.cached_tokens == 4
    assert u.output_tokens_details.reasoning_tokens == 7
    assert r.incomplete_details is None and r.error is None


def test_reply_echoes_the_request() -> None:
    c = call(
        instructions="Be brief.", tools=[WEATHER], tool_choice="required", temperature=0.5,
        top_p=0.9, max_output_tokens=99, metadata={"k": "v"}, parallel_tool_calls=False,
        reasoning={"effort": "low"}, text={"format": {"type": "json_object"}}, user="u",
    )  # fmt: skip
    r = respond(reply([{"text": "{}"}]), c)
    assert (r.instructions, r.tool_choice, r.temperature, r.top_p, r.max_output_tokens) == (
        "Be brief.", "required", 0.5, 0.9, 99,
    )  # fmt: skip
    assert r.metadata == {"k": "v"} and r.parallel_tool_calls is False and r.user == "u"
    assert [t.type for t in r.tools] == ["function"] and r.tools[0].name == "get_weather"  # type: ignore[union-attr]
    assert r.reasoning is not None and r.reasoning.effort == "low"
    assert r.text is not None and r.text.format is not None and r.text.format.type == "json_object"


def test_function_call_reply_carries_signature_in_call_id() -> None:
    r = respond(
        reply(
            [
                {"text": "Let me check."},
                {**FC_PART, "thoughtSignature": SIGNATURE},
                {"functionCall": {"name": "get_time", "id": "g-1"}},
            ]
        )
    )
    message, weather, time = r.output
    assert (
        message.type == "message"
        and weather.type == "function_call"
        and time.type == "function_call"
    )
    assert (weather.id, weather.name, weather.arguments, weather.status) == (
        "fc_2", "get_weather", '{"city":"Paris"}', "completed",
    )  # fmt: skip
    assert decode_signature(weather.call_id) == SIGNATURE
    assert time.call_id == "g-1" and time.arguments == "{}"


def test_thoughts_become_a_reasoning_item() -> None:
    r = respond(reply([{"text": "Thinking about it", "thought": True}, {"text": "Answer"}]))
    reasoning, message = r.output
    assert message.type == "message"
    assert reasoning.type == "reasoning" and [s.text for s in reasoning.summary] == [
        "Thinking about it"
    ]
    assert r.output_text == "Answer"


@pytest.mark.parametrize(
    ("gemini", "status", "reason"),
    [
        (reply([{"text": "cut"}], "MAX_TOKENS"), "incomplete", "max_output_tokens"),
        (reply([{"text": "x"}], "SAFETY"), "incomplete", "content_filter"),
        (
            {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage_md(3, 0)},
            "incomplete",
            "content_filter",
        ),
        (reply([{"text": "x"}], "OTHER"), "completed", None),
        ({"candidates": []}, "completed", None),
    ],
)
def test_status(gemini: dict[str, Any], status: str, reason: str | None) -> None:
    r = respond(gemini)
    assert r.status == status
    assert (r.incomplete_details.reason if r.incomplete_details else None) == reason
    assert all(getattr(i, "status", status) in (status, "completed") for i in r.output)


GROUNDING = {
    "webSearchQueries": ["capital of France"],
    "groundingChunks": [
        {"web": {"uri": "https://a.example/paris", "title": "a.example"}},
        {"web": {"uri": "https://b.example/fr", "title": "b.example"}},
    ],
    "groundingSupports": [
        {
            "segment": {"startIndex": 0, "endIndex": 25, "text": "Paris is the capital."},
            "groundingChunkIndices": [0, 1],
        },
        {"segment": {"text": "not in the text"}, "groundingChunkIndices": [0]},
    ],
}


def test_web_search_grounding_becomes_search_call_and_citations() -> None:
    c = call(tools=[{"type": "web_search"}])
    r = respond(reply([{"text": "Yes. Paris is the capital."}], groundingMetadata=GROUNDING), c)
    search, message = r.output
    assert search.type == "web_search_call" and search.status == "completed"
    assert search.action.type == "search" and search.action.query == "capital of France"
    assert message.type == "message"
    notes = message.content[0].annotations  # type: ignore[union-attr]
    assert [(n.start_index, n.end_index, n.url) for n in notes] == [  # type: ignore[union-attr]
        (5, 26, "https://a.example/paris"),
        (5, 26, "https://b.example/fr"),
    ]
    assert r.output_text[5:26] == "Paris is the capital."
    # Without the search tool, grounding metadata is not reported.
    assert [
        i.type for i in respond(reply([{"text": "x"}], groundingMetadata=GROUNDING)).output
    ] == ["message"]


def test_cost_is_a_positional_json_number() -> None:
    body = gemini_reply_to_response(
        reply([{"text": "x"}]),
        call(),
        model=MODEL,
        response_id="r",
        created_at=1,
        cost=Decimal("3.000E-7"),
    )
    raw = orjson.dumps(body)
    assert b'"cost":0.0000003000' in raw
    assert Response.model_validate(orjson.loads(raw)).usage.model_extra == {"cost": 3e-7}  # type: ignore[union-attr]


def test_conversation_after_continues_with_previous_response_id() -> None:
    first = call(input="Weather?", tools=[WEATHER], instructions="Be brief.")
    gemini = reply([{**FC_PART, "thoughtSignature": SIGNATURE}])
    response = gemini_reply_to_response(
        gemini, first, model=MODEL, response_id="resp_1", created_at=1, ids=ids()
    )
    stored = conversation_after(first, gemini, response)
    call_id = response["output"][0]["call_id"]
    follow = responses_request_to_gemini(
        {
            "model": MODEL,
            "previous_response_id": "resp_1",
            "input": [{"type": "function_call_output", "call_id": call_id, "output": "sunny"}],
        },
        history=stored,
    )
    assert follow.request["contents"] == [
        user("Weather?"),
        {"role": "model", "parts": [{**FC_PART, "thoughtSignature": SIGNATURE}]},
        {"role": "user", "parts": [response_part("get_weather", {"result": "sunny"})]},
    ]
    assert "systemInstruction" not in follow.request  # instructions are not carried over
    assert stored.contents[0] == user("Weather?") and isinstance(stored, Conversation)


# --- streaming -----------------------------------------------------------------------------------

EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def chunk(
    parts: list[dict[str, Any]],
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    **candidate: Any,
) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, **candidate}
    if finish:
        cand["finishReason"] = finish
    event: dict[str, Any] = {"candidates": [cand]}
    if usage:
        event["usageMetadata"] = usage
    return event


def translate(
    events: list[dict[str, Any]], c: ResponsesCall | None = None, cost: Decimal | None = None
) -> list[dict[str, Any]]:
    t = ResponsesStreamTranslator(
        c or call(stream=True), model=MODEL, response_id="resp_1", created_at=1, ids=ids()
    )
    out = t.start()
    for e in events:
        out.extend(t.feed(e))
    out.extend(t.finish(cost))
    assert t.finish() == []  # idempotent
    return out


def accumulate(events: list[dict[str, Any]]) -> Any:
    """Run the events through the SDK exactly as ``responses.stream()`` does; the final
    response is what ``get_final_response()`` returns."""
    state: ResponseStreamState[Any] = ResponseStreamState(
        input_tools=openai.omit, text_format=openai.omit
    )
    for raw in events:
        state.handle_event(EVENT.validate_python(orjson.loads(orjson.dumps(raw))))
    return state._completed_response


TEXT_STREAM = [
    chunk([{"text": "Hel"}], usage=usage_md(12, 1)),
    chunk([{"text": "lo"}], usage=usage_md(12, 2)),
    chunk([{"text": "!"}], "STOP", usage=usage_md(12, 3, thoughts=9)),
]


def test_text_stream_event_order_and_final_response() -> None:
    events = translate(TEXT_STREAM)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == [
        "Hel",
        "lo",
        "!",
    ]
    final = accumulate(events)
    assert final.output_text == "Hello!" and final.status == "completed"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 3 + 9)  # the last usage
    assert final.usage.output_tokens_details.reasoning_tokens == 9


def test_tool_call_stream() -> None:
    events = translate(
        [
            chunk([{"text": "Checking."}]),
            chunk(
                [
                    {**FC_PART, "thoughtSignature": SIGNATURE},
                    {"functionCall": {"name": "get_time"}},
                ],
                "STOP",
            ),
        ]
    )
    kinds = [e["type"] for e in events]
    assert kinds.count("response.function_call_arguments.delta") == 2
    assert kinds.index("response.output_item.done") < kinds.index(
        "response.function_call_arguments.delta"
    )
    final = accumulate(events)
    message, weather, time = final.output
    assert message.type == "message" and final.output_text == "Checking."
    assert weather.type == "function_call" and weather.arguments == '{"city":"Paris"}'
    assert decode_signature(weather.call_id) == SIGNATURE and time.name == "get_time"
    assert [o["output_index"] for o in events if o["type"] == "response.output_item.added"] == [
        0,
        1,
        2,
    ]


def test_reasoning_summary_stream() -> None:
    events = translate(
        [
            chunk([{"text": "Let me think", "thought": True}]),
            chunk([{"text": " more", "thought": True}, {"text": "42"}], "STOP"),
        ],
        call(stream=True, reasoning={"summary": "auto"}),
    )
    kinds = [e["type"] for e in events]
    assert kinds[2:5] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
    ]
    final = accumulate(events)
    reasoning, message = final.output
    assert message.type == "message"
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Let me think more"
    assert final.output_text == "42"


def test_max_tokens_stream_ends_incomplete() -> None:
    events = translate([chunk([{"text": "cut"}], "MAX_TOKENS", usage=usage_md(3, 1))])
    assert events[-1]["type"] == "response.incomplete"
    response = EVENT.validate_python(events[-1]).response
    assert (
        response.status == "incomplete"
        and response.incomplete_details.reason == "max_output_tokens"
    )


def test_stream_web_search_and_cost() -> None:
    c = call(stream=True, tools=[{"type": "web_search"}])
    events = translate(
        [
            chunk(
                [{"text": "Yes. Paris is the capital."}],
                "STOP",
                groundingMetadata=GROUNDING,
                usage=usage_md(5, 5),
            )
        ],
        c,
        cost=Decimal("0.0000120000"),
    )
    final = accumulate(events)
    message, search = final.output
    assert search.type == "web_search_call" and search.action.query == "capital of France"
    assert [n.url for n in message.content[0].annotations] == [
        "https://a.example/paris",
        "https://b.example/fr",
    ]
    assert b'"cost":0.0000120000' in orjson.dumps(events[-1])


def test_error_midway_fails_the_response_and_keeps_usage() -> None:
    t = ResponsesStreamTranslator(
        call(stream=True), model=MODEL, response_id="resp_1", created_at=1, ids=ids()
    )
    events = t.start() + t.feed(chunk([{"text": "partial"}], usage=usage_md(7, 1)))
    with pytest.raises(UpstreamStreamError) as err:
        t.feed({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    events += t.fail(err.value.body["error"])
    assert t.fail({}) == [] and t.finish() == []
    failed = EVENT.validate_python(orjson.loads(orjson.dumps(events[-1])))
    assert failed.type == "response.failed"
    assert failed.response.status == "failed" and failed.response.error.code == "server_error"
    assert t.usage is not None and t.usage.prompt_tokens == 7
    state: ResponseStreamState[Any] = ResponseStreamState(
        input_tools=openai.omit, text_format=openai.omit
    )
    for raw in events:
        state.handle_event(EVENT.validate_python(orjson.loads(orjson.dumps(raw))))


def test_empty_stream_completes_with_no_output() -> None:
    final = accumulate(translate([{"usageMetadata": usage_md(3, 0)}]))
    assert final.output == [] and final.status == "completed" and final.usage.input_tokens == 3


# --- the openai SDK over HTTP (a mock transport serving what the route will send) ----------------


def sdk(handler: Any) -> openai.OpenAI:
    transport = httpx2.MockTransport(handler)
    return openai.OpenAI(
        base_url="http://proxy.test/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def serve(events: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None) -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/responses"
        if events is not None:
            content = b"".join(encode_event(e) for e in events)
            return httpx2.Response(
                200, content=content, headers={"content-type": "text/event-stream"}
            )
        return httpx2.Response(200, content=orjson.dumps(body))

    return handler


def test_sdk_stream_helper_accepts_the_events() -> None:
    client = sdk(serve(events=translate(TEXT_STREAM)))
    with client.responses.stream(model=MODEL, input="Hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hel", "lo", "!"] and final.output_text == "Hello!"
    raw: Iterator[Any] = client.responses.create(model=MODEL, input="Hi", stream=True)
    assert [e.type for e in raw][-1] == "response.completed"


def test_sdk_parse_reads_json_schema_output() -> None:
    class City(pydantic.BaseModel):
        name: str

    c = call(
        text={"format": {"type": "json_schema", "name": "City", "schema": City.model_json_schema()}}
    )
    body = gemini_reply_to_response(
        reply([{"text": '{"name": "Paris"}'}]), c, model=MODEL, response_id="r", created_at=1
    )
    parsed = sdk(serve(body=body)).responses.parse(model=MODEL, input="Capital?", text_format=City)
    assert parsed.output_parsed == City(name="Paris")
