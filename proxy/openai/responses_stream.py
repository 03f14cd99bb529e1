"""Gemini stream events → the Responses API's typed stream events, one translator per call.

The sequence, each event with a running ``sequence_number`` (what the openai SDK's
``responses.stream()`` accumulator and the Agents SDK expect):

1. :meth:`~ResponsesStreamTranslator.start`: ``response.created``, ``response.in_progress``.
2. :meth:`~ResponsesStreamTranslator.feed`, per upstream event, as it arrives:
   - visible text: ``response.output_item.added`` (a ``message``) and
     ``response.content_part.added`` (an ``output_text``) when a message opens, then
     ``response.output_text.delta``;
   - thought text (only sent when ``reasoning.summary`` asked for it): a ``reasoning`` item,
     ``response.reasoning_summary_part.added``, ``response.reasoning_summary_text.delta``;
   - a ``functionCall`` (Gemini sends it whole) closes the open item, then
     ``response.output_item.added`` (``function_call``), one
     ``response.function_call_arguments.delta`` with all the arguments,
     ``response.function_call_arguments.done``, ``response.output_item.done``.
   Closing a message sends ``response.output_text.done``, ``response.content_part.done``,
   ``response.output_item.done``; closing a reasoning item the ``…summary_text.done``,
   ``…summary_part.done`` and ``response.output_item.done``.
3. :meth:`~ResponsesStreamTranslator.finish` once the upstream stream ended: the open item is
   closed, Google Search grounding (if on) becomes a ``web_search_call`` item and the message's
   ``url_citation`` annotations, then ``response.completed`` — or ``response.incomplete`` after
   a token limit or a filter — with the whole output and ``usage`` (plus ``usage.cost`` when the
   caller priced the call).

An ``{"error": ...}`` event makes :meth:`feed` raise :class:`UpstreamStreamError`; the route
then sends :meth:`fail`'s ``response.failed`` (with the output so far) and ends the stream.
``usageMetadata`` is cumulative: the last one seen is the call's usage (:attr:`usage`).
Only the first candidate is read: the Responses API has no ``n``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from proxy.openai.chat import function_call_fields
from proxy.openai.errors import check_stream_event
from proxy.openai.responses import (
    ItemIds,
    ResponsesCall,
    completion_status,
    function_call_item,
    message_item,
    output_text_part,
    reasoning_item,
    response_object,
    response_usage,
    url_citations,
    web_search_item,
)
from proxy.usage import Usage

__all__ = ["ResponsesStreamTranslator", "encode_event"]


def encode_event(event: Mapping[str, Any]) -> bytes:
    """One SSE event as OpenAI sends it: the type in ``event:``, the object in ``data:``."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _Open:
    """The item being streamed: a message or a reasoning item."""

    def __init__(self, kind: str, item_id: str, index: int) -> None:
        self.kind = kind
        self.item_id = item_id
        self.index = index
        self.text: list[str] = []


class ResponsesStreamTranslator:
    """Translate one streamed call. Not thread-safe; create one per call."""

    def __init__(
        self,
        call: ResponsesCall,
        *,
        model: str,
        response_id: str,
        created_at: int,
        ids: ItemIds | None = None,
    ) -> None:
        self._call = call
        self._model = model
        self._id = response_id
        self._created_at = created_at
        self._ids = ids or ItemIds()
        self._seq = 0
        self._output: list[dict[str, Any]] = []  # finished items, in output order
        self._open: _Open | None = None
        self._usage_md: Mapping[str, Any] | None = None
        self._last: dict[str, Any] = {}  # the last candidate state: finishReason, grounding
        self._blocked = False
        self._closed = False

    @property
    def usage(self) -> Usage | None:
        """The last ``usageMetadata`` seen (counts are cumulative), or None if none came."""
        return None if self._usage_md is None else Usage.from_metadata(self._usage_md)

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(
            self._call,
            model=self._model,
            response_id=self._id,
            created_at=self._created_at,
            status=status,
            output=list(self._output),
            usage=extra.pop("usage", None),
            **extra,
        )

    def start(self) -> list[dict[str, Any]]:
        """The opening events, to send before any upstream byte arrives."""
        snapshot = self._snapshot("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Events for one parsed upstream event; raises UpstreamStreamError on an error event."""
        check_stream_event(event)
        metadata = event.get("usageMetadata")
        if isinstance(metadata, Mapping):
            self._usage_md = metadata
        feedback = event.get("promptFeedback")
        if isinstance(feedback, Mapping) and feedback.get("blockReason"):
            self._blocked = True
        candidates = event.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, Mapping) or self._closed:
            return []
        for key in ("finishReason", "groundingMetadata"):
            if candidate.get(key):
                self._last[key] = candidate[key]
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, Mapping) else None
        out: list[dict[str, Any]] = []
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, Mapping):
                continue
            fc = part.get("functionCall")
            if isinstance(fc, Mapping):
                out.extend(self._close())
                out.extend(self._function_call(fc, part.get("thoughtSignature")))
            elif isinstance(part.get("text"), str) and part["text"]:
                out.extend(
                    self._text(part["text"], "reasoning" if part.get("thought") else "message")
                )
        return out

    def finish(self, cost: Decimal | None = None) -> list[dict[str, Any]]:
        """The closing events once the upstream stream ended cleanly; idempotent. ``cost``, the
        call's priced cost when the caller has it, goes in ``usage.cost``."""
        if self._closed:
            return []
        self._closed = True
        grounding = self._last.get("groundingMetadata") if self._call.web_search else None
        out = self._close(grounding if isinstance(grounding, Mapping) else None)
        if isinstance(grounding, Mapping):
            item = web_search_item(self._ids.item("ws"), grounding, "completed")
            out.extend(self._whole_item(item))
        reply: dict[str, Any] = {"candidates": [self._last]} if self._last else {}
        if self._blocked and not self._last:
            reply["promptFeedback"] = {"blockReason": "BLOCKED"}
        status, reason = completion_status(reply)
        response = self._snapshot(
            status,
            incomplete_reason=reason,
            usage=response_usage(self.usage or Usage(), cost),
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=response))
        return out

    def fail(self, error: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``response.failed`` for an error that ended the stream (``error``: the OpenAI error
        object, as in :class:`UpstreamStreamError`'s body); the output so far is kept."""
        if self._closed:
            return []
        self._closed = True
        kind = error.get("type")
        code = "rate_limit_exceeded" if kind == "rate_limit_error" else "server_error"
        message = error.get("message")
        response = self._snapshot(
            "failed",
            error={"code": code, "message": message if isinstance(message, str) else "Error"},
            usage=response_usage(self.usage or Usage()),
        )
        return [self._event("response.failed", response=response)]

    # --- items -------------------------------------------------------------------------------

    def _text(self, text: str, kind: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._open is None or self._open.kind != kind:
            out.extend(self._close())
            out.extend(self._open_item(kind))
        assert self._open is not None
        self._open.text.append(text)
        where = {"item_id": self._open.item_id, "output_index": self._open.index}
        if kind == "message":
            out.append(
                self._event(
                    "response.output_text.delta", **where, content_index=0, delta=text, logprobs=[]
                )
            )
        else:
            out.append(
                self._event(
                    "response.reasoning_summary_text.delta", **where, summary_index=0, delta=text
                )
            )
        return out

    def _open_item(self, kind: str) -> list[dict[str, Any]]:
        index = len(self._output)
        item_id = self._ids.item("msg" if kind == "message" else "rs")
        self._open = _Open(kind, item_id, index)
        where = {"item_id": item_id, "output_index": index}
        if kind == "message":
            item = {**message_item(item_id, "", [], "in_progress"), "content": []}
            return [
                self._event("response.output_item.added", output_index=index, item=item),
                self._event(
                    "response.content_part.added",
                    **where,
                    content_index=0,
                    part=output_text_part("", []),
                ),
            ]
        return [
            self._event(
                "response.output_item.added", output_index=index, item=reasoning_item(item_id, "")
            ),
            self._event(
                "response.reasoning_summary_part.added",
                **where,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            ),
        ]

    def _close(self, grounding: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The done events of the open item, which joins the output."""
        current, self._open = self._open, None
        if current is None:
            return []
        text = "".join(current.text)
        where = {"item_id": current.item_id, "output_index": current.index}
        if current.kind == "message":
            annotations = url_citations(text, grounding)
            item = message_item(current.item_id, text, annotations, "completed")
            events = [
                self._event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                ),
                self._event(
                    "response.content_part.done",
                    **where,
                    content_index=0,
                    part=output_text_part(text, annotations),
                ),
            ]
        else:
            item = reasoning_item(current.item_id, text)
            summary = {"type": "summary_text", "text": text}
            events = [
                self._event(
                    "response.reasoning_summary_text.done", **where, summary_index=0, text=text
                ),
                self._event(
                    "response.reasoning_summary_part.done", **where, summary_index=0, part=summary
                ),
            ]
        self._output.append(item)
        events.append(
            self._event("response.output_item.done", output_index=current.index, item=item)
        )
        return events

    def _function_call(self, fc: Mapping[str, Any], signature: Any) -> list[dict[str, Any]]:
        call_id, name, arguments = function_call_fields(fc, signature, self._ids.call)
        item_id = self._ids.item("fc")
        index = len(self._output)
        where = {"item_id": item_id, "output_index": index}
        item = function_call_item(item_id, call_id, name, arguments, "completed")
        events = [
            self._event(
                "response.output_item.added",
                output_index=index,
                item=function_call_item(item_id, call_id, name, "", "in_progress"),
            ),
            self._event("response.function_call_arguments.delta", **where, delta=arguments),
            self._event(
                "response.function_call_arguments.done", **where, name=name, arguments=arguments
            ),
        ]
        self._output.append(item)
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def _whole_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Added and done at once: an item that arrives complete (a web search)."""
        index = len(self._output)
        self._output.append(item)
        return [
            self._event("response.output_item.added", output_index=index, item=item),
            self._event("response.output_item.done", output_index=index, item=item),
        ]
