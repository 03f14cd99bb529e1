"""The Live sessions this process relays, so a shutdown can tell them to end before it cuts them.

One registry per process (like the metrics' registry): the relay adds each session while it
runs; ``gemini-meter serve`` drains it when SIGTERM comes, before uvicorn closes connections
(uvicorn alone would close every WebSocket at once with 1012).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["SESSIONS", "LiveSessions", "Session"]

SHUTDOWN_CODE = 1001  # RFC 6455 "going away"
SHUTDOWN_REASON = "The proxy is shutting down; reconnect to continue."


class Session(Protocol):
    def go_away(self, seconds: float) -> None: ...
    def stop(self, cause: str, code: int, reason: str) -> None: ...


class LiveSessions:
    def __init__(self) -> None:
        self._open: set[Session] = set()
        self.draining = False

    def add(self, session: Session) -> None:
        self._open.add(session)

    def discard(self, session: Session) -> None:
        self._open.discard(session)

    def __len__(self) -> int:
        return len(self._open)

    async def drain(self, grace: float) -> None:
        """Send every open session a ``goAway`` (``grace`` seconds left), wait for them to end
        on their own for that long, then close those left with 1001 and a reason."""
        self.draining = True
        for s in list(self._open):
            s.go_away(grace)
        if await self._wait(grace):
            return
        for s in list(self._open):
            s.stop("shutdown", SHUTDOWN_CODE, SHUTDOWN_REASON)
        await self._wait(5.0)  # each writes its rows and closes both sides

    async def _wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self._open and time.monotonic() < deadline:  # noqa: ASYNC110 (a deadline too)
            await asyncio.sleep(0.05)
        return not self._open


SESSIONS = LiveSessions()
