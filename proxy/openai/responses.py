"""Responses API: ``POST /v1/responses`` request → Gemini ``generateContent`` body; reply → a
``response`` object. Pure functions over plain data; the streamed form is in
:mod:`proxy.openai.responses_stream`. docs/openai-compat.md has the full tables.

Input (``input``: a string, or a list of items):

- a ``user`` message (text, ``input_text``, ``input_image``, ``input_file``, ``input_audio``) →
  a user turn; an ``assistant`` message (``output_text``, ``refusal``) → a model turn;
  ``system`` / ``developer`` messages and ``instructions`` (first) → ``systemInstruction``;
- ``function_call`` (its ``call_id`` carries the thought signature) → ``functionCall`` in the
  model turn: consecutive assistant messages and calls make one turn, as Gemini produced it;
- ``function_call_output`` (text) → ``functionResponse``; consecutive ones share a turn;
- ``reasoning`` and ``web_search_call`` (this proxy's own output, replayed) are dropped;
  ``item_reference`` and every other item type are a 400 naming ``input[i].type``.

Tools: ``function`` tools as in chat, written flat. Of OpenAI's hosted tools, ``web_search`` /
``web_search_preview`` (and their dated names) become Google Search grounding, reported as a
``web_search_call`` item and ``url_citation`` annotations (``search_context_size`` and
``user_location`` dropped, ``filters.allowed_domains`` refused); every other one is a 400 that
says why (:data:`HOSTED_TOOLS`).

``tool_choice``: as chat (flat); a hosted type (``{"type": "web_search_preview"}``) turns function
calling off (Gemini cannot force a search); ``none`` also leaves the search tool out.

Other parameters: ``text.format`` → ``responseMimeType`` / ``responseJsonSchema``;
``reasoning.effort`` → ``thinkingConfig`` as chat's ``reasoning_effort``; ``reasoning.summary`` →
``includeThoughts`` (Gemini's thoughts *are* summaries), shown as a ``reasoning`` item;
``max_output_tokens``, ``temperature``, ``top_p`` → ``generationConfig``; ``user`` /
``safety_identifier`` → the ledger's end user. :data:`DROPPED_PARAMETERS` are accepted and
ignored, :data:`REFUSED_PARAMETERS` are a 400 when set.

**Stored responses.** ``store`` is accepted and nothing is stored: ``previous_response_id`` is
refused with a 400 that says to send the conversation in ``input`` (what the Agents SDK and
LangChain do by default). :class:`Conversation` and :func:`conversation_after` are the pure part
of storing: a stored response's Gemini turns (thought signatures included) plus the call ids
it answered; :func:`responses_request_to_gemini` continues one when given it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, cast

from proxy.errors import BadRequest
from proxy.formats import decimal_json
from proxy.metering.ledger_event import END_USER_MAX_LENGTH
from proxy.openai.chat import finish_reason, function_call_fields, google_options
from proxy.openai.media import file_data_part, file_url_part, image_url_part, media_part
from proxy.openai.messages import (
    fill_missing_signatures,
    function_call_part,
    function_response_part,
    text_of,
)
from proxy.openai.params import generation_config
from proxy.openai.schema import text_format_to_gemini
from proxy.openai.thinking import is_gemini3
from proxy.openai.tool_ids import new_tool_call_id
from proxy.openai.tools import calling_config, function_declarations, gemini_tools
from proxy.openai.validate import (
    opt_bool,
    opt_int,
    opt_object,
    opt_str,
    opt_text,
    req_list,
    req_object,
    req_str,
    unknown_parameter,
)
from proxy.usage import Usage, openai_usage_counts
from proxy.wire.gemini import Content, FunctionCallingConfig, GenerateContentRequest, Part, Tool

__all__ = [
    "DROPPED_PARAMETERS",
    "HOSTED_TOOLS",
    "REFUSED_PARAMETERS",
    "TRANSLATED_PARAMETERS",
    "Conversation",
    "ItemIds",
    "ResponsesCall",
    "conversation_after",
    "gemini_reply_to_response",
    "new_response_id",
    "output_items",
    "response_object",
    "response_usage",
    "responses_request_to_gemini",
]

TRANSLATED_PARAMETERS: Final = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "text", "reasoning",
        "max_output_tokens", "temperature", "top_p", "stream", "user", "safety_identifier",
        "metadata", "parallel_tool_calls", "previous_response_id", "google", "extra_body",
    }
)  # fmt: skip
# Accepted and ignored: hints, OpenAI-side features, or data this proxy does not return.
DROPPED_PARAMETERS: Final = frozenset(
    {
        "store", "include", "service_tier", "prompt_cache_key", "prompt_cache_retention",
        "prompt_cache_options", "truncation", "stream_options", "max_tool_calls",
        "context_management",
    }
)  # fmt: skip
# A 400 naming them unless null / false / empty: a client relying on them would get a
# different answer than it asked for.
REFUSED_PARAMETERS: Final = frozenset(
    {
        "conversation", "prompt", "background", "background_options", "top_logprobs",
        "moderation", "access_programs", "image",
    }
)  # fmt: skip

_SEARCH_TOOLS: Final = frozenset(
    {"web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"}
)
# Hosted tool → why it is refused.
HOSTED_TOOLS: Final = {
    "file_search": "vector stores live at OpenAI",
    "computer": "Gemini's computer use speaks another action protocol",
    "computer_use_preview": "Gemini's computer use speaks another action protocol",
    "computer_use": "Gemini's computer use speaks another action protocol",
    "code_interpreter": "OpenAI's containers and files have no counterpart",
    "image_generation": "use /v1/images/generations",
    "mcp": "the proxy makes no calls to third-party servers",
    "local_shell": "no Gemini model is trained for it",
    "shell": "no Gemini model is trained for it",
    "apply_patch": "no Gemini model is trained for it",
    "custom": "Gemini has no free-text (grammar) tools",
    "namespace": "Gemini has no tool namespaces",
    "tool_search": "Gemini has no deferred tool loading",
    "programmatic_tool_calling": "no Gemini model is trained for it",
}
# Items this proxy puts in ``output`` that carry nothing Gemini needs back.
_REPLAYED_ONLY: Final = frozenset({"reasoning", "web_search_call"})


# --- ids -----------------------------------------------------------------------------------------


def new_response_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


def _new_item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass
class ItemIds:
    """Id factories, injectable so tests get stable ids."""

    item: Callable[[str], str] = _new_item_id  # prefix ("msg", "fc", "rs", "ws") → id
    call: Callable[[], str] = new_tool_call_id


# --- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    """A conversation as Gemini saw it, to continue with ``previous_response_id``."""

    contents: tuple[Content, ...] = ()
    call_names: Mapping[str, str] = field(default_factory=dict)  # call_id → function name


@dataclass(frozen=True)
class ResponsesCall:
    model: str  # as the client gave it; the routes normalise it
    stream: bool
    user: str | None  # end user for the ledger (`user`, else `safety_identifier`); never sent
    request: dict[str, Any]  # the generateContent / streamGenerateContent body (camelCase)
    echo: dict[str, Any]  # request fields the response object repeats
    web_search: bool  # Google Search grounding is on: report it as web_search_call items
    call_names: dict[str, str]  # call_id → name of every function call in the input


class _Turns:
    """Gemini turns built item by item: model parts merge into the open model turn, function
    responses into the open function-response turn."""

    def __init__(self, history: Conversation) -> None:
        self.contents: list[Content] = [
            {"role": c.get("role", "user"), "parts": list(c.get("parts", []))}
            for c in history.contents
        ]
        self.system: list[Part] = []
        self.call_names = dict(history.call_names)
        self._open: str | None = None  # "model" | "responses": the kind of the last turn

    def user(self, parts: list[Part]) -> None:
        if parts:
            self.contents.append({"role": "user", "parts": parts})
            self._open = None

    def model(self, parts: list[Part]) -> None:
        if not parts:
            return
        if self._open == "model":
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": "model", "parts": parts})
            self._open = "model"

    def response(self, part: Part) -> None:
        if self._open == "responses":
            self.contents[-1]["parts"].append(part)
        else:
            self.contents.append({"role": "user", "parts": [part]})
            self._open = "responses"


def _texts(content: Any, param: str, allowed: tuple[str, ...]) -> list[Part]:
    """Text parts of a content that may only hold text (system, developer, assistant)."""
    return [{"text": t} for t in text_of(content, param, allowed=allowed) if t]


def _no_file_id(obj: Mapping[str, Any], param: str) -> None:
    if obj.get("file_id") is not None:
        raise BadRequest(
            f"'{param}.file_id' is not supported: OpenAI file ids do not exist upstream; send "
            "the content (a data URI) or a URL.",
            param=f"{param}.file_id",
            code="unsupported_parameter",
        )


def _input_part(obj: Mapping[str, Any], kind: str, param: str) -> Part | None:
    """The Gemini part of a user content part (None for empty text)."""
    if kind == "input_text":
        text = req_str(obj.get("text"), f"{param}.text")
        return {"text": text} if text else None
    if kind == "input_image":
        _no_file_id(obj, param)
        return image_url_part(
            req_str(obj.get("image_url"), f"{param}.image_url"), f"{param}.image_url"
        )
    if kind == "input_file":
        _no_file_id(obj, param)
        filename = opt_str(obj.get("filename"), f"{param}.filename") or ""
        if obj.get("file_url") is not None:
            return file_url_part(
                req_str(obj["file_url"], f"{param}.file_url"), filename, f"{param}.file_url"
            )
        data = req_str(obj.get("file_data"), f"{param}.file_data", non_empty=True)
        return file_data_part(data, filename, f"{param}.file_data")
    if kind == "input_audio":
        return media_part("input_audio", obj, param)
    raise BadRequest(
        f"Invalid '{param}.type': {kind!r}; expected 'input_text', 'input_image', 'input_file' "
        "or 'input_audio'.",
        param=f"{param}.type",
        code="invalid_value",
    )


def _user_parts(content: Any, param: str) -> list[Part]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[Part] = []
    for j, item in enumerate(req_list(content, param)):
        p = f"{param}[{j}]"
        obj = req_object(item, p)
        part = _input_part(obj, req_str(obj.get("type"), f"{p}.type"), p)
        if part is not None:
            parts.append(part)
    return parts


def _message(turns: _Turns, obj: Mapping[str, Any], param: str) -> None:
    role = req_str(obj.get("role"), f"{param}.role")
    content = obj.get("content")
    if role in ("system", "developer"):
        turns.system.extend(_texts(content, f"{param}.content", ("input_text",)))
    elif role == "user":
        turns.user(_user_parts(content, f"{param}.content"))
    elif role == "assistant":
        allowed = ("output_text", "refusal", "input_text")
        turns.model(_texts(content, f"{param}.content", allowed))
    else:
        raise BadRequest(
            f"Invalid '{param}.role': {role!r}; expected 'user', 'assistant', 'system' or "
            "'developer'.",
            param=f"{param}.role",
            code="invalid_value",
        )


def _output_text(output: Any, param: str) -> str:
    """A function call's output as text (a string, or a list of ``input_text`` parts; this
    proxy sends no image or file outputs to Gemini)."""
    return "".join(text_of(output, param, allowed=("input_text",)))


def _item(turns: _Turns, item: Any, param: str) -> None:
    if isinstance(item, str):  # a bare string in the list: a user message
        turns.user([{"text": item}] if item else [])
        return
    obj = req_object(item, param)
    kind = opt_str(obj.get("type"), f"{param}.type") or "message"
    if kind == "message":
        _message(turns, obj, param)
    elif kind == "function_call":
        call_id = req_str(obj.get("call_id"), f"{param}.call_id", non_empty=True)
        name = req_str(obj.get("name"), f"{param}.name", non_empty=True)
        turns.call_names[call_id] = name
        turns.model(
            [function_call_part(call_id, name, obj.get("arguments", ""), f"{param}.arguments")]
        )
    elif kind == "function_call_output":
        call_id = req_str(obj.get("call_id"), f"{param}.call_id", non_empty=True)
        called = turns.call_names.get(call_id)
        if called is None:
            raise BadRequest(
                f"Invalid '{param}.call_id': no function_call with call_id {call_id!r} precedes "
                "this output.",
                param=f"{param}.call_id",
                code="invalid_value",
            )
        turns.response(
            function_response_part(called, _output_text(obj.get("output"), f"{param}.output"))
        )
    elif kind in _REPLAYED_ONLY:
        return
    elif kind == "item_reference":
        raise BadRequest(
            f"Unsupported '{param}.type': 'item_reference' needs stored responses, which this "
            "Gemini proxy does not keep; send the item itself.",
            param=f"{param}.type",
            code="unsupported_value",
        )
    else:
        raise BadRequest(
            f"Unsupported '{param}.type': {kind!r} items are not supported by this Gemini proxy.",
            param=f"{param}.type",
            code="unsupported_value",
        )


def _tools(value: Any) -> tuple[list[tuple[Any, str]], bool]:
    """The function tools as ``(tool, param)`` pairs, and whether web search was asked for."""
    functions: list[tuple[Any, str]] = []
    search = False
    for i, tool in enumerate([] if value is None else req_list(value, "tools")):
        param = f"tools[{i}]"
        obj = req_object(tool, param)
        kind = req_str(obj.get("type"), f"{param}.type")
        if kind == "function":
            functions.append((obj, param))
        elif kind in _SEARCH_TOOLS:
            filters = opt_object(obj.get("filters"), f"{param}.filters") or {}
            if filters.get("allowed_domains"):
                raise BadRequest(
                    f"Unsupported parameter '{param}.filters.allowed_domains': Google Search "
                    "grounding cannot be limited to domains.",
                    param=f"{param}.filters.allowed_domains",
                    code="unsupported_parameter",
                )
            search = True
        else:
            why = HOSTED_TOOLS.get(kind, "unknown tool type")
            raise BadRequest(
                f"Unsupported tool type {kind!r} in '{param}.type': {why}. This Gemini proxy "
                "supports 'function' tools and 'web_search' (as Google Search grounding).",
                param=f"{param}.type",
                code="unsupported_value",
            )
    return functions, search


def _tool_config(
    choice: Any, functions: list[tuple[Any, str]], search: bool
) -> tuple[list[Tool], dict[str, Any] | None]:
    decls = function_declarations(functions, flat=True)
    config: FunctionCallingConfig | None
    if isinstance(choice, Mapping) and choice.get("type") not in ("function", "allowed_tools"):
        kind = choice.get("type")
        if kind not in _SEARCH_TOOLS:
            raise BadRequest(
                f"Unsupported 'tool_choice.type': {kind!r}; expected 'function', "
                "'allowed_tools' or a web search tool.",
                param="tool_choice.type",
                code="unsupported_value",
            )
        if not search:
            raise BadRequest(
                f"'tool_choice' names {kind!r} but no web search tool is in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        # Gemini cannot force a search; calling no function is the closest.
        config = {"mode": "NONE"} if decls else None
    elif choice == "required" and search and not decls:
        config = None  # the model decides whether to search
    else:
        decls, config = calling_config(choice, decls, flat=True)
    tools, tool_config = gemini_tools(decls, config)
    if search and choice != "none":
        tools.append({"googleSearch": {}})
    return tools, cast(dict[str, Any] | None, tool_config)


def _text_config(value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(generationConfig keys, the text config to echo)``."""
    text = opt_object(value, "text") or {}
    for key in text:
        if key not in ("format", "verbosity"):
            raise BadRequest(
                f"Unrecognized parameter 'text.{key}'.",
                param=f"text.{key}",
                code="unknown_parameter",
            )
    verbosity = opt_str(text.get("verbosity"), "text.verbosity")  # a hint: dropped
    if verbosity is not None and verbosity not in ("low", "medium", "high"):
        raise BadRequest(
            f"Invalid 'text.verbosity': {verbosity!r}; expected 'low', 'medium' or 'high'.",
            param="text.verbosity",
            code="invalid_value",
        )
    config = text_format_to_gemini(text.get("format"))
    echo: dict[str, Any] = {"format": dict(text.get("format") or {"type": "text"})}
    if verbosity is not None:
        echo["verbosity"] = verbosity
    return cast(dict[str, Any], config), echo


def _reasoning(
    body: Mapping[str, Any], model: str
) -> tuple[dict[str, Any] | None, str | None, dict[str, Any] | None]:
    """``(thinkingConfig or None, Google's cachedContent or None, the reasoning config to echo
    or None)``."""
    spec = opt_object(body.get("reasoning"), "reasoning") or {}
    for key in spec:
        if key not in ("effort", "summary", "generate_summary", "context", "mode"):
            raise BadRequest(
                f"Unrecognized parameter 'reasoning.{key}'.",
                param=f"reasoning.{key}",
                code="unknown_parameter",
            )
    summary = opt_str(spec.get("summary"), "reasoning.summary") or opt_str(
        spec.get("generate_summary"), "reasoning.generate_summary"
    )
    if summary is not None and summary not in ("auto", "concise", "detailed"):
        raise BadRequest(
            f"Invalid 'reasoning.summary': {summary!r}; expected 'auto', 'concise' or 'detailed'.",
            param="reasoning.summary",
            code="invalid_value",
        )
    effort = spec.get("effort")
    config, cached = google_options(body, effort, model, "reasoning.effort")
    thinking = cast(dict[str, Any] | None, config)
    if summary is not None:
        thinking = dict(thinking or {})
        thinking.setdefault("includeThoughts", True)
    echo = {"effort": effort, "summary": summary} if spec else None
    return thinking, cached, echo


def _check_parameters(body: Mapping[str, Any]) -> None:
    for name, value in body.items():
        if name in REFUSED_PARAMETERS:
            if value in (None, False, 0, "", [], {}):
                continue
            raise BadRequest(
                f"Unsupported parameter: '{name}' is not supported by this Gemini proxy.",
                param=name,
                code="unsupported_parameter",
            )
        if name not in TRANSLATED_PARAMETERS and name not in DROPPED_PARAMETERS:
            raise unknown_parameter(name)
    include = body.get("include")
    for i, value in enumerate([] if include is None else req_list(include, "include")):
        if req_str(value, f"include[{i}]") == "message.output_text.logprobs":
            raise BadRequest(
                "Unsupported value 'message.output_text.logprobs' in 'include': this Gemini "
                "proxy returns no log probabilities.",
                param=f"include[{i}]",
                code="unsupported_value",
            )


def _metadata(value: Any) -> dict[str, str]:
    meta = opt_object(value, "metadata") or {}
    for key, item in meta.items():
        req_str(item, f"metadata.{key}")
    return dict(meta)


def responses_request_to_gemini(body: Any, *, history: Conversation | None = None) -> ResponsesCall:
    """Validate a Responses API request and build the Gemini body; BadRequest names the field.

    ``history``: the stored conversation ``previous_response_id`` names, when the route keeps
    responses; without it, ``previous_response_id`` is a 400."""
    obj = req_object(body, "body")
    _check_parameters(obj)
    model = req_str(obj.get("model"), "model", non_empty=True)
    stream = bool(opt_bool(obj.get("stream"), "stream"))
    user = opt_text(obj.get("user"), "user", max_length=END_USER_MAX_LENGTH)
    safety = opt_text(
        obj.get("safety_identifier"), "safety_identifier", max_length=END_USER_MAX_LENGTH
    )
    previous = opt_str(obj.get("previous_response_id"), "previous_response_id")
    if previous and history is None:
        raise BadRequest(
            "Unsupported parameter: 'previous_response_id' — this Gemini proxy does not store "
            "responses; send the whole conversation in 'input' (earlier output items included).",
            param="previous_response_id",
            code="unsupported_parameter",
        )
    turns = _Turns(history if previous and history is not None else Conversation())
    instructions = opt_str(obj.get("instructions"), "instructions")
    if instructions:
        turns.system.append({"text": instructions})
    value = obj.get("input")
    if isinstance(value, str):
        turns.user([{"text": value}] if value else [])
    else:
        for i, item in enumerate(req_list(value, "input", non_empty=previous is None)):
            _item(turns, item, f"input[{i}]")
    if not turns.contents:
        raise BadRequest(
            "'input' must contain at least one message or function call output.",
            param="input",
            code="invalid_value",
        )
    if is_gemini3(model):
        fill_missing_signatures(turns.contents)

    request: GenerateContentRequest = {"contents": turns.contents}
    if turns.system:
        request["systemInstruction"] = {"parts": turns.system}
    functions, search = _tools(obj.get("tools"))
    tools, tool_config = _tool_config(obj.get("tool_choice"), functions, search)
    if tools:
        request["tools"] = tools
    if tool_config is not None:
        request["toolConfig"] = cast(Any, tool_config)
    config = cast(dict[str, Any], generation_config(obj, 1))  # temperature, top_p
    max_output = opt_int(obj.get("max_output_tokens"), "max_output_tokens", minimum=1)
    if max_output is not None:
        config["maxOutputTokens"] = max_output
    text_config, text_echo = _text_config(obj.get("text"))
    config.update(text_config)
    thinking, cached, reasoning_echo = _reasoning(obj, model)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        request["generationConfig"] = cast(Any, config)
    if cached:
        request["cachedContent"] = cached
    parallel = opt_bool(obj.get("parallel_tool_calls"), "parallel_tool_calls")
    echo: dict[str, Any] = {
        "instructions": instructions,
        "metadata": _metadata(obj.get("metadata")),
        "parallel_tool_calls": True if parallel is None else parallel,
        "temperature": obj.get("temperature"),
        "top_p": obj.get("top_p"),
        "tool_choice": obj.get("tool_choice") or "auto",
        "tools": list(obj.get("tools") or []),
        "max_output_tokens": max_output,
        "previous_response_id": previous,
        "reasoning": reasoning_echo,
        "text": text_echo,
        "truncation": "disabled",
        "user": user,
        "safety_identifier": safety,
        "background": False,
    }
    return ResponsesCall(
        model=model,
        stream=stream,
        user=user or safety,
        request=cast(dict[str, Any], request),
        echo=echo,
        web_search=search and obj.get("tool_choice") != "none",
        call_names=turns.call_names,
    )


# --- the reply -----------------------------------------------------------------------------------


def response_usage(usage: Usage, cost: Decimal | None = None) -> dict[str, Any]:
    """The Responses ``usage`` object, each count summed from the token kinds that map to it
    (proxy/usage.py): tool-use prompt tokens count as input so the sum holds; output tokens are
    visible output plus thinking, as OpenAI counts reasoning. ``cost`` (USD, when priced) rides
    along as ``usage.cost``."""
    c = openai_usage_counts(usage, "responses")
    input_tokens, output_tokens = c["input_tokens"], c["output_tokens"]
    out: dict[str, Any] = {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": c["input_tokens_details.cached_tokens"],
            "cache_write_tokens": 0,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": c["output_tokens_details.reasoning_tokens"]},
        "total_tokens": input_tokens + output_tokens,
    }
    if cost is not None:
        out["cost"] = decimal_json(cost)
    return out


def url_citations(text: str, grounding: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """``url_citation`` annotations for the text Gemini's grounding supports point into.

    Gemini gives each support's segment text and the web chunks backing it; the segment is
    found in ``text`` (its indices count UTF-8 bytes of one part, OpenAI's count characters of
    the whole message), and one annotation is made per backing chunk."""
    if not isinstance(grounding, Mapping):
        return []
    chunks = grounding.get("groundingChunks")
    chunks = chunks if isinstance(chunks, list) else []
    supports = grounding.get("groundingSupports")
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, int, str]] = set()
    for support in supports if isinstance(supports, list) else []:
        segment = support.get("segment") if isinstance(support, Mapping) else None
        quoted = segment.get("text") if isinstance(segment, Mapping) else None
        if not isinstance(quoted, str) or not quoted or (start := text.find(quoted)) < 0:
            continue
        indices = support.get("groundingChunkIndices")
        for i in indices if isinstance(indices, list) else []:
            web = chunks[i].get("web") if isinstance(i, int) and 0 <= i < len(chunks) else None
            url = web.get("uri") if isinstance(web, Mapping) else None
            if not isinstance(url, str) or (start, start + len(quoted), url) in seen:
                continue
            seen.add((start, start + len(quoted), url))
            title = web.get("title") if isinstance(web, Mapping) else None
            out.append(
                {
                    "type": "url_citation",
                    "start_index": start,
                    "end_index": start + len(quoted),
                    "url": url,
                    "title": title if isinstance(title, str) else url,
                }
            )
    return out


def web_search_item(item_id: str, grounding: Mapping[str, Any], status: str) -> dict[str, Any]:
    queries = grounding.get("webSearchQueries")
    queries = [q for q in queries if isinstance(q, str)] if isinstance(queries, list) else []
    action: dict[str, Any] = {"type": "search", "queries": queries}
    if queries:
        action["query"] = queries[0]
    return {"type": "web_search_call", "id": item_id, "status": status, "action": action}


def message_item(
    item_id: str, text: str, annotations: list[dict[str, Any]], status: str
) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": [output_text_part(text, annotations)],
    }


def output_text_part(text: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}


def reasoning_item(item_id: str, summary: str) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [{"type": "summary_text", "text": summary}] if summary else [],
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(
    parts: Any, grounding: Mapping[str, Any] | None, status: str, ids: ItemIds
) -> list[dict[str, Any]]:
    """A candidate's parts as output items, in order: consecutive thoughts make one
    ``reasoning`` item, consecutive texts one ``message``, each call a ``function_call``."""
    items: list[dict[str, Any]] = []
    if grounding:
        items.append(web_search_item(ids.item("ws"), grounding, "completed"))
    run: list[str] = []
    run_kind: str | None = None

    def flush() -> None:
        if run_kind == "message":
            text = "".join(run)
            items.append(
                message_item(ids.item("msg"), text, url_citations(text, grounding), status)
            )
        elif run_kind == "reasoning":
            items.append(reasoning_item(ids.item("rs"), "".join(run)))
        run.clear()

    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, Mapping):
            continue
        fc = part.get("functionCall")
        if isinstance(fc, Mapping):
            flush()
            run_kind = None
            call_id, name, arguments = function_call_fields(
                fc, part.get("thoughtSignature"), ids.call
            )
            items.append(function_call_item(ids.item("fc"), call_id, name, arguments, "completed"))
            continue
        text = part.get("text")
        if not isinstance(text, str) or not text:
            continue  # inline data, code execution and other kinds have no Responses form here
        kind = "reasoning" if part.get("thought") else "message"
        if kind != run_kind:
            flush()
            run_kind = kind
        run.append(text)
    flush()
    return items


def completion_status(reply: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(status, incomplete reason)`` for a reply or a stream's last state: a token limit or a
    filter makes the response ``incomplete``, as OpenAI reports them."""
    candidates = reply.get("candidates")
    candidate = candidates[0] if isinstance(candidates, list) and candidates else None
    if not isinstance(candidate, Mapping):
        feedback = reply.get("promptFeedback")
        blocked = isinstance(feedback, Mapping) and bool(feedback.get("blockReason"))
        return ("incomplete", "content_filter") if blocked else ("completed", None)
    reason = finish_reason(candidate.get("finishReason"), False)
    if reason == "length":
        return "incomplete", "max_output_tokens"
    if reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def response_object(
    call: ResponsesCall,
    *,
    model: str,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object: the call's echoed settings around ``output`` and ``usage``."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": model,
        "output": output,
        "usage": usage,
        **call.echo,
    }


def gemini_reply_to_response(
    reply: Mapping[str, Any],
    call: ResponsesCall,
    *,
    model: str,
    response_id: str,
    created_at: int,
    cost: Decimal | None = None,
    ids: ItemIds | None = None,
) -> dict[str, Any]:
    """The ``response`` object for a generateContent reply (only the first candidate: the
    Responses API has no ``n``)."""
    candidates = reply.get("candidates")
    candidate = candidates[0] if isinstance(candidates, list) and candidates else {}
    candidate = candidate if isinstance(candidate, Mapping) else {}
    content = candidate.get("content")
    status, reason = completion_status(reply)
    grounding = candidate.get("groundingMetadata") if call.web_search else None
    output = output_items(
        content.get("parts") if isinstance(content, Mapping) else None,
        grounding if isinstance(grounding, Mapping) else None,
        status,
        ids or ItemIds(),
    )
    metadata = reply.get("usageMetadata")
    usage = Usage.from_metadata(metadata if isinstance(metadata, Mapping) else {})
    return response_object(
        call,
        model=model,
        response_id=response_id,
        created_at=created_at,
        status=status,
        incomplete_reason=reason,
        output=output,
        usage=response_usage(usage, cost),
    )


def conversation_after(
    call: ResponsesCall, reply: Mapping[str, Any], response: Mapping[str, Any]
) -> Conversation:
    """What a store would keep for ``response`` so a follow-up can name it in
    ``previous_response_id``: the request's turns (instructions are not carried over, as on
    OpenAI) plus Gemini's reply turn, and the call ids of the function calls it made."""
    contents: list[Content] = list(call.request["contents"])
    candidates = reply.get("candidates")
    candidate = candidates[0] if isinstance(candidates, list) and candidates else None
    content = candidate.get("content") if isinstance(candidate, Mapping) else None
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if isinstance(parts, list) and parts:
        contents.append({"role": "model", "parts": parts})
    names = dict(call.call_names)
    for item in response.get("output") or []:
        if isinstance(item, Mapping) and item.get("type") == "function_call":
            names[str(item["call_id"])] = str(item["name"])
    return Conversation(contents=tuple(contents), call_names=names)
