"""The Live API's upstream: one WebSocket per session, opened with aiohttp (the upstream stack).

    live = LiveUpstream("https://generativelanguage.googleapis.com", keys, ...)
    conn = await live.connect("v1beta")          # wss://.../ws/google.ai...BidiGenerateContent
    await conn.send(frame); frame = await conn.receive()   # str | bytes, or None once closed
    conn.close_code, conn.close_reason                     # how the upstream ended it

The URL derives from the upstream base URL (``https`` → ``wss``, ``http`` → ``ws``); the key
is the proxy's, from the same pool as HTTP calls, sent as ``x-goog-api-key`` (never in the
URL, where a log line could keep it). Failures are the proxy's own transport errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from ..errors import ConnectError, ConnectTimeout
from .aiohttp_sender import upstream_ssl
from .client import KeyPool

__all__ = ["LiveConnection", "LiveUpstream", "live_url"]

_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"


def live_url(base_url: str, version: str) -> str:
    """The Live API's WebSocket URL under the upstream base URL (wss for https)."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return base + _PATH.format(version=version)


class LiveConnection:
    """One upstream Live session. ``receive`` returns None once the upstream closed (then
    ``close_code`` / ``close_reason`` say how; 1006 when the connection just broke)."""

    __slots__ = ("_ws", "close_code", "close_reason")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.close_code: int | None = None
        self.close_reason = ""

    async def send(self, frame: str | bytes) -> None:
        try:
            if isinstance(frame, str):
                await self._ws.send_str(frame)
            else:
                await self._ws.send_bytes(frame)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ConnectError(f"upstream Live connection lost: {exc}") from exc

    async def receive(self) -> str | bytes | None:
        while True:
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                text: str = msg.data
                return text
            if msg.type is aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
                return data
            if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue  # answered by aiohttp itself
            if msg.type is aiohttp.WSMsgType.CLOSE:
                self.close_code = msg.data if isinstance(msg.data, int) else 1005
                self.close_reason = msg.extra if isinstance(msg.extra, str) else ""
            elif self.close_code is None:  # CLOSED / CLOSING / ERROR: no close frame came
                self.close_code = self._ws.close_code or 1006
                if msg.type is aiohttp.WSMsgType.ERROR:
                    self.close_reason = "upstream connection lost"
            return None

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._ws.closed:
            # Already gone: nothing to tell it.
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, TimeoutError):
                await self._ws.close(code=code, message=reason.encode())


class LiveUpstream:
    """Opens upstream Live sessions; one aiohttp session (and TLS context) for all of them."""

    def __init__(
        self,
        base_url: str,
        keys: KeyPool,
        *,
        connect_timeout: float = 10.0,
        max_message_bytes: int = 16 * 1024 * 1024,
        ca_file: Path | None = None,
    ) -> None:
        self.base_url = base_url
        self._keys = keys
        self._connect_timeout = connect_timeout
        self._max_message_bytes = max_message_bytes
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the event loop it was made on.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=upstream_ssl(self._ca_file), limit=0),
                skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def connect(self, version: str) -> LiveConnection:
        """Open the upstream session (raises a TransportError if it cannot be opened)."""
        if not len(self._keys):
            raise ConnectError("no upstream key is configured")
        key = self._keys.key(self._keys.pick())
        try:
            # A hung handshake must not hold the client: bounded like an HTTP connect.
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._client().ws_connect(
                    live_url(self.base_url, version),
                    headers={"x-goog-api-key": key},
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    max_msg_size=self._max_message_bytes,
                    autoping=True,
                    compress=0,
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise ConnectError(f"upstream refused the Live handshake: HTTP {exc.status}") from exc
        except TimeoutError as exc:
            raise ConnectTimeout("upstream Live handshake timed out") from exc
        except (OSError, aiohttp.ClientError) as exc:
            raise ConnectError(f"upstream Live connection failed: {type(exc).__name__}") from exc
        return LiveConnection(ws)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
