"""The one client to Gemini: the key pool, timeouts, retries before the first byte.

It sends through a :class:`Sender` — aiohttp in production (aiohttp_sender.py), an in-process
fake in tests — so this module holds the policy and none of the plumbing. The upstream key is
attached here and nowhere else; it never leaves this module in a log line, an exception
message or a response.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .. import metrics
from ..errors import (
    ConnectTimeout,
    ServiceUnavailable,
    TransportError,
    TransportTimeout,
    UpstreamTimeout,
    UpstreamUnreachable,
)

__all__ = ["Body", "KeyPool", "Sender", "Upstream", "UpstreamReply", "UpstreamResponse"]

log = logging.getLogger("gemini_meter.upstream")

# Statuses worth another attempt: overload and quota (on another key) — never a 4xx the
# request itself caused.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_COOLDOWN_429 = 30.0


class KeyPool:
    """Round-robin over the upstream keys, skipping any key cooling down after a 429."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = list(keys)
        self._next = 0
        self._cool_until = [0.0] * len(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def pick(self) -> int:
        now = time.monotonic()
        n = len(self._keys)
        for i in range(n):
            idx = (self._next + i) % n
            if self._cool_until[idx] <= now:
                self._next = idx + 1
                return idx
        # All cooling: the least-cooled one is the best bet.
        return min(range(n), key=self._cool_until.__getitem__)

    def key(self, idx: int) -> str:
        return self._keys[idx]

    def cool_down(self, idx: int, seconds: float = _COOLDOWN_429) -> None:
        self._cool_until[idx] = time.monotonic() + seconds


# A request body: bytes, or a stream relayed as it arrives (an upload's chunk, never held whole).
Body = bytes | AsyncIterable[bytes]


class UpstreamResponse(Protocol):
    """A reply opened before its body is read. ``content`` is there once ``aread`` returned;
    the transport errors of proxy/errors.py are all a sender's methods raise."""

    status_code: int
    is_closed: bool

    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    async def aread(self) -> bytes: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class Sender(Protocol):
    """Opens one request to the upstream; the client above retries and meters."""

    async def open(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]],
        content: Body | None,
        headers: dict[str, str],
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class UpstreamReply:
    response: UpstreamResponse
    retries: int


class Upstream:
    def __init__(
        self,
        sender: Sender,
        keys: Sequence[str],
        *,
        retries: int = 2,
        backoff: float = 0.25,
    ) -> None:
        self.keys = KeyPool(keys)
        self._sender = sender
        self._retries = retries
        self._backoff = backoff

    async def aclose(self) -> None:
        await self._sender.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        content: Body | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> UpstreamReply:
        """Send a request, retrying connection failures, 429 (on another key) and 5xx.

        Retries happen only here, before any byte has gone back to the client. The reply is
        returned unread when ``stream`` is true; the caller closes it. A streamed body (not
        bytes) is read once as it is sent: it is never retried.
        """
        if not len(self.keys):
            raise ServiceUnavailable("The proxy has no upstream Gemini API key configured.")
        attempt = 0
        retries = self._retries if content is None or isinstance(content, bytes) else 0
        while True:
            idx = self.keys.pick()
            hdrs = dict(headers or {})
            hdrs["x-goog-api-key"] = self.keys.key(idx)
            try:
                response = await self._sender.open(
                    method, path, params=params, content=content, headers=hdrs
                )
            except TransportTimeout as exc:
                metrics.UPSTREAM_ERRORS.labels("timeout").inc()
                if attempt < retries and isinstance(exc, ConnectTimeout):
                    metrics.UPSTREAM_RETRIES.labels("timeout").inc()
                    attempt += 1
                    await self._sleep(attempt)
                    continue
                raise UpstreamTimeout("The Gemini API did not answer in time.") from None
            except TransportError as exc:
                metrics.UPSTREAM_ERRORS.labels("connect").inc()
                log.warning("upstream connection failed: %s", type(exc).__name__)
                if attempt < retries:
                    metrics.UPSTREAM_RETRIES.labels("connect").inc()
                    attempt += 1
                    await self._sleep(attempt)
                    continue
                raise UpstreamUnreachable("The Gemini API could not be reached.") from None
            status = response.status_code
            if status != 200:
                metrics.UPSTREAM_ERRORS.labels(str(status)).inc()
            if status == 429:
                self.keys.cool_down(idx)
            if status in _RETRY_STATUSES and attempt < retries and self._may_retry(status):
                metrics.UPSTREAM_RETRIES.labels(str(status)).inc()
                await response.aclose()
                attempt += 1
                await self._sleep(attempt)
                continue
            if not stream:
                try:
                    await response.aread()
                except TransportTimeout:
                    await response.aclose()
                    raise UpstreamTimeout("The Gemini API did not answer in time.") from None
                except TransportError:
                    await response.aclose()
                    raise UpstreamUnreachable("The Gemini API dropped the connection.") from None
            return UpstreamReply(response, attempt)

    def _may_retry(self, status: int) -> bool:
        # A 429 is a quota answer for that key: retrying the same key only burns time.
        return status != 429 or len(self.keys) > 1

    async def _sleep(self, attempt: int) -> None:
        # Full jitter: spreads the retries of many callers hit by the same blip.
        await asyncio.sleep(random.uniform(0, self._backoff * 2 ** (attempt - 1)))
