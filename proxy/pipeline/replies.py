"""Replies of metered calls: a whole reply, or a stream forwarded event by event.

A route says how its API renders a reply (passed through for Gemini's own routes, translated
for OpenAI's); these functions do the rest the same way for every route: read or pump the
upstream reply, observe its usage, close the call exactly once — also when the upstream
fails, the client leaves or the stream breaks — and attach the metering headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ..errors import TransportError
from ..formats import decimal_text
from ..metering.meter import CallMeter
from ..pricing.cost import PricedCall
from ..redact import StreamScrubber, scrub_bytes
from ..sse import EventDecoder, parse_event
from ..streaming import Outcome, WatchedStream
from ..upstream import UpstreamResponse
from .call import CallResult, MeteredCall

__all__ = [
    "COST_HEADER",
    "OVERHEAD_HEADER",
    "Failed",
    "Observer",
    "Price",
    "StreamHandler",
    "Succeeded",
    "fail",
    "finish",
    "meter_headers",
    "read_whole",
    "stream",
]

COST_HEADER = "x-gemini-meter-cost-usd"
OVERHEAD_HEADER = "x-gemini-meter-overhead-ms"

R = TypeVar("R")
# How a route renders an upstream reply once its call is closed: a success (the raw body and,
# when it is a JSON object, its parse) or a failure (any non-200 status).
Succeeded = Callable[[bytes, dict[str, Any] | None, CallResult], R]
Failed = Callable[[UpstreamResponse, bytes, CallResult], R]
# A success priced from its reply rather than its tokens (per image): a pure function of
# proxy.pricing, which may also note what it counted on the call's meter.
Price = Callable[[dict[str, Any]], PricedCall]


def meter_headers(call: MeteredCall, result: CallResult) -> dict[str, str]:
    """The tenant's x-ratelimit-* headers, the proxy's overhead and, when known, the cost."""
    headers = call.quota_headers
    headers[OVERHEAD_HEADER] = f"{result.overhead_ms:.3f}"
    if result.cost_usd is not None:
        headers[COST_HEADER] = decimal_text(result.cost_usd)
    return headers


async def read_whole(reply: UpstreamResponse) -> bytes:
    """The body of a reply, whether it was read already or opened as a stream, with every
    secret scrubbed (Google quotes the key in some error messages: no byte of it goes on)."""
    if not reply.is_closed:
        try:
            await reply.aread()
        finally:
            await reply.aclose()
    return scrub_bytes(reply.content)


async def finish(
    call: MeteredCall,
    reply: UpstreamResponse,
    succeeded: Succeeded[R],
    failed: Failed[R],
    *,
    price: Price | None = None,
) -> R:
    """A whole reply (not streamed, or a stream that failed before its first event).
    ``price``: a success's cost from the reply itself (images made), else from its tokens."""
    if reply.status_code != 200:
        return await fail(call, reply, failed)
    content = await read_whole(reply)
    body = parse_event(content)
    if body is not None:
        call.meter.observe(body)
    priced = None if price is None else price(body or {})
    return succeeded(content, body, call.close(200, priced=priced))


async def fail(call: MeteredCall, reply: UpstreamResponse, failed: Failed[R]) -> R:
    """An upstream reply that is not a 200: the call closes with its status, then renders."""
    content = await read_whole(reply)
    status = reply.status_code
    return failed(reply, content, call.close(status, error_class=f"upstream_{status}"))


class StreamHandler(Protocol):
    """What a route does with a stream's bytes: observe them, and say what the client gets."""

    done: bool  # stop reading the upstream (an error was sent in-band)

    def feed(self, chunk: bytes, meter: CallMeter) -> bytes | None: ...
    def interrupted(self) -> bytes | None: ...  # the upstream connection broke
    def finish(self) -> bytes | None: ...  # the upstream stream ended


class Observer:
    """Forwards a stream's bytes unchanged and observes each event as it passes."""

    __slots__ = ("_decoder", "done")

    def __init__(self, decoder: EventDecoder) -> None:
        self._decoder = decoder
        self.done = False

    def feed(self, chunk: bytes, meter: CallMeter) -> bytes:
        for data in self._decoder.feed(chunk):
            event = parse_event(data)
            if event is not None:
                if "error" in event:
                    meter.error_class = "upstream_stream_error"
                meter.observe(event)
        return chunk

    def interrupted(self) -> None:
        return None  # nothing can be said to the client once the status went out; the row tells

    def finish(self) -> None:
        return None


def stream(
    call: MeteredCall,
    reply: UpstreamResponse,
    handler: StreamHandler,
    headers: dict[str, str],
    head: bytes = b"",
) -> WatchedStream:
    """Forward a 200 stream as it arrives; the call closes when it ends, however it ends.
    ``head``: what the client gets before the first upstream byte (an API's opening events)."""
    return WatchedStream(
        _pump(reply, call.meter, handler, head),
        headers=headers | call.quota_headers,
        on_close=_closer(call, reply),
    )


async def _pump(
    reply: UpstreamResponse, meter: CallMeter, handler: StreamHandler, head: bytes
) -> AsyncIterator[bytes]:
    if head:
        yield head
    # The handler sees the upstream's bytes less any secret an error event quotes, even one the
    # network split over two chunks (the scrubber holds back a tail that may begin one).
    scrubber = StreamScrubber()
    try:
        async for chunk in reply.aiter_bytes():
            meter.first_byte()
            out = handler.feed(scrubber.feed(chunk), meter)
            if out:
                yield out
            if handler.done:
                return
    except TransportError as exc:
        meter.error_class = f"upstream_{type(exc).__name__}"
        tail = handler.interrupted()
        if tail:
            yield tail
        return
    held = scrubber.flush()
    out = handler.feed(held, meter) if held else None
    tail = handler.finish()
    if out or tail:
        yield (out or b"") + (tail or b"")


def _closer(call: MeteredCall, reply: UpstreamResponse) -> Callable[[Outcome], Awaitable[None]]:
    async def on_close(outcome: Outcome) -> None:
        try:
            await reply.aclose()
        finally:
            meter = call.meter
            # An upstream error seen first explains the end better than what followed it.
            if meter.error_class is None and outcome != "completed":
                meter.error_class = (
                    "client_disconnected" if outcome == "client_disconnected" else "stream_failed"
                )
            call.close(200)

    return on_close
