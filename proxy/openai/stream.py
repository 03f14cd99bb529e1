"""Gemini stream events → OpenAI ``chat.completion.chunk`` dicts, one translator per call.

Each upstream event is translated as it arrives (no buffering):

- the first delta of each choice carries ``role: "assistant"``;
- visible text → ``delta.content``; thought parts are never shown;
- each ``functionCall`` part (Gemini sends them whole) → one ``delta.tool_calls`` entry with a
  running per-choice ``index``, ``id``, ``type``, ``name`` and the complete ``arguments``;
- a candidate's ``finishReason`` → a separate chunk with an empty delta and ``finish_reason``
  (``tool_calls`` when that choice produced any);
- ``usageMetadata`` is cumulative: the translator keeps the last one (:attr:`usage`), never a
  sum, and :meth:`finish` emits it once, in a final chunk with ``choices: []``, when the client
  asked for ``stream_options.include_usage``. The route then sends ``data: [DONE]``.

An ``{"error": ...}`` event makes :meth:`feed` raise
:class:`~proxy.openai.errors.UpstreamStreamError` carrying the OpenAI mapping; :attr:`usage`
still holds what was seen before it, for the meter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from proxy.formats import decimal_json
from proxy.openai.chat import completion_usage, finish_reason, split_parts
from proxy.openai.errors import check_stream_event
from proxy.openai.tool_ids import new_tool_call_id
from proxy.usage import Usage
from proxy.wire.openai import (
    ChatCompletionChunk,
    ChoiceDelta,
    ChunkChoice,
    DeltaToolCall,
    FinishReason,
)

__all__ = ["ChatStreamTranslator"]


@dataclass
class _ChoiceState:
    role_sent: bool = False
    tool_calls: int = 0  # how many tool calls this choice has streamed: the next delta index
    finished: bool = False


class ChatStreamTranslator:
    """Translate one streamed call. Not thread-safe; create one per call."""

    def __init__(
        self,
        *,
        model: str,
        completion_id: str,
        created: int,
        include_usage: bool,
        new_call_id: Callable[[], str] = new_tool_call_id,
    ) -> None:
        self._model = model
        self._id = completion_id
        self._created = created
        self._include_usage = include_usage
        self._new_call_id = new_call_id
        self._choices: dict[int, _ChoiceState] = {}
        self._usage_md: Mapping[str, Any] | None = None  # the last usageMetadata, parsed on use
        self._closed = False

    @property
    def usage(self) -> Usage | None:
        """The last ``usageMetadata`` seen (counts are cumulative), or None if none came."""
        return None if self._usage_md is None else Usage.from_metadata(self._usage_md)

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Chunks for one parsed upstream event; raises UpstreamStreamError on an error event."""
        check_stream_event(event)
        metadata = event.get("usageMetadata")
        if isinstance(metadata, Mapping):
            self._usage_md = metadata
        deltas: list[ChunkChoice] = []
        finishes: list[ChunkChoice] = []
        candidates = event.get("candidates")
        for position, candidate in enumerate(candidates if isinstance(candidates, list) else []):
            if isinstance(candidate, Mapping):
                self._candidate(position, candidate, deltas, finishes)
        feedback = event.get("promptFeedback")
        if not candidates and isinstance(feedback, Mapping) and feedback.get("blockReason"):
            # Prompt blocked: no candidate will come; close choice 0 as filtered.
            state = self._choices.setdefault(0, _ChoiceState())
            if not state.finished:
                if not state.role_sent:
                    deltas.append(self._role_delta(0, state))
                finishes.append(self._finish(0, state, "content_filter"))
        return [cast(dict[str, Any], self._chunk(c)) for c in (deltas, finishes) if c]

    def finish(self, cost: Decimal | None = None) -> list[dict[str, Any]]:
        """Trailing chunks once the upstream stream ended cleanly; idempotent. ``cost``, the
        call's priced cost when the caller has it, goes in the usage chunk as ``usage.cost``."""
        if self._closed:
            return []
        self._closed = True
        deltas: list[ChunkChoice] = []
        finishes: list[ChunkChoice] = []
        if not self._choices:
            self._choices[0] = _ChoiceState()
        for index, state in sorted(self._choices.items()):
            if not state.role_sent:
                deltas.append(self._role_delta(index, state))
            if not state.finished:
                reason: FinishReason = "tool_calls" if state.tool_calls else "stop"
                finishes.append(self._finish(index, state, reason))
        chunks = [self._chunk(c) for c in (deltas, finishes) if c]
        if self._include_usage:
            chunk = self._chunk([])
            chunk["usage"] = completion_usage(self.usage or Usage())
            if cost is not None:
                chunk["usage"]["cost"] = decimal_json(cost)
            chunks.append(chunk)
        return [cast(dict[str, Any], c) for c in chunks]

    # --- helpers -----------------------------------------------------------------------------

    def _candidate(
        self,
        position: int,
        candidate: Mapping[str, Any],
        deltas: list[ChunkChoice],
        finishes: list[ChunkChoice],
    ) -> None:
        raw_index = candidate.get("index")
        index = (
            raw_index
            if isinstance(raw_index, int) and not isinstance(raw_index, bool)
            else position
        )
        state = self._choices.setdefault(index, _ChoiceState())
        if state.finished:
            return
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, Mapping) else None
        texts, calls = split_parts(parts, self._new_call_id)
        delta: ChoiceDelta = {}
        if not state.role_sent:
            delta["role"] = "assistant"
            state.role_sent = True
        if texts:
            delta["content"] = "".join(texts)
        elif "role" in delta and not calls:
            delta["content"] = ""  # OpenAI's first delta carries role and empty content
        if calls:
            tool_deltas: list[DeltaToolCall] = []
            for call in calls:
                item: DeltaToolCall = {
                    "index": state.tool_calls,
                    "id": call["id"],
                    "type": "function",
                    "function": call["function"],
                }
                if "extra_content" in call:
                    item["extra_content"] = call["extra_content"]
                tool_deltas.append(item)
                state.tool_calls += 1
            delta["tool_calls"] = tool_deltas
        if delta:
            deltas.append({"index": index, "delta": delta, "finish_reason": None, "logprobs": None})
        reason = candidate.get("finishReason")
        if reason:
            finishes.append(self._finish(index, state, finish_reason(reason, state.tool_calls > 0)))

    @staticmethod
    def _role_delta(index: int, state: _ChoiceState) -> ChunkChoice:
        state.role_sent = True
        return {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": None,
            "logprobs": None,
        }

    @staticmethod
    def _finish(index: int, state: _ChoiceState, reason: FinishReason) -> ChunkChoice:
        state.finished = True
        return {"index": index, "delta": {}, "finish_reason": reason, "logprobs": None}

    def _chunk(self, choices: list[ChunkChoice]) -> ChatCompletionChunk:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
