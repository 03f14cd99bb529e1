"""The one ASGI middleware around every HTTP request: in-flight gauges and the access log.

Both are bookkeeping the client should not wait for. The gauges are two increments; the access
line is written after the reply's last byte went out (a stream's end included), so its
formatting and its write to the log stream cost the client nothing — uvicorn's own access log
writes its line before the reply's headers, on every call's critical path.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import redact_keys
from .metering.meter import request_arrived
from .metrics import IN_FLIGHT, OPEN_STREAMS

__all__ = ["ServerMiddleware", "access_line"]

access_log = logging.getLogger("gemini_meter.access")

_UNTRACKED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def access_line(scope: Scope, status: int, seconds: float) -> str:
    """``client - "METHOD /path?query HTTP/1.1" status duration``, with ``?key=`` redacted."""
    client = scope.get("client")
    addr = f"{client[0]}:{client[1]}" if client else "-"
    target = scope["path"]
    query: bytes = scope.get("query_string", b"")
    if query:
        target = f"{target}?{query.decode('latin-1')}"
        if "key=" in target.lower():  # tenant keys may arrive as ?key=: never in a log line
            target = redact_keys(target)
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
