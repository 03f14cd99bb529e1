"""Resumable upload sessions in progress: the proxy's own upload id → what the session needs.

The upload URL Google returns names Google's host and its upload id; the client gets a URL on
the proxy with an opaque id of the proxy's instead, and the two are mapped here, in this
process's memory (never in a reply, a log line or the database). A session's chunks must
therefore reach the replica that started it (docs/resources.md: route ``/upload/`` with session
affinity on the ``upload_id`` query parameter). Abandoned sessions are ended after ``ttl`` (an
upload Google no longer accepts either), and at most ``limit`` are kept.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Uploads"]

T = TypeVar("T")
SESSION_TTL = 7 * 86_400.0  # Google keeps a resumable session for a week
MAX_SESSIONS = 10_000


class Uploads(Generic[T]):
    def __init__(
        self,
        *,
        ttl: float = SESSION_TTL,
        limit: int = MAX_SESSIONS,
        on_expire: Callable[[T], None] | None = None,
    ) -> None:
        self._ttl = ttl
        self._limit = limit
        self.on_expire = on_expire
        self._sessions: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, session: T) -> str:
        """Keep ``session``; its id (URL-safe, unguessable: it is the chunks' credential)."""
        self._evict()
        upload_id = secrets.token_urlsafe(32)
        self._sessions[upload_id] = (time.monotonic(), session)
        return upload_id

    def get(self, upload_id: str) -> T | None:
        found = self._sessions.get(upload_id)
        if found is None:
            return None
        if time.monotonic() - found[0] >= self._ttl:
            self._end_expired(upload_id)
            return None
        return found[1]

    def end(self, upload_id: str) -> T | None:
        found = self._sessions.pop(upload_id, None)
        return None if found is None else found[1]

    def _evict(self) -> None:
        now = time.monotonic()
        while self._sessions:
            upload_id, (started, _) = next(iter(self._sessions.items()))
            if now - started < self._ttl and len(self._sessions) < self._limit:
                return
            self._end_expired(upload_id)

    def _end_expired(self, upload_id: str) -> None:
        session = self.end(upload_id)
        if session is not None and self.on_expire is not None:
            self.on_expire(session)
