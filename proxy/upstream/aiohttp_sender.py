"""The production sender: aiohttp's C parser and connection pool.

httpx (httpcore's pure-Python pool, h11, anyio, then httpx's own URL, header and response
models) cost several times more CPU per upstream call than the rest of the proxy together
(docs/benchmarks.md). aiohttp's failures are raised as the proxy's own transport errors
(proxy/errors.py), so nothing above this module knows which library sent the request.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aiohttp

from ..errors import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TransportError,
)
from .client import Body

__all__ = ["AiohttpReply", "AiohttpSender", "upstream_ssl"]


def upstream_ssl(ca_file: Path | None) -> ssl.SSLContext | bool:
    """How upstream certificates are checked: the system's authorities, plus ``ca_file``'s
    (a private gateway's) when given. Never unchecked."""
    if ca_file is None:
        return True
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


def _translate(exc: BaseException) -> TransportError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout(str(exc) or "connect timeout")
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return ReadTimeout(str(exc) or "read timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(str(exc))
    if isinstance(exc, aiohttp.ClientPayloadError):
        return RemoteProtocolError(str(exc))
    return ReadError(str(exc))


class AiohttpReply:
    """One upstream reply, opened before its body is read (see proxy.upstream.UpstreamResponse)."""

    __slots__ = ("_content", "_resp", "headers", "is_closed", "status_code")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status_code = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self._content: bytes | None = None
        self.is_closed = False

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the reply's body has not been read")
        return self._content

    async def aread(self) -> bytes:
        if self._content is None:
            try:
                self._content = await self._resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise _translate(exc) from exc
            finally:
                await self.aclose()
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translate(exc) from exc

    async def aclose(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            # Read to the end: the connection goes back to the pool; cut short: it is closed.
            if self._resp.content.is_eof():
                self._resp.release()
            else:
                self._resp.close()


class AiohttpSender:
    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        keepalive_expiry: float = 60.0,
        ca_file: Path | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._ca_file = ca_file
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the event loop it was made on.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit, limit_per_host=0, keepalive_timeout=self._keepalive,
                ttl_dns_cache=300, ssl=upstream_ssl(self._ca_file),
            )  # fmt: skip
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, skip_auto_headers=("User-Agent",),
                # One upstream session serves every tenant: a cookie kept from one call would
                # ride along on the next tenant's.
                cookie_jar=aiohttp.DummyCookieJar(),
            )  # fmt: skip
        return self._session

    async def open(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]],
        content: Body | None,
        headers: dict[str, str],
    ) -> AiohttpReply:
        try:
            resp = await self._get_session().request(
                method, self._base + path, params=list(params) or None, data=content,
                headers=headers, allow_redirects=False,
            )  # fmt: skip
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translate(exc) from exc
        return AiohttpReply(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
