"""OpenAI chat request → Gemini body, and Gemini reply → chat.completion (pure tables)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion

from proxy.errors import BadRequest
from proxy.openai.chat import (
    ChatCall,
    chat_request_to_gemini,
    chat_usage,
    gemini_reply_to_chat,
    new_completion_id,
)
from proxy.openai.messages import DUMMY_THOUGHT_SIGNATURE
from proxy.openai.tool_ids import SEPARATOR, decode_signature
from proxy.usage import Usage

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "gemini"
SIGNATURE = "CiQBVKhc7vB1mZ3xQ0m2Hn8sZQk1oE5q9yN0cFq3n6y0xg=="


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return data


def chat(**body: Any) -> ChatCall:
    body.setdefault("model", "gemini-2.5-flash")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return chat_request_to_gemini(body)


HI = [{"role": "user", "parts": [{"text": "Hi"}]}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
WEATHER_DECL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parametersJsonSchema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}

# (id, extra request fields, expected Gemini body)
REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("plain", {}, {"contents": HI}),
    (
        "system_and_developer",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hi", "name": "ignored"},
            ]
        },
        {
            "contents": HI,
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        },
    ),
    (
        "multi_turn",
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
            ]
        },
        {
            "contents": [
                *HI,
                {"role": "model", "parts": [{"text": "Hello!"}]},
                {"role": "user", "parts": [{"text": "How are you?"}]},
            ]
        },
    ),
    (
        "sampling_params",
        {
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 100,
            "stop": "END",
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "n": 2,
            "top_k": 40,
        },
        {
            "contents": HI,
            "generationConfig": {
                "temperature": 0.2,
                "topP": 0.9,
                "topK": 40,
                "candidateCount": 2,
                "maxOutputTokens": 100,
                "stopSequences": ["END"],
                "seed": 7,
                "presencePenalty": 0.5,
                "frequencyPenalty": -0.5,
            },
        },
    ),
    (
        "max_completion_tokens_wins",
        {"max_tokens": 10, "max_completion_tokens": 20, "stop": ["a", "b"], "n": 1},
        {"contents": HI, "generationConfig": {"maxOutputTokens": 20, "stopSequences": ["a", "b"]}},
    ),
    (
        "nulls_are_unset",
        {"temperature": None, "stop": None, "tools": None, "response_format": None, "n": None},
        {"contents": HI},
    ),
    (
        "json_object",
        {"response_format": {"type": "json_object"}},
        {"contents": HI, "generationConfig": {"responseMimeType": "application/json"}},
    ),
    (
        "json_schema",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "strict": True,
                    "schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
                },
            }
        },
        {
            "contents": HI,
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": WEATHER_DECL["parametersJsonSchema"],
            },
        },
    ),
    ("text_format", {"response_format": {"type": "text"}}, {"contents": HI}),
    (
        "tools_auto_default",
        {"tools": [WEATHER_TOOL]},
        {"contents": HI, "tools": [{"functionDeclarations": [WEATHER_DECL]}]},
    ),
    (
        "tool_choice_none",
        {"tools": [WEATHER_TOOL], "tool_choice": "none"},
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [WEATHER_DECL]}],
            "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
        },
    ),
    (
        "tool_choice_required",
        {"tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": "required"},
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [WEATHER_DECL, {"name": "get_time"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        },
    ),
    (
        "tool_choice_named",
        {
            "tools": [WEATHER_TOOL, TIME_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        },
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [WEATHER_DECL, {"name": "get_time"}]}],
            "toolConfig": {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
            },
        },
    ),
    (
        "allowed_tools_auto",
        {
            "tools": [WEATHER_TOOL, TIME_TOOL],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            },
        },
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [{"name": "get_time"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        },
    ),
    (
        "allowed_tools_required",
        {
            "tools": [WEATHER_TOOL, TIME_TOOL],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            },
        },
        {
            "contents": HI,
            "tools": [{"functionDeclarations": [WEATHER_DECL, {"name": "get_time"}]}],
            "toolConfig": {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
            },
        },
    ),
    (
        "image_audio_file_parts",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x.test/a/cat.webp?s=1", "detail": "low"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://x.test/img"}},
                        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
                        {
                            "type": "file",
                            "file": {"file_data": "data:application/pdf;base64,JVBE"},
                        },
                        {"type": "file", "file": {"file_data": "JVBE", "filename": "a.PDF"}},
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
                                "fileUri": "https://x.test/a/cat.webp?s=1",
                            }
                        },
                        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/img"}},
                        {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
                        {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},
                        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
                        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
                    ],
                }
            ]
        },
    ),
    (
        "parallel_tool_round_trip",
        {
            "messages": [
                {"role": "user", "content": "Weather in Hanoi and time?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Hanoi"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 31}'},
                {"role": "tool", "tool_call_id": "call_2", "content": "10:00"},
                {"role": "user", "content": "Thanks"},
            ]
        },
        {
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Hanoi and time?"}]},
                {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Hanoi"}}},
                        {"functionCall": {"name": "get_time", "args": {}}},
                    ],
                },
                {
                    "role": "user",
                    "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {"temp": 31}}},
                        {"functionResponse": {"name": "get_time", "response": {"result": "10:00"}}},
                    ],
                },
                {"role": "user", "parts": [{"text": "Thanks"}]},
            ]
        },
    ),
    (
        "google_extension",
        {
            "extra_body": {
                "google": {
                    "thinking_config": {"thinking_budget": 512, "include_thoughts": True},
                    "cached_content": "cachedContents/abc",
                }
            }
        },
        {
            "contents": HI,
            "generationConfig": {
                "thinkingConfig": {"thinkingBudget": 512, "includeThoughts": True}
            },
            "cachedContent": "cachedContents/abc",
        },
    ),
    (
        "dropped_parameters",
        {
            "parallel_tool_calls": False,
            "store": True,
            "metadata": {"a": "b"},
            "service_tier": "auto",
            "prediction": {"type": "content", "content": "x"},
            "prompt_cache_key": "k",
            "verbosity": "low",
            "logprobs": False,
            "logit_bias": {},
            "modalities": ["text"],
        },
        {"contents": HI},
    ),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [c[1:] for c in REQUESTS], ids=[c[0] for c in REQUESTS]
)
def test_request_translation(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat(**extra).request == expected


# (id, model, reasoning_effort, expected thinkingConfig)
EFFORTS = [
    ("flash_none", "gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ("flash_minimal", "gemini-2.5-flash", "minimal", {"thinkingBudget": 0}),
    ("flash_low", "gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
    ("flash_medium", "models/gemini-2.5-flash", "medium", {"thinkingBudget": 8192}),
    ("flash_high", "gemini-2.5-flash", "high", {"thinkingBudget": 24576}),
    ("pro_none_keeps_minimum", "gemini-2.5-pro", "none", {"thinkingBudget": 128}),
    ("g3_minimal", "gemini-3-pro-preview", "minimal", {"thinkingLevel": "low"}),
    ("g3_low", "gemini-3-pro-preview", "low", {"thinkingLevel": "low"}),
    ("g3_medium", "gemini-3-flash-preview", "medium", {"thinkingLevel": "high"}),
    ("g3_high", "models/gemini-3-pro-preview", "high", {"thinkingLevel": "high"}),
]


@pytest.mark.parametrize(
    ("model", "effort", "expected"), [e[1:] for e in EFFORTS], ids=[e[0] for e in EFFORTS]
)
def test_reasoning_effort(model: str, effort: str, expected: dict[str, Any]) -> None:
    call = chat(model=model, reasoning_effort=effort)
    assert call.request["generationConfig"]["thinkingConfig"] == expected


def test_call_fields() -> None:
    call = chat(stream=True, stream_options={"include_usage": True}, user="u-1", n=3)
    assert (call.model, call.stream, call.include_usage, call.user, call.n) == (
        "gemini-2.5-flash",
        True,
        True,
        "u-1",
        3,
    )
    assert chat(stream_options={"include_usage": True}).include_usage is False  # not streaming
    assert chat(safety_identifier="s-1").user == "s-1"
    assert chat().user is None


def test_request_does_not_alias_client_schema() -> None:
    body = {"tools": [WEATHER_TOOL]}
    chat(**body)
    assert "$schema" in WEATHER_TOOL["function"]["parameters"]  # type: ignore[index]


# (id, body overrides, param named by the 400)
BAD_REQUESTS: list[tuple[str, Any, str | None]] = [
    ("not_an_object", ["x"], "body"),
    ("missing_model", {"model": None}, "model"),
    ("empty_model", {"model": ""}, "model"),
    ("missing_messages", {"messages": None}, "messages"),
    ("empty_messages", {"messages": []}, "messages"),
    ("only_system", {"messages": [{"role": "system", "content": "x"}]}, "messages"),
    ("message_not_object", {"messages": ["hi"]}, "messages[0]"),
    ("bad_role", {"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
    (
        "legacy_function_role",
        {"messages": [{"role": "function", "name": "f", "content": "x"}]},
        "messages[0].role",
    ),
    ("content_number", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (
        "system_image",
        {
            "messages": [
                {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "user", "content": "x"},
            ]
        },
        "messages[0].content[0].type",
    ),
    (
        "unknown_part",
        {"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
        "messages[0].content[0].type",
    ),
    (
        "image_ftp",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}],
                }
            ]
        },
        "messages[0].content[0].image_url.url",
    ),
    (
        "image_bad_data_uri",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}],
                }
            ]
        },
        "messages[0].content[0].image_url.url",
    ),
    (
        "audio_format",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "x", "format": "m4a"}}
                    ],
                }
            ]
        },
        "messages[0].content[0].input_audio.format",
    ),
    (
        "file_id",
        {
            "messages": [
                {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}
            ]
        },
        "messages[0].content[0].file.file_id",
    ),
    (
        "file_no_type",
        {
            "messages": [
                {"role": "user", "content": [{"type": "file", "file": {"file_data": "JVBE"}}]}
            ]
        },
        "messages[0].content[0].file.file_data",
    ),
    (
        "bad_arguments",
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{oops"},
                        }
                    ],
                },
            ]
        },
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "array_arguments",
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "[1]"},
                        }
                    ],
                },
            ]
        },
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "tool_call_no_id",
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
            ]
        },
        "messages[1].tool_calls[0].id",
    ),
    (
        "orphan_tool_message",
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "nope", "content": "1"},
            ]
        },
        "messages[1].tool_call_id",
    ),
    (
        "legacy_assistant_function_call",
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            ]
        },
        "messages[1].function_call",
    ),
    ("temperature_type", {"temperature": "hot"}, "temperature"),
    ("temperature_range", {"temperature": 3}, "temperature"),
    ("top_p_range", {"top_p": 1.5}, "top_p"),
    ("penalty_range", {"presence_penalty": -3}, "presence_penalty"),
    ("n_zero", {"n": 0}, "n"),
    ("max_tokens_bool", {"max_tokens": True}, "max_tokens"),
    ("max_tokens_float", {"max_completion_tokens": 1.5}, "max_completion_tokens"),
    ("seed_string", {"seed": "1"}, "seed"),
    ("stop_item", {"stop": ["a", 1]}, "stop[1]"),
    ("stream_type", {"stream": "yes"}, "stream"),
    (
        "include_usage_type",
        {"stream": True, "stream_options": {"include_usage": 1}},
        "stream_options.include_usage",
    ),
    ("user_type", {"user": 5}, "user"),
    ("unknown_parameter", {"frobnicate": 1}, "frobnicate"),
    ("logit_bias", {"logit_bias": {"50256": -100}}, "logit_bias"),
    ("logprobs", {"logprobs": True}, "logprobs"),
    ("top_logprobs", {"top_logprobs": 3}, "top_logprobs"),
    ("audio_output", {"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ("audio_modality", {"modalities": ["text", "audio"]}, "modalities"),
    ("legacy_functions", {"functions": [{"name": "f"}]}, "functions"),
    ("legacy_function_call", {"function_call": "auto"}, "function_call"),
    ("web_search", {"web_search_options": {"search_context_size": "low"}}, "web_search_options"),
    ("moderation", {"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
    ("custom_tool", {"tools": [{"type": "custom", "custom": {"name": "g"}}]}, "tools[0].type"),
    ("tool_no_name", {"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    (
        "tool_params_not_object",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
        "tools[0].function.parameters",
    ),
    ("duplicate_tool", {"tools": [TIME_TOOL, TIME_TOOL]}, "tools[1].function.name"),
    ("required_without_tools", {"tool_choice": "required"}, "tool_choice"),
    ("tool_choice_value", {"tools": [TIME_TOOL], "tool_choice": "any"}, "tool_choice"),
    (
        "tool_choice_unknown_name",
        {"tools": [TIME_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice.function.name",
    ),
    (
        "tool_choice_custom",
        {"tools": [TIME_TOOL], "tool_choice": {"type": "custom", "custom": {"name": "g"}}},
        "tool_choice.type",
    ),
    ("response_format_type", {"response_format": {"type": "xml"}}, "response_format.type"),
    (
        "json_schema_no_name",
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        "response_format.json_schema.name",
    ),
    (
        "json_schema_schema_type",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": []}}},
        "response_format.json_schema.schema",
    ),
    ("reasoning_effort_value", {"reasoning_effort": "extreme"}, "reasoning_effort"),
    (
        "effort_and_thinking_config",
        {"reasoning_effort": "low", "google": {"thinking_config": {"thinking_budget": 1}}},
        "reasoning_effort",
    ),
    ("google_unknown_key", {"google": {"safety": 1}}, "google.safety"),
    (
        "thinking_config_unknown_key",
        {"google": {"thinking_config": {"budget": 1}}},
        "google.thinking_config.budget",
    ),
    (
        "thinking_level_value",
        {"google": {"thinking_config": {"thinking_level": "huge"}}},
        "google.thinking_config.thinking_level",
    ),
    ("extra_body_unknown", {"extra_body": {"openai": {}}}, "extra_body.openai"),
]


@pytest.mark.parametrize(
    ("override", "param"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_request_names_param(override: Any, param: str) -> None:
    if isinstance(override, dict):
        body: Any = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hi"}]}
        body.update(override)
        body = {k: v for k, v in body.items() if v is not None}
    else:
        body = override
    with pytest.raises(BadRequest) as info:
        chat_request_to_gemini(body)
    envelope = info.value.openai_body()["error"]
    assert (info.value.status_code, envelope["param"], envelope["type"]) == (
        400,
        param,
        "invalid_request_error",
    )
    assert envelope["message"]


# --- replies -------------------------------------------------------------------------------------

_counter = itertools.count()


def fixed_ids() -> str:
    return f"call_{next(_counter)}"


def reply(data: dict[str, Any], model: str = "gemini-2.5-flash") -> ChatCompletion:
    out = gemini_reply_to_chat(data, model=model, completion_id="chatcmpl-1", created=1700000000)
    return ChatCompletion.model_validate(out)


def test_reply_text_with_thinking_usage() -> None:
    completion = reply(fixture("generate_text.json"))
    assert (completion.id, completion.object, completion.created, completion.model) == (
        "chatcmpl-1",
        "chat.completion",
        1700000000,
        "gemini-2.5-flash",
    )
    [choice] = completion.choices
    assert choice.message.content.startswith("A proxy sits")  # type: ignore[union-attr]
    assert (choice.index, choice.finish_reason, choice.message.tool_calls) == (0, "stop", None)
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 440, 452)
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 423


def test_reply_cached_audio_usage() -> None:
    usage = reply(fixture("generate_cached_audio.json")).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5230, 155, 5385)
    assert (
        usage.prompt_tokens_details.cached_tokens,
        usage.prompt_tokens_details.audio_tokens,
    ) == (
        4096,
        4800,
    )


def test_reply_blocked_prompt_never_crashes() -> None:
    completion = reply(fixture("generate_blocked_prompt.json"))
    [choice] = completion.choices
    assert (choice.finish_reason, choice.message.content) == ("content_filter", None)
    assert completion.usage is not None and completion.usage.prompt_tokens == 9


def test_function_call_thought_signature_round_trip() -> None:
    completion = reply(fixture("generate_function_call.json"), model="gemini-3-pro-preview")
    [choice] = completion.choices
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", None)
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Hanoi", "unit": "celsius"}
    assert call.id.startswith("call_") and SEPARATOR in call.id
    assert decode_signature(call.id) == SIGNATURE
    assert call.model_extra == {"extra_content": {"google": {"thought_signature": SIGNATURE}}}

    # A client that rebuilds the assistant message from id, name and arguments only.
    assistant = {
        "role": "assistant",
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
        ],
    }
    # And one that echoes the SDK's message back, extra_content included, with its own id.
    echoed = choice.message.model_dump(exclude_none=True)
    echoed["tool_calls"][0]["id"] = "call_client_made"
    for message in (assistant, echoed):
        tool_id = message["tool_calls"][0]["id"]  # type: ignore[index]
        follow_up = chat(
            model="gemini-3-pro-preview",
            messages=[
                {"role": "user", "content": "Weather in Hanoi?"},
                message,
                {"role": "tool", "tool_call_id": tool_id, "content": "31C"},
            ],
        )
        model_turn, tool_turn = follow_up.request["contents"][1:]
        assert model_turn == {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "name": "get_weather",
                        "args": {"city": "Hanoi", "unit": "celsius"},
                    },
                    "thoughtSignature": SIGNATURE,
                }
            ],
        }
        assert tool_turn["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"result": "31C"}}}
        ]


def test_gemini3_lost_signature_gets_documented_dummy() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            ],
        },
    ]
    parts = chat(model="gemini-3-pro-preview", messages=messages).request["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in parts] == [DUMMY_THOUGHT_SIGNATURE, None]
    parts = chat(model="gemini-2.5-flash", messages=messages).request["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in parts] == [None, None]


def candidate(
    parts: list[dict[str, Any]], finish: str | None = "STOP", index: int = 0
) -> dict[str, Any]:
    out: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        out["finishReason"] = finish
    return out


# (id, candidates, expected [(content, finish_reason, tool call names)])
REPLIES: list[tuple[str, list[dict[str, Any]], list[tuple[str | None, str, list[str]]]]] = [
    (
        "thoughts_hidden",
        [candidate([{"text": "plan...", "thought": True}, {"text": "Answer"}])],
        [("Answer", "stop", [])],
    ),
    (
        "text_parts_joined",
        [candidate([{"text": "a"}, {"text": ""}, {"text": "b"}])],
        [("ab", "stop", [])],
    ),
    ("max_tokens", [candidate([{"text": "cut"}], "MAX_TOKENS")], [("cut", "length", [])]),
    ("max_tokens_all_thinking", [candidate([], "MAX_TOKENS")], [(None, "length", [])]),
    ("safety", [candidate([], "SAFETY")], [(None, "content_filter", [])]),
    ("recitation", [candidate([{"text": "x"}], "RECITATION")], [("x", "content_filter", [])]),
    ("other", [candidate([{"text": "x"}], "OTHER")], [("x", "stop", [])]),
    ("no_finish_reason", [candidate([{"text": "x"}], None)], [("x", "stop", [])]),
    ("missing_content", [{"finishReason": "SAFETY", "index": 0}], [(None, "content_filter", [])]),
    (
        "parallel_calls_with_text",
        [
            candidate(
                [
                    {"text": "Checking."},
                    {"functionCall": {"name": "a", "args": {}}},
                    {"functionCall": {"name": "b"}},
                ]
            )
        ],
        [("Checking.", "tool_calls", ["a", "b"])],
    ),
    (
        "n_candidates",
        [candidate([{"text": "two"}], index=1), candidate([{"text": "one"}], index=0)],
        [("one", "stop", []), ("two", "stop", [])],
    ),
]


@pytest.mark.parametrize(
    ("candidates", "expected"), [r[1:] for r in REPLIES], ids=[r[0] for r in REPLIES]
)
def test_reply_choices(
    candidates: list[dict[str, Any]], expected: list[tuple[str | None, str, list[str]]]
) -> None:
    completion = reply({"candidates": candidates})
    got = [
        (c.message.content, c.finish_reason, [t.function.name for t in c.message.tool_calls or []])  # type: ignore[union-attr]
        for c in completion.choices
    ]
    assert got == expected
    assert [c.index for c in completion.choices] == list(range(len(expected)))


def test_parallel_tool_call_ids_distinct_and_signature_only_where_given() -> None:
    data = {
        "candidates": [
            candidate(
                [
                    {
                        "functionCall": {"name": "a", "args": {"x": 1}},
                        "thoughtSignature": SIGNATURE,
                    },
                    {"functionCall": {"name": "b", "args": {}}},
                ]
            )
        ]
    }
    out = gemini_reply_to_chat(data, model="m", completion_id="c", created=0, new_call_id=fixed_ids)
    calls = out["choices"][0]["message"]["tool_calls"]
    assert calls[0]["id"] != calls[1]["id"]
    assert decode_signature(calls[0]["id"]) == SIGNATURE
    assert SEPARATOR not in calls[1]["id"] and "extra_content" not in calls[1]
    assert calls[0]["function"]["arguments"] == '{"x":1}'


def test_gemini_function_call_id_is_kept() -> None:
    data = {"candidates": [candidate([{"functionCall": {"id": "g-7", "name": "a", "args": {}}}])]}
    out = gemini_reply_to_chat(data, model="m", completion_id="c", created=0)
    assert out["choices"][0]["message"]["tool_calls"][0]["id"] == "g-7"


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (Usage(), (0, 0, 0, 0, 0)),
        (Usage(prompt_tokens=10, output_tokens=5, thinking_tokens=3), (10, 8, 18, 3, 0)),
        (
            Usage(prompt_tokens=10, tool_use_prompt_tokens=7, output_tokens=5, cached_tokens=4),
            (17, 5, 22, 0, 4),
        ),
    ],
    ids=["zero", "thinking_is_completion", "tool_use_is_prompt"],
)
def test_chat_usage(usage: Usage, expected: tuple[int, ...]) -> None:
    out = chat_usage(usage)
    got = (
        out["prompt_tokens"],
        out["completion_tokens"],
        out["total_tokens"],
        out["completion_tokens_details"]["reasoning_tokens"],
        out["prompt_tokens_details"]["cached_tokens"],
    )
    assert got == expected
    assert out["total_tokens"] == usage.total_tokens


def test_completion_id_shape() -> None:
    first, second = new_completion_id(), new_completion_id()
    assert first.startswith("chatcmpl-") and first != second
