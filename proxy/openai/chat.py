"""Chat completions: OpenAI request → Gemini ``generateContent`` body; Gemini reply → OpenAI.

Pure functions over plain data. Every parameter OpenAI's API defines is either translated,
dropped on purpose, or refused with a 400 naming it; the three lists are in params.py and
docs/openai-compat.md. Unknown parameters are refused as OpenAI itself does.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson

from proxy.errors import BadRequest
from proxy.metering.ledger_event import END_USER_MAX_LENGTH
from proxy.openai.messages import messages_to_gemini
from proxy.openai.params import check_parameters, generation_config, google_extension
from proxy.openai.thinking import is_gemini3, thinking_config
from proxy.openai.tool_ids import encode_tool_call_id, new_tool_call_id
from proxy.openai.tools import tools_to_gemini
from proxy.openai.validate import (
    opt_bool,
    opt_int,
    opt_object,
    opt_str,
    opt_text,
    req_object,
    req_str,
)
from proxy.usage import Usage, openai_usage_counts
from proxy.wire.gemini import GenerateContentRequest, ThinkingConfig
from proxy.wire.openai import (
    ChatCompletion,
    ChatCompletionMessage,
    Choice,
    CompletionUsage,
    FinishReason,
    ToolCall,
)

__all__ = [
    "ChatCall",
    "chat_request_to_gemini",
    "chat_usage",
    "completion_usage",
    "finish_reason",
    "function_call_fields",
    "gemini_reply_to_chat",
    "google_options",
    "new_completion_id",
    "split_parts",
]

_FILTER_REASONS: Final = frozenset(
    {
        "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ChatCall:
    model: str  # as the client gave it; the routes normalise it
    stream: bool
    include_usage: bool  # stream_options.include_usage (only when streaming)
    user: str | None  # end user for the ledger (`user`, else `safety_identifier`); never sent
    n: int
    request: dict[str, Any]  # the generateContent / streamGenerateContent body (camelCase)


def new_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def chat_request_to_gemini(body: Any) -> ChatCall:
    """Validate an OpenAI chat request and build the Gemini body; BadRequest names the field."""
    obj = req_object(body, "body")
    check_parameters(obj)
    model = req_str(obj.get("model"), "model", non_empty=True)
    stream = bool(opt_bool(obj.get("stream"), "stream"))
    options = opt_object(obj.get("stream_options"), "stream_options") or {}
    include_usage = bool(opt_bool(options.get("include_usage"), "stream_options.include_usage"))
    user = opt_text(obj.get("user"), "user", max_length=END_USER_MAX_LENGTH) or opt_text(
        obj.get("safety_identifier"), "safety_identifier", max_length=END_USER_MAX_LENGTH
    )
    n = opt_int(obj.get("n"), "n", minimum=1) or 1

    contents, system = messages_to_gemini(obj.get("messages"), gemini3=is_gemini3(model))
    request: GenerateContentRequest = {"contents": contents}
    if system is not None:
        request["systemInstruction"] = system
    tools, tool_config = tools_to_gemini(obj.get("tools"), obj.get("tool_choice"))
    if tools:
        request["tools"] = tools
    if tool_config is not None:
        request["toolConfig"] = tool_config
    config = generation_config(obj, n)
    thinking, cached = google_options(obj, obj.get("reasoning_effort"), model)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        request["generationConfig"] = config
    if cached:
        request["cachedContent"] = cached
    return ChatCall(
        model=model,
        stream=stream,
        include_usage=stream and include_usage,
        user=user,
        n=n,
        # TypedDicts are plain dicts at run time; the public API promises dict[str, Any].
        request=cast(dict[str, Any], request),
    )


def google_options(
    body: Mapping[str, Any], effort: Any, model: str, effort_param: str = "reasoning_effort"
) -> tuple[ThinkingConfig | None, str | None]:
    """The ``thinkingConfig`` (from the effort or Google's ``thinking_config``) and the
    ``cachedContent`` of Google's compat extension; any other key in it is a 400."""
    google, google_param = google_extension(body)
    for key in google:
        if key not in ("thinking_config", "cached_content"):
            raise BadRequest(
                f"Unrecognized parameter '{google_param}.{key}'.",
                param=f"{google_param}.{key}",
                code="unknown_parameter",
            )
    thinking = thinking_config(
        effort, google.get("thinking_config"), f"{google_param}.thinking_config", model,
        effort_param,
    )  # fmt: skip
    cached = opt_str(google.get("cached_content"), f"{google_param}.cached_content")
    return thinking, cached or None


# --- replies -------------------------------------------------------------------------------------


def split_parts(
    parts: Any, new_call_id: Callable[[], str] = new_tool_call_id
) -> tuple[list[str], list[ToolCall]]:
    """Visible texts and tool calls of a candidate's parts; thoughts and other kinds dropped."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, Mapping):
            continue
        fc = part.get("functionCall")
        if isinstance(fc, Mapping):
            calls.append(_tool_call(fc, part.get("thoughtSignature"), new_call_id))
        elif isinstance(part.get("text"), str) and part["text"] and not part.get("thought"):
            texts.append(part["text"])
    return texts, calls


def function_call_fields(
    fc: Mapping[str, Any], signature: Any, new_call_id: Callable[[], str]
) -> tuple[str, str, str]:
    """``(call id carrying the thought signature, name, arguments as JSON text)`` of a
    ``functionCall`` part."""
    sig = signature if isinstance(signature, str) and signature else None
    gemini_id = fc.get("id")
    base = gemini_id if isinstance(gemini_id, str) and gemini_id else new_call_id()
    args = fc.get("args")
    arguments = orjson.dumps(args if isinstance(args, Mapping) else {}).decode()
    return encode_tool_call_id(base, sig), str(fc.get("name") or ""), arguments


def _tool_call(fc: Mapping[str, Any], signature: Any, new_call_id: Callable[[], str]) -> ToolCall:
    call_id, name, arguments = function_call_fields(fc, signature, new_call_id)
    call: ToolCall = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    sig = signature if isinstance(signature, str) and signature else None
    if sig:
        call["extra_content"] = {"google": {"thought_signature": sig}}
    return call


def finish_reason(reason: Any, has_tool_calls: bool) -> FinishReason:
    """OpenAI's finish_reason for a Gemini candidate's ``finishReason``."""
    if has_tool_calls:
        return "tool_calls"
    if reason == "MAX_TOKENS":
        return "length"
    if isinstance(reason, str) and reason in _FILTER_REASONS:
        return "content_filter"
    # STOP, OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, unknown: the model stopped.
    return "stop"


def chat_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object for a call's :class:`Usage`."""
    return cast(dict[str, Any], completion_usage(usage))


def completion_usage(usage: Usage) -> CompletionUsage:
    """OpenAI's usage object, each count summed from the token kinds that map to it
    (proxy/usage.py): tool-use prompt tokens count as prompt so the sum holds; completion
    tokens are visible output plus thinking, as OpenAI counts reasoning."""
    c = openai_usage_counts(usage, "chat")
    prompt, completion = c["prompt_tokens"], c["completion_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": c["prompt_tokens_details.cached_tokens"],
            "audio_tokens": c["prompt_tokens_details.audio_tokens"],
        },
        "completion_tokens_details": {
            "reasoning_tokens": c["completion_tokens_details.reasoning_tokens"],
            "audio_tokens": c["completion_tokens_details.audio_tokens"],
        },
    }


def _choice(position: int, candidate: Mapping[str, Any], new_call_id: Callable[[], str]) -> Choice:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    texts, calls = split_parts(parts, new_call_id)
    message: ChatCompletionMessage = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    index = candidate.get("index")
    return {
        "index": index if isinstance(index, int) and not isinstance(index, bool) else position,
        "message": message,
        "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
        "logprobs": None,
    }


def gemini_reply_to_chat(
    reply: Mapping[str, Any],
    *,
    model: str,
    completion_id: str,
    created: int,
    new_call_id: Callable[[], str] = new_tool_call_id,
) -> dict[str, Any]:
    """A ``chat.completion`` for a generateContent reply. A reply without candidates (prompt
    blocked) gives one choice with ``content: null`` and ``finish_reason: "content_filter"``."""
    candidates = reply.get("candidates")
    choices = [
        _choice(i, c, new_call_id)
        for i, c in enumerate(candidates if isinstance(candidates, list) else [])
        if isinstance(c, Mapping)
    ]
    if not choices:
        feedback = reply.get("promptFeedback")
        blocked = isinstance(feedback, Mapping) and bool(feedback.get("blockReason"))
        choices = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None},
                "finish_reason": "content_filter" if blocked else "stop",
                "logprobs": None,
            }
        ]
    metadata = reply.get("usageMetadata")
    completion: ChatCompletion = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": sorted(choices, key=lambda c: c["index"]),
        "usage": completion_usage(
            Usage.from_metadata(metadata if isinstance(metadata, Mapping) else {})
        ),
    }
    return cast(dict[str, Any], completion)
