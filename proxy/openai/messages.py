"""OpenAI chat ``messages`` → Gemini ``contents`` and ``systemInstruction``.

- ``system`` and ``developer`` messages, wherever they stand, become parts of the one
  ``systemInstruction``, in order (Gemini has a single system instruction).
- ``user`` → a ``user`` turn; ``assistant`` → a ``model`` turn whose ``tool_calls`` become
  ``functionCall`` parts carrying their thought signature (see :mod:`proxy.openai.tool_ids`).
- consecutive ``tool`` messages → one ``user`` turn of ``functionResponse`` parts, each named
  after the assistant tool call its ``tool_call_id`` points at.
- ``name`` on a message is ignored (Gemini has no per-turn participant names); empty text is
  skipped and a message left without parts is dropped, because Gemini rejects empty parts.
- Legacy ``function`` messages are refused (400): ``functions`` / ``function_call`` are too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.errors import BadRequest
from proxy.openai.media import media_part
from proxy.openai.tool_ids import decode_signature
from proxy.openai.validate import opt_str, req_list, req_object, req_str
from proxy.wire.gemini import Content, FunctionCall, Part

__all__ = [
    "DUMMY_THOUGHT_SIGNATURE",
    "fill_missing_signatures",
    "function_call_part",
    "function_response_part",
    "messages_to_gemini",
    "text_of",
]

# Google documents this value for replaying function calls whose signature was lost (e.g.
# history written by another model): Gemini 3 then skips signature validation for that call
# instead of answering 400.
DUMMY_THOUGHT_SIGNATURE = "skip_thought_signature_validator"


def text_of(content: Any, param: str, *, allowed: tuple[str, ...] = ("text",)) -> list[str]:
    """Texts of a content that may only hold text (system, developer, tool, assistant): a
    string, or parts of the ``allowed`` types, each read from its ``text`` field (``refusal``
    from its ``refusal`` field)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for j, item in enumerate(req_list(content, param)):
        part = req_object(item, f"{param}[{j}]")
        kind = req_str(part.get("type"), f"{param}[{j}].type")
        if kind not in allowed:
            raise BadRequest(
                f"Invalid '{param}[{j}].type': {kind!r}; this message accepts only "
                f"{' or '.join(repr(a) for a in allowed)} parts.",
                param=f"{param}[{j}].type",
                code="invalid_value",
            )
        key = "refusal" if kind == "refusal" else "text"
        texts.append(req_str(part.get(key), f"{param}[{j}].{key}"))
    return texts


def _user_parts(content: Any, param: str) -> list[Part]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[Part] = []
    for j, item in enumerate(req_list(content, param)):
        p = f"{param}[{j}]"
        obj = req_object(item, p)
        kind = req_str(obj.get("type"), f"{p}.type")
        if kind == "text":
            text = req_str(obj.get("text"), f"{p}.text")
            if text:
                parts.append({"text": text})
        else:
            parts.append(media_part(kind, obj, p))
    return parts


def _function_call(call: Any, param: str) -> tuple[str, str, Part]:
    """``(tool call id, function name, functionCall part)``."""
    obj = req_object(call, param)
    call_id = req_str(obj.get("id"), f"{param}.id", non_empty=True)
    kind = obj.get("type", "function")
    if kind != "function":
        raise BadRequest(
            f"Unsupported tool call type {kind!r} in '{param}.type'.",
            param=f"{param}.type",
            code="unsupported_value",
        )
    fn = req_object(obj.get("function"), f"{param}.function")
    name = req_str(fn.get("name"), f"{param}.function.name", non_empty=True)
    part = function_call_part(
        call_id,
        name,
        fn.get("arguments", ""),
        f"{param}.function.arguments",
        _extra_signature(obj.get("extra_content")),
    )
    return call_id, name, part


def function_call_part(
    call_id: str, name: str, arguments: Any, param: str, signature: str | None = None
) -> Part:
    """A ``functionCall`` part for a call the client sends back; ``arguments`` is JSON text
    (``param`` names it). The thought signature is ``signature`` or the one in ``call_id``."""
    raw = req_str(arguments, param)
    try:
        args = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise BadRequest(
            f"Invalid '{param}': expected a JSON object encoded as a string.",
            param=param,
            code="invalid_value",
        )
    fc: FunctionCall = {"name": name, "args": args}
    part: Part = {"functionCall": fc}
    signature = signature or decode_signature(call_id)
    if signature:
        part["thoughtSignature"] = signature
    return part


def _extra_signature(extra: Any) -> str | None:
    # Google's compat form: {"extra_content": {"google": {"thought_signature": "..."}}}.
    if not isinstance(extra, Mapping):
        return None
    google = extra.get("google")
    sig = google.get("thought_signature") if isinstance(google, Mapping) else None
    return sig if isinstance(sig, str) and sig else None


def _tool_response(msg: Mapping[str, Any], param: str, names: Mapping[str, str]) -> Part:
    call_id = req_str(msg.get("tool_call_id"), f"{param}.tool_call_id", non_empty=True)
    name = names.get(call_id) or opt_str(msg.get("name"), f"{param}.name")
    if not name:
        raise BadRequest(
            f"Invalid '{param}.tool_call_id': no assistant tool call with id {call_id!r} "
            "precedes this message.",
            param=f"{param}.tool_call_id",
            code="invalid_value",
        )
    return function_response_part(name, "".join(text_of(msg.get("content"), f"{param}.content")))


def function_response_part(name: str, text: str) -> Part:
    """A ``functionResponse`` part: a JSON object result as itself, anything else as
    ``{"result": text}`` (Gemini wants an object)."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def messages_to_gemini(messages: Any, *, gemini3: bool) -> tuple[list[Content], Content | None]:
    """``(contents, systemInstruction or None)``; raises BadRequest naming the bad field."""
    items = req_list(messages, "messages", non_empty=True)
    system: list[Part] = []
    contents: list[Content] = []
    call_names: dict[str, str] = {}  # tool_call_id -> function name, for tool messages
    tool_turn: list[Part] | None = None  # the open turn consecutive tool messages share
    for i, item in enumerate(items):
        param = f"messages[{i}]"
        msg = req_object(item, param)
        role = req_str(msg.get("role"), f"{param}.role")
        if role != "tool":
            tool_turn = None
        if role in ("system", "developer"):
            texts = text_of(msg.get("content"), f"{param}.content")
            system.extend({"text": t} for t in texts if t)
        elif role == "user":
            parts = _user_parts(msg.get("content"), f"{param}.content")
            if parts:
                contents.append({"role": "user", "parts": parts})
        elif role == "assistant":
            if msg.get("function_call") is not None:
                raise BadRequest(
                    f"'{param}.function_call' (legacy) is not supported; use 'tool_calls'.",
                    param=f"{param}.function_call",
                    code="unsupported_parameter",
                )
            texts = text_of(msg.get("content"), f"{param}.content", allowed=("text", "refusal"))
            parts = [{"text": t} for t in texts if t]
            calls = msg.get("tool_calls")
            for j, call in enumerate(
                [] if calls is None else req_list(calls, f"{param}.tool_calls")
            ):
                call_id, name, part = _function_call(call, f"{param}.tool_calls[{j}]")
                call_names[call_id] = name
                parts.append(part)
            if parts:
                contents.append({"role": "model", "parts": parts})
        elif role == "tool":
            part = _tool_response(msg, param, call_names)
            if tool_turn is None:
                tool_turn = [part]
                contents.append({"role": "user", "parts": tool_turn})
            else:
                tool_turn.append(part)
        else:
            raise BadRequest(
                f"Invalid '{param}.role': {role!r}; expected 'system', 'developer', 'user', "
                "'assistant' or 'tool' (legacy 'function' messages are not supported).",
                param=f"{param}.role",
                code="invalid_value",
            )
    if not contents:
        raise BadRequest(
            "'messages' must contain at least one user, assistant or tool message.",
            param="messages",
            code="invalid_value",
        )
    if gemini3:
        fill_missing_signatures(contents)
    return contents, ({"parts": system} if system else None)


def fill_missing_signatures(contents: list[Content]) -> None:
    # Gemini 3 validates the signature of the first functionCall part of each model turn.
    for content in contents:
        if content.get("role") != "model":
            continue
        for part in content.get("parts", []):
            if "functionCall" in part:
                part.setdefault("thoughtSignature", DUMMY_THOUGHT_SIGNATURE)
                break
