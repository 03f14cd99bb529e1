"""An upstream sender that calls an ASGI app in process: the proxy's whole pipeline, no sockets.

    svc = Services.build(settings, upstream_sender=AsgiSender(FakeGemini(api_key=KEY)))

The reply is opened as soon as the app starts its response, and its body streams through a
queue as the app sends it, so streams behave as over a socket (unlike httpx's ASGITransport,
which buffers the whole body). An app that fails before it answers looks like a refused
connection; one that fails mid-body, like a connection cut.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from proxy.errors import ConnectError, RemoteProtocolError

__all__ = ["AsgiReply", "AsgiSender"]

_END = object()


class AsgiReply:
    def __init__(
        self, status: int, headers: Mapping[str, str], body: asyncio.Queue[Any], task: Any
    ) -> None:
        self.status_code = status
        self.headers = headers
        self._body = body
        self._task: asyncio.Task[None] = task
        self._content: bytes | None = None
        self.is_closed = False

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the reply's body has not been read")
        return self._content

    async def aread(self) -> bytes:
        if self._content is None:
            self._content = b"".join([chunk async for chunk in self.aiter_bytes()])
            await self.aclose()
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._body.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise RemoteProtocolError(f"the app failed mid-reply: {item!r}")
            if item:
                yield item

    async def aclose(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class AsgiSender:
    def __init__(self, app: Any, host: str = "upstream.test") -> None:
        self._app = app
        self._host = host

    async def open(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]],
        content: bytes | AsyncIterable[bytes] | None,
        headers: dict[str, str],
    ) -> AsgiReply:
        raw_path, _, query = path.partition("?")
        query = "&".join(q for q in (query, urlencode(list(params))) if q)
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": raw_path,
            "raw_path": raw_path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", self._host.encode())]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1), "server": (self._host, 80),
        }  # fmt: skip
        request_sent = False
        started: asyncio.Future[tuple[int, dict[str, str]]] = (
            asyncio.get_running_loop().create_future()
        )
        body: asyncio.Queue[Any] = asyncio.Queue()

        chunks = None if content is None or isinstance(content, bytes) else aiter(content)

        async def receive() -> dict[str, Any]:
            nonlocal request_sent
            if chunks is not None and not request_sent:  # a streamed body, chunk by chunk
                try:
                    return {"type": "http.request", "body": await anext(chunks), "more_body": True}
                except StopAsyncIteration:
                    request_sent = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            if not request_sent:
                request_sent = True
                body = content if isinstance(content, bytes) else b""
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects on its own
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in message["headers"]}
                started.set_result((message["status"], hdrs))
            elif message["type"] == "http.response.body":
                body.put_nowait(message.get("body", b""))
                if not message.get("more_body", False):
                    body.put_nowait(_END)

        async def run() -> None:
            try:
                await self._app(scope, receive, send)
            except Exception as exc:
                if not started.done():
                    started.set_exception(ConnectError(f"the app failed: {exc!r}"))
                else:
                    body.put_nowait(exc)
                return
            if not started.done():
                started.set_exception(ConnectError("the app ended without a reply"))
            body.put_nowait(_END)

        task = asyncio.create_task(run())
        status, hdrs = await started
        return AsgiReply(status, hdrs, body, task)

    async def aclose(self) -> None:
        return None
