"""Tenant API keys: where clients put them, and the cached, hashed lookup behind them."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from .caller import Caller
from .db.queries import KeyInfo, hash_key, lookup_key
from .errors import ServiceUnavailable, Unauthenticated

__all__ = ["KeyCache", "client_key"]

log = logging.getLogger("gemini_meter.auth")


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


class KeyCache:
    """Maps a presented key to its tenant, caching answers (found or not) for ``ttl`` seconds.

    The TTL bounds how long a revoked key or disabled tenant keeps working on any replica; the
    cache keeps the database off the request path otherwise. Concurrent misses on the same key
    share one query.
    """

    def __init__(self, sessionmaker: async_sessionmaker[Any], ttl: float = 1.0) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}
        self._pending: dict[str, asyncio.Future[KeyInfo | None]] = {}

    async def authenticate(self, secret: str | None) -> Caller:
        if not secret:
            raise Unauthenticated("Missing API key: send it as x-goog-api-key, ?key= or Bearer.")
        digest = hash_key(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            info = hit[1]
        else:
            try:
                info = await self._load(digest, now)
            except Exception as exc:
                # Database down: keep serving what we knew (stale-if-error), so an outage
                # costs metering nothing (the ledger spools) and known tenants keep working.
                if hit is None:
                    log.error("key lookup failed and nothing cached: %s", type(exc).__name__)
                    raise ServiceUnavailable(
                        "The proxy cannot check API keys right now; retry shortly."
                    ) from None
                info = hit[1]
        # The hash index found the row; compare in constant time anyway, so no timing path
        # depends on how much of a guessed key matched.
        if info is None or not hmac.compare_digest(info.key_hash, digest) or not info.active:
            raise Unauthenticated("Invalid or revoked API key.")
        return info.caller

    async def _load(self, digest: str, now: float) -> KeyInfo | None:
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[KeyInfo | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = fut
        try:
            async with self._sessionmaker() as session:
                info = await lookup_key(session, digest)
            if len(self._cache) > 100_000:  # bound memory against floods of random keys
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, info)
            fut.set_result(info)
            return info
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._pending[digest]
