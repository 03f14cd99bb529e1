"""Legacy completions: ``POST /v1/completions`` → Gemini ``generateContent``, one call a prompt.

- ``prompt``: a string, a list of strings, or token ids (one array or a list of arrays, decoded
  with the client's tiktoken encoding as for embeddings, :mod:`proxy.openai.tokens`). Each
  prompt is one user turn of its own Gemini call (:attr:`CompletionsCall.requests`); Gemini
  answers it as a chat model does — it follows an instruction rather than continuing the text
  word for word. An empty prompt is a 400 (Gemini rejects empty content).
- ``max_tokens``, ``temperature``, ``top_p``, ``n``, ``stop``, ``seed``, ``presence_penalty``,
  ``frequency_penalty`` → ``generationConfig`` as in chat
  (:func:`proxy.openai.params.generation_config`).
  Without ``max_tokens`` the model's own limit applies, not OpenAI's default of 16.
- ``stream``, ``stream_options.include_usage``; ``user`` → the ledger's end user, never sent.
- ``suffix``, ``logprobs``, ``echo``, ``best_of`` > 1 and ``logit_bias`` are refused (400 naming
  them) unless null / false / 0 / empty — or, for ``best_of``, 1 or equal to ``n``.

The reply: choice ``i * n + j`` is candidate ``j`` of prompt ``i``, as OpenAI orders them; usage
is the sum over the prompts' calls (each call's own usage, not a stream's running count).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, cast

from proxy.errors import BadRequest
from proxy.formats import decimal_json
from proxy.metering.ledger_event import END_USER_MAX_LENGTH
from proxy.openai.chat import completion_usage, finish_reason
from proxy.openai.errors import check_stream_event
from proxy.openai.params import generation_config
from proxy.openai.tokens import decode_token_arrays, is_token_input, token_arrays
from proxy.openai.validate import (
    opt_bool,
    opt_int,
    opt_object,
    opt_text,
    req_list,
    req_object,
    req_str,
    unknown_parameter,
)
from proxy.usage import Usage, sum_usage
from proxy.wire.openai import FinishReason

__all__ = [
    "REFUSED_PARAMETERS",
    "TRANSLATED_PARAMETERS",
    "CompletionsCall",
    "CompletionsStreamTranslator",
    "completions_request_to_gemini",
    "gemini_replies_to_completion",
    "new_text_completion_id",
]

TRANSLATED_PARAMETERS: Final = frozenset(
    {
        "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
        "presence_penalty", "frequency_penalty", "stream", "stream_options", "user",
    }
)  # fmt: skip
REFUSED_PARAMETERS: Final = frozenset({"suffix", "logprobs", "echo", "best_of", "logit_bias"})


@dataclass(frozen=True)
class CompletionsCall:
    model: str  # as the client gave it; the routes normalise it
    stream: bool
    include_usage: bool  # stream_options.include_usage (only when streaming)
    user: str | None  # end user for the ledger; never sent
    n: int
    prompts: list[str]
    requests: list[dict[str, Any]]  # one generateContent body per prompt

    @property
    def admission_request(self) -> dict[str, Any]:
        """One body standing for all the prompts' calls, for the quotas' worst case: every
        prompt's turn, and ``n`` candidates per prompt (each call may write its maximum)."""
        config = dict(self.requests[0].get("generationConfig") or {})
        config["candidateCount"] = self.n * len(self.requests)
        contents = [turn for request in self.requests for turn in request["contents"]]
        return {"contents": contents, "generationConfig": config}


def new_text_completion_id() -> str:
    return f"cmpl-{secrets.token_hex(12)}"


def _check_parameters(body: Mapping[str, Any], n: int) -> None:
    for name, value in body.items():
        if name in REFUSED_PARAMETERS:
            harmless = value in (None, False, 0, "", {}) or (name == "best_of" and value in (1, n))
            if not harmless:
                raise BadRequest(
                    f"Unsupported parameter: '{name}' is not supported by this Gemini proxy.",
                    param=name,
                    code="unsupported_parameter",
                )
        elif name not in TRANSLATED_PARAMETERS:
            raise unknown_parameter(name)


def _prompts(value: Any) -> list[str]:
    if is_token_input(value):
        texts = decode_token_arrays(token_arrays(value, "prompt"))
    elif isinstance(value, str):
        texts = [value]
    else:
        items = req_list(value, "prompt", non_empty=True)
        texts = [req_str(p, f"prompt[{i}]") for i, p in enumerate(items)]
    for i, text in enumerate(texts):
        if not text:
            param = "prompt" if isinstance(value, str) else f"prompt[{i}]"
            raise BadRequest(
                f"Invalid '{param}': an empty prompt is not supported by this Gemini proxy.",
                param=param,
                code="invalid_value",
            )
    return texts


def completions_request_to_gemini(body: Any) -> CompletionsCall:
    """Validate a legacy completions request and build one Gemini body per prompt."""
    obj = req_object(body, "body")
    n = opt_int(obj.get("n"), "n", minimum=1) or 1
    _check_parameters(obj, n)
    model = req_str(obj.get("model"), "model", non_empty=True)
    stream = bool(opt_bool(obj.get("stream"), "stream"))
    options = opt_object(obj.get("stream_options"), "stream_options") or {}
    include_usage = bool(opt_bool(options.get("include_usage"), "stream_options.include_usage"))
    user = opt_text(obj.get("user"), "user", max_length=END_USER_MAX_LENGTH)
    prompts = _prompts(obj.get("prompt"))
    config = generation_config(obj, n)
    requests: list[dict[str, Any]] = []
    for text in prompts:
        request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if config:
            request["generationConfig"] = dict(config)
        requests.append(request)
    return CompletionsCall(
        model=model,
        stream=stream,
        include_usage=stream and include_usage,
        user=user,
        n=n,
        prompts=prompts,
        requests=requests,
    )


def _text(candidate: Mapping[str, Any]) -> str:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    return "".join(
        p["text"]
        for p in (parts if isinstance(parts, list) else [])
        if isinstance(p, Mapping) and isinstance(p.get("text"), str) and not p.get("thought")
    )


def _usage_dict(usage: Usage, cost: Decimal | None) -> dict[str, Any]:
    out = cast(dict[str, Any], completion_usage(usage))
    if cost is not None:
        out["cost"] = decimal_json(cost)
    return out


def _choice(index: int, text: str, reason: FinishReason | None) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": reason, "logprobs": None}


def gemini_replies_to_completion(
    replies: Sequence[Mapping[str, Any]],
    call: CompletionsCall,
    *,
    model: str,
    completion_id: str,
    created: int,
    cost: Decimal | None = None,
) -> dict[str, Any]:
    """A ``text_completion`` for the generateContent replies to :attr:`CompletionsCall.requests`
    (in order). A prompt whose reply has fewer candidates than ``n`` (blocked) gets empty
    ``content_filter`` choices."""
    choices: list[dict[str, Any]] = []
    usages: list[Usage] = []
    for i, reply in enumerate(replies):
        candidates = reply.get("candidates")
        by_index: dict[int, Mapping[str, Any]] = {}
        for position, candidate in enumerate(candidates if isinstance(candidates, list) else []):
            if isinstance(candidate, Mapping):
                raw = candidate.get("index")
                by_index[
                    raw if isinstance(raw, int) and not isinstance(raw, bool) else position
                ] = candidate
        for j in range(call.n):
            found = by_index.get(j)
            if found is None:
                choices.append(_choice(i * call.n + j, "", "content_filter"))
            else:
                reason = finish_reason(found.get("finishReason"), False)
                choices.append(_choice(i * call.n + j, _text(found), reason))
        metadata = reply.get("usageMetadata")
        usages.append(Usage.from_metadata(metadata if isinstance(metadata, Mapping) else {}))
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage_dict(sum_usage(usages), cost),
    }


class CompletionsStreamTranslator:
    """Gemini stream events → ``text_completion`` chunks. The prompts of a call stream one after
    another (``feed(event, prompt=i)``); each chunk carries one choice's text as it arrives, a
    candidate's ``finishReason`` a chunk of its own with ``finish_reason``, and :meth:`finish`
    closes unfinished choices and adds the usage chunk (``choices: []``) when asked for."""

    def __init__(
        self, *, model: str, completion_id: str, created: int, n: int, include_usage: bool
    ) -> None:
        self._model = model
        self._id = completion_id
        self._created = created
        self._n = n
        self._include_usage = include_usage
        self._usage: dict[int, Mapping[str, Any]] = {}  # prompt → its last usageMetadata
        self._finished: set[int] = set()
        self._prompts: set[int] = set()
        self._closed = False

    @property
    def usage(self) -> Usage | None:
        """The usage so far: each prompt's last (cumulative) count, added over the prompts."""
        if not self._usage:
            return None
        return sum_usage([Usage.from_metadata(md) for md in self._usage.values()])

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }

    def feed(self, event: Mapping[str, Any], prompt: int = 0) -> list[dict[str, Any]]:
        """Chunks for one upstream event of prompt ``prompt``'s stream; raises
        :class:`~proxy.openai.errors.UpstreamStreamError` on an error event."""
        check_stream_event(event)
        self._prompts.add(prompt)
        metadata = event.get("usageMetadata")
        if isinstance(metadata, Mapping):
            self._usage[prompt] = metadata
        texts: list[dict[str, Any]] = []
        finishes: list[dict[str, Any]] = []
        candidates = event.get("candidates")
        for position, candidate in enumerate(candidates if isinstance(candidates, list) else []):
            if not isinstance(candidate, Mapping):
                continue
            raw = candidate.get("index")
            j = raw if isinstance(raw, int) and not isinstance(raw, bool) else position
            index = prompt * self._n + j
            if index in self._finished:
                continue
            if text := _text(candidate):
                texts.append(_choice(index, text, None))
            if candidate.get("finishReason"):
                self._finished.add(index)
                finishes.append(_choice(index, "", finish_reason(candidate["finishReason"], False)))
        return [self._chunk(c) for c in (texts, finishes) if c]

    def finish(self, cost: Decimal | None = None) -> list[dict[str, Any]]:
        """Trailing chunks once every prompt's stream ended cleanly; idempotent."""
        if self._closed:
            return []
        self._closed = True
        open_choices = [
            _choice(p * self._n + j, "", "stop")
            for p in sorted(self._prompts or {0})
            for j in range(self._n)
            if p * self._n + j not in self._finished
        ]
        chunks = [self._chunk(open_choices)] if open_choices else []
        if self._include_usage:
            chunk = self._chunk([])
            chunk["usage"] = _usage_dict(self.usage or Usage(), cost)
            chunks.append(chunk)
        return chunks
