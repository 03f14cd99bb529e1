"""Tenant API keys: where clients put them, and the cached, hashed lookup behind them."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from .caller import Caller
from .db.queries import KeyInfo, hash_key, insert_chunks, lookup_keys
from .errors import ServiceUnavailable, Unauthenticated

__all__ = ["KeyCache", "client_key"]

log = logging.getLogger("gemini_meter.auth")

# Keys used within this window are kept fresh in the background; an idle key is looked up
# again (bounded by the lookup timeout) when it comes back.
REFRESH_WINDOW = 300.0
# A lookup for one key gives up after this long (a request stops waiting for it much sooner,
# but its answer, if it comes, is still cached).
LOAD_TIMEOUT = 10.0
# Known keys unused this long are forgotten (memory); unknown keys are capped in number.
FORGET_AFTER = 86_400.0
MAX_UNKNOWN = 100_000
# Lookups waiting on the database at once; past this a new key is refused at once (503).
MAX_PENDING = 256


def client_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The tenant key, as the SDKs and curl send it: x-goog-api-key, ?key=, or Bearer."""
    key = headers.get("x-goog-api-key")
    if key:
        return key.strip()
    key = query.get("key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class _Known:
    __slots__ = ("info", "loaded", "used")

    def __init__(self, info: KeyInfo, loaded: float) -> None:
        self.info = info
        self.loaded = loaded
        self.used = loaded


class KeyCache:
    """Maps a presented key to its tenant without putting the database on the request path.

    - Keys in use are refreshed in the background, every half ``ttl``, in one query: a revoked
      key or a disabled tenant stops working within ``ttl``, and a request finds its key fresh.
    - When the database is slow, hung or down, requests get the last good answer at once
      (stale-if-error); the refresh keeps trying in the background.
    - Only a key this process has never seen (or not for a while) is looked up on the request
      path, and that wait is bounded by ``lookup_timeout``: past it, 503. Concurrent lookups
      of one key share one query.
    - ``ttl`` 0 disables the cache: every request looks its key up (bounded as above).
    """

    def __init__(
        self, sessionmaker: async_sessionmaker[Any], ttl: float = 1.0, lookup_timeout: float = 1.0
    ) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._lookup_timeout = lookup_timeout
        self._known: dict[str, _Known] = {}
        self._unknown: dict[str, float] = {}  # digest -> when the database said "no such key"
        self._pending: dict[str, asyncio.Task[KeyInfo | None]] = {}
        self._healthy = True  # the last database answer (lookup or refresh) was a good one
        self._refresher: asyncio.Task[None] | None = None
        self._refreshing: float | None = None  # when the refresh in flight started

    def start(self) -> None:
        if self._refresher is None and self._ttl > 0:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="key-refresh")

    async def stop(self) -> None:
        tasks = [t for t in (self._refresher, *self._pending.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._refresher = None

    async def authenticate(self, secret: str | None) -> Caller:
        if not secret:
            raise Unauthenticated("Missing API key: send it as x-goog-api-key, ?key= or Bearer.")
        return await self.authenticate_digest(hash_key(secret))

    async def authenticate_digest(self, digest: str) -> Caller:
        """Check a key known by its digest again (an upload session's chunks carry no key: the
        key that started it must still be valid); the same cache and bounds as a key."""
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None:
            known.used = now
            info: KeyInfo | None = known.info
            if now - known.loaded >= self._ttl:
                if self._healthy and self._refreshing is None:
                    info = await self._lookup(digest, known)
                elif not self._healthy:  # an outage: the last answer, and ask again meanwhile
                    self._start_load(digest)
                # (else a background refresh is late, the database slow: the last answer too)
        elif now - self._unknown.get(digest, -self._ttl) < self._ttl:
            info = None
        else:
            info = await self._lookup(digest, None)
        # The hash index found the row; compare in constant time anyway, so no timing path
        # depends on how much of a guessed key matched.
        if info is None or not hmac.compare_digest(info.key_hash, digest) or not info.active:
            raise Unauthenticated("Invalid or revoked API key.")
        return info.caller

    async def _lookup(self, digest: str, known: _Known | None) -> KeyInfo | None:
        """Ask the database, waiting at most ``lookup_timeout``; stale-if-error."""
        task = self._start_load(digest)
        try:
            if task is None:
                raise TimeoutError("too many key lookups waiting on the database")
            return await asyncio.wait_for(asyncio.shield(task), self._lookup_timeout)
        except Exception as exc:
            # Database down or hung: keep serving what we knew, so an outage costs metering
            # nothing (the ledger spools) and known tenants keep working.
            self._healthy = False
            if known is not None:
                return known.info
            log.error("key lookup failed and nothing cached: %s", type(exc).__name__)
            raise ServiceUnavailable(
                "The proxy cannot check API keys right now; retry shortly.",
                headers={"Retry-After": "1"},
            ) from None

    def _start_load(self, digest: str) -> asyncio.Task[KeyInfo | None] | None:
        """The one query for ``digest`` in flight, started if need be (None: too many)."""
        task = self._pending.get(digest)
        if task is None and len(self._pending) < MAX_PENDING:
            task = self._pending[digest] = asyncio.create_task(self._load(digest))
            task.add_done_callback(lambda t: self._done(digest, t))
        return task

    async def _load(self, digest: str) -> KeyInfo | None:
        async with asyncio.timeout(LOAD_TIMEOUT):  # never a pooled connection held for long
            async with self._sessionmaker() as session:
                found = await lookup_keys(session, [digest])
        self._remember(found, [digest])
        return found.get(digest)

    def _done(self, digest: str, task: asyncio.Task[KeyInfo | None]) -> None:
        self._pending.pop(digest, None)
        if not task.cancelled() and task.exception() is not None:
            self._healthy = False

    def _remember(self, found: dict[str, KeyInfo], asked: list[str]) -> None:
        now = time.monotonic()
        self._healthy = True
        for digest in asked:
            info = found.get(digest)
            if info is None:
                self._known.pop(digest, None)
                if len(self._unknown) >= MAX_UNKNOWN:  # a flood of random keys: bounded
                    self._unknown.clear()
                self._unknown[digest] = now
                continue
            self._unknown.pop(digest, None)
            known = self._known.get(digest)
            if known is None:
                self._known[digest] = _Known(info, now)
            else:
                known.info, known.loaded = info, now

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 2)
            try:
                await self.refresh()
            except Exception as exc:
                if self._healthy:
                    log.warning(
                        "refreshing cached keys failed (%s); serving the last good copy",
                        type(exc).__name__,
                    )
                self._healthy = False

    async def refresh(self) -> None:
        """Reload the keys in use that are half a ``ttl`` old, in chunks of one query each."""
        now = time.monotonic()
        for digest in [d for d, k in self._known.items() if now - k.used > FORGET_AFTER]:
            del self._known[digest]
        due = [
            d
            for d, k in self._known.items()
            if now - k.used < REFRESH_WINDOW and now - k.loaded >= self._ttl / 2
        ]
        if not due:
            return
        self._refreshing = now
        try:
            # As long as a request would wait for one key: past it the database is unhealthy,
            # and requests stop even trying until it answers again.
            async with asyncio.timeout(max(self._lookup_timeout, self._ttl)):
                for chunk in insert_chunks(due):
                    async with self._sessionmaker() as session:
                        found = await lookup_keys(session, chunk)
                    self._remember(found, list(chunk))
        finally:
            self._refreshing = None
