"""Stream handlers of the OpenAI routes: Gemini's SSE events in, an OpenAI API's events out.

Each is a :class:`proxy.pipeline.StreamHandler` around one pure translator: it observes every
upstream event's usage on the way, turns an error event into the API's own in-band error and
stops, and at the end prices the call (``call.price_now()``) so the last event carries its cost
— ``usage.cost`` in chat's and completions' usage chunk and in ``response.completed`` — and an
SSE comment line ``: x-gemini-meter-cost-usd: <cost>`` goes just before it, for every stream, as
a cost header would on a whole reply (SSE parsers skip comment lines).

:class:`PromptStreams` chains the upstream streams of a completions request with several
prompts, one after another, into the one reply the pipeline pumps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from ..errors import ProxyError
from ..formats import decimal_text
from ..metering.meter import CallMeter
from ..pipeline import COST_HEADER, MeteredCall, read_whole
from ..sse import SSEDecoder, encode_sse, parse_event
from ..upstream import UpstreamResponse
from .completions import CompletionsStreamTranslator
from .errors import UpstreamStreamError, openai_error_from_upstream
from .responses_stream import ResponsesStreamTranslator, encode_event
from .stream import ChatStreamTranslator

__all__ = ["ChatStream", "CompletionsStream", "PromptStreams", "ResponsesStream", "cost_comment"]

DONE = b"data: [DONE]\n\n"
INTERRUPTED: dict[str, Any] = {
    "error": {"message": "The upstream stream was interrupted.", "type": "api_error",
              "param": None, "code": "upstream_stream_interrupted"}
}  # fmt: skip


def cost_comment(cost: Decimal | None) -> bytes:
    """The call's cost as an SSE comment line (nothing when the model has no price)."""
    if cost is None:
        return b""
    return b": " + COST_HEADER.encode() + b": " + decimal_text(cost).encode() + b"\n\n"


class _Translated:
    """The shared part: decode, observe, translate, stop on an error event, price at the end."""

    __slots__ = ("_call", "_decoder", "done", "part")

    def __init__(self, call: MeteredCall) -> None:
        self._call = call
        self._decoder = SSEDecoder()
        self.done = False
        self.part = 0  # which upstream reply the events come from (several: one per prompt)

    def feed(self, chunk: bytes, meter: CallMeter) -> bytes | None:
        out: list[bytes] = []
        for data in self._decoder.feed(chunk):
            event = parse_event(data)
            if event is None:
                continue
            meter.observe(event, self.part)
            try:
                out.extend(self._translate(event))
            except UpstreamStreamError as exc:
                # An error after the 200 went out: tell the client in-band and stop.
                meter.error_class = "upstream_stream_error"
                out.append(self._error(exc.body))
                self.done = True
                break
        return b"".join(out) if out else None

    def interrupted(self) -> bytes:
        return self._error(INTERRUPTED)

    def finish(self) -> bytes:
        cost = self._call.price_now()
        return cost_comment(cost) + self._finish(cost)

    def next_part(self, part: int) -> None:
        """The events that follow come from another upstream reply."""
        self._decoder = SSEDecoder()
        self.part = part

    def _translate(self, event: Mapping[str, Any]) -> list[bytes]:
        raise NotImplementedError

    def _error(self, body: Mapping[str, Any]) -> bytes:
        """The API's in-band error for ``body``, an OpenAI error envelope."""
        return encode_sse(body)

    def _finish(self, cost: Decimal | None) -> bytes:
        raise NotImplementedError


class ChatStream(_Translated):
    """``chat.completion.chunk`` events, then ``data: [DONE]``."""

    __slots__ = ("_translator",)

    def __init__(self, call: MeteredCall, translator: ChatStreamTranslator) -> None:
        super().__init__(call)
        self._translator = translator

    def _translate(self, event: Mapping[str, Any]) -> list[bytes]:
        return [encode_sse(c) for c in self._translator.feed(event)]

    def _finish(self, cost: Decimal | None) -> bytes:
        return b"".join(encode_sse(c) for c in self._translator.finish(cost)) + DONE


class CompletionsStream(_Translated):
    """``text_completion`` chunks of every prompt's stream in turn, then ``data: [DONE]``."""

    __slots__ = ("_refusal", "_translator")

    def __init__(self, call: MeteredCall, translator: CompletionsStreamTranslator) -> None:
        super().__init__(call)
        self._translator = translator
        self._refusal: Mapping[str, Any] | None = None

    def refused(self, body: Mapping[str, Any], error_class: str) -> None:
        """A later prompt's call failed before its stream began: the stream ends with
        ``body``'s error (the 200 went out with the first prompt)."""
        self._refusal = body
        self._call.meter.error_class = error_class

    def _translate(self, event: Mapping[str, Any]) -> list[bytes]:
        return [encode_sse(c) for c in self._translator.feed(event, prompt=self.part)]

    def finish(self) -> bytes:
        if self._refusal is not None:
            return self._error(self._refusal)
        return super().finish()

    def _finish(self, cost: Decimal | None) -> bytes:
        return b"".join(encode_sse(c) for c in self._translator.finish(cost)) + DONE


class ResponsesStream(_Translated):
    """The Responses API's typed events; an error ends it with ``response.failed`` (this API
    has no ``[DONE]``)."""

    __slots__ = ("_translator",)

    def __init__(self, call: MeteredCall, translator: ResponsesStreamTranslator) -> None:
        super().__init__(call)
        self._translator = translator

    def head(self) -> bytes:
        """``response.created`` and ``response.in_progress``, sent before any upstream byte."""
        return b"".join(encode_event(e) for e in self._translator.start())

    def _translate(self, event: Mapping[str, Any]) -> list[bytes]:
        return [encode_event(e) for e in self._translator.feed(event)]

    def _error(self, body: Mapping[str, Any]) -> bytes:
        error = body.get("error")
        failed = self._translator.fail(error if isinstance(error, Mapping) else {})
        return b"".join(encode_event(e) for e in failed)

    def _finish(self, cost: Decimal | None) -> bytes:
        return b"".join(encode_event(e) for e in self._translator.finish(cost))


class PromptStreams:
    """The upstream streams of a completions request's prompts as one upstream reply: the next
    prompt goes upstream (through the same metered call) when the previous stream has ended,
    so the call holds one upstream connection at a time. A prompt whose call fails ends the
    stream with that error (:meth:`CompletionsStream.refused`)."""

    status_code = 200
    content = b""

    def __init__(
        self,
        first: UpstreamResponse,
        send: Callable[[int], Awaitable[UpstreamResponse]],
        count: int,
        handler: CompletionsStream,
    ) -> None:
        self._current = first
        self._send = send
        self._count = count
        self._handler = handler

    @property
    def headers(self) -> Mapping[str, str]:
        return self._current.headers

    @property
    def is_closed(self) -> bool:
        return self._current.is_closed

    @is_closed.setter
    def is_closed(self, _: bool) -> None:  # UpstreamResponse declares a plain attribute
        raise AttributeError("is_closed follows the current prompt's reply")

    async def aread(self) -> bytes:  # the pipeline never reads a 200 stream whole
        raise NotImplementedError

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for prompt in range(self._count):
            if prompt:
                await self._current.aclose()
                if not await self._next(prompt):
                    return
            async for chunk in self._current.aiter_bytes():
                yield chunk

    async def _next(self, prompt: int) -> bool:
        try:
            reply = await self._send(prompt)
        except ProxyError as exc:  # the call was closed with its status by call.send
            self._handler.refused(exc.openai_body(), type(exc).__name__)
            return False
        self._current = reply
        if reply.status_code != 200:
            _, body = openai_error_from_upstream(reply.status_code, await read_whole(reply))
            self._handler.refused(body, f"upstream_{reply.status_code}")
            return False
        self._handler.next_part(prompt)
        return True

    async def aclose(self) -> None:
        await self._current.aclose()
