"""The one ASGI middleware around every HTTP request: in-flight gauges and the access log.

Both are bookkeeping the client should not wait for. The gauges are two increments; the access
line is written after the reply's last byte went out (a stream's end included), so its
formatting and its write to the log stream cost the client nothing — uvicorn's own access log
writes its line before the reply's headers, on every call's critical path.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ServiceUnavailable, to_response
from .metering.meter import request_arrived
from .metrics import IN_FLIGHT, OPEN_STREAMS
from .redact import redact_query

__all__ = ["Deadline", "ServerMiddleware", "access_line"]

access_log = logging.getLogger("gemini_meter.access")

_UNTRACKED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


# Control characters (a decoded %0A in a path) would forge log lines: shown escaped.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def access_line(scope: Scope, status: int, seconds: float) -> str:
    """``client - "METHOD /path?query HTTP/1.1" status duration``, credentials redacted.

    Query parameters are judged on their decoded names (``?%6bey=`` is ``?key=``), by the
    same rule as every other log line (proxy.redact); the line also passes the log filter.
    """
    client = scope.get("client")
    addr = f"{client[0]}:{client[1]}" if client else "-"
    target = scope["path"].translate(_CONTROL)
    query: bytes = scope.get("query_string", b"")
    if query:
        target = f"{target}?{redact_query(query.decode('latin-1')).translate(_CONTROL)}"
    http = scope.get("http_version", "1.1")
    return f'{addr} - "{scope["method"]} {target} HTTP/{http}" {status} {seconds * 1e3:.1f}ms'


class ServerMiddleware:
    """Keeps IN_FLIGHT and OPEN_STREAMS current and logs one access line per request.

    A request counts in IN_FLIGHT from its arrival until the app returns. Its reply counts in
    OPEN_STREAMS from the moment it is known to stream — a ``text/event-stream`` start, or a
    first body part announcing more to come — until the app returns.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_arrived.set(started)  # (each request runs in a context of its own)
        tracked = scope["path"] not in _UNTRACKED_PATHS
        status = 500  # what the server answers if the app fails before it starts a reply
        streaming = False

        async def watch(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
            if tracked and not streaming and _starts_stream(message):
                streaming = True
                OPEN_STREAMS.inc()
            await send(message)

        if tracked:
            IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, watch)
        finally:
            if tracked:
                IN_FLIGHT.dec()
                if streaming:
                    OPEN_STREAMS.dec()
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s", access_line(scope, status, time.perf_counter() - started))


def _starts_stream(message: Message) -> bool:
    kind = message["type"]
    if kind == "http.response.body":
        return bool(message.get("more_body", False))
    if kind == "http.response.start":
        for name, value in message.get("headers", ()):
            if name.lower() == b"content-type":
                return bytes(value).startswith(b"text/event-stream")
    return False


class Deadline:
    """Bounds every request to a (non-metered) sub-application — the admin API, whose routes
    wait on the database — at ``seconds``: a request that has had no answer by then gets 503
    with Retry-After, in the OpenAI-style envelope the admin API uses."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.seconds):
                await self.app(scope, receive, watch)
        except TimeoutError:
            if started:
                raise
            late = ServiceUnavailable(
                "The database did not answer in time; retry shortly.", headers={"Retry-After": "1"}
            )
            await to_response(late, "openai")(scope, receive, send)
