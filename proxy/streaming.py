"""An ASGI streaming response that forwards chunks as they come and always reports its end.

Unlike a plain StreamingResponse it watches for the client's disconnect while waiting on the
upstream, so an abandoned stream is cancelled at once rather than at the next send, and it calls
``on_close`` exactly once with how the stream ended — the hook the meter hangs on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import anyio
from starlette.types import Receive, Scope, Send

__all__ = ["Outcome", "WatchedStream"]

log = logging.getLogger("gemini_meter.streaming")

Outcome = Literal["completed", "client_disconnected", "failed"]


class WatchedStream:
    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        on_close: Callable[[Outcome], Awaitable[None]],
    ) -> None:
        self._chunks = chunks
        self._status = status_code
        self._headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome: Outcome = "failed"
        sent_all = False
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    nonlocal outcome
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            # Servers also report the end of a finished response this way.
                            if not sent_all:
                                outcome = "client_disconnected"
                                tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch_disconnect)
                try:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": self._status,
                            "headers": self._headers,
                        }
                    )
                    async for chunk in self._chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    sent_all = True
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    outcome = "completed"
                except OSError:  # the server says the client is gone (ASGI 2.4 ClientDisconnected)
                    outcome = "client_disconnected"
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    aclose = getattr(self._chunks, "aclose", None)
                    if aclose is not None:
                        await aclose()
                finally:
                    await self._on_close(outcome)
