"""A fast fake of Google's Gemini REST API, for benchmarks: raw asyncio + httptools on uvloop.

It must never be the bottleneck, so there is no framework: one ``asyncio.Protocol`` per
connection, ``httptools`` to parse, replies built once and written as bytes. It speaks Gemini's
real shapes (docs/gemini-protocol.md):

- ``POST /{v1beta,v1}/models/{id}:generateContent`` → one GenerateContentResponse with usage;
- ``:streamGenerateContent?alt=sse`` → ``N`` SSE events (CRLF framing, chunked transfer), the
  first at once and the rest ``delay`` apart; prompt-only usage early, full usage on the last;
  without ``alt=sse`` the same events as Google's incrementally delivered JSON array;
- ``:countTokens``, ``:embedContent``, ``:batchEmbedContents`` (one vector per request);
- ``GET /{v}/models`` and ``GET /{v}/models/{id}``.

A missing ``x-goog-api-key`` gets Google's 400 API_KEY_INVALID, as the real API answers.

Benchmark controls (never proxied: the runner calls them on the fake directly):
``GET /_bench/stats`` (requests served per action, streams open), ``POST /_bench/config``
(``{"stream_chunks": 10, "stream_delay_ms": 20, "latency_ms": 0}``), ``POST /_bench/reset``.

    python -m bench.fake_upstream --port 9100 [--stream-chunks 10 --stream-delay-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs

import httptools
import orjson

__all__ = ["FakeConfig", "FakeGemini", "main"]

JSON_TYPE = b"application/json; charset=UTF-8"
SSE_TYPE = b"text/event-stream"
_ROUTE = re.compile(r"/(v1beta|v1)/models(?:/([A-Za-z0-9._-]+)(?::(\w+))?)?")
_WORDS = (
    "Proxies",
    " forward",
    " requests",
    " from",
    " clients",
    " to",
    " servers",
    " and",
    " relay",
    " the",
    " replies",
    " back",
    ".",
)

_BAD_KEY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    }
}


@dataclass(slots=True)
class FakeConfig:
    stream_chunks: int = 10
    stream_delay_ms: float = 20.0
    latency_ms: float = 0.0  # added before every non-stream reply (0: answer at once)
    embedding_dims: int = 768
    # A non-stream reply's usage (bench.quota sets calls that spend their whole worst case).
    usage_prompt: int = 12
    usage_output: int = 17
    usage_thoughts: int = 423


def _usage(prompt: int, output: int, thoughts: int, final: bool) -> dict[str, Any]:
    if not final:  # early stream chunks: prompt-only usage, as Google sends it
        return {
            "promptTokenCount": prompt,
            "totalTokenCount": prompt,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        }
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        "thoughtsTokenCount": thoughts,
    }


def generate_response(model: str, usage: tuple[int, int, int] = (12, 17, 423)) -> dict[str, Any]:
    text = "A proxy sits between clients and a server, forwarding each request and relaying it."
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": _usage(*usage, final=True),
        "modelVersion": model,
        "responseId": "benchResponseId0000000001",
    }


def stream_events(model: str, n: int) -> list[dict[str, Any]]:
    events = []
    for i in range(n):
        last = i == n - 1
        cand: dict[str, Any] = {
            "content": {"parts": [{"text": _WORDS[i % len(_WORDS)]}], "role": "model"},
        }
        if last:
            cand["finishReason"] = "STOP"
        cand["index"] = 0
        events.append(
            {
                "candidates": [cand],
                "usageMetadata": _usage(12, 2 * n, 272, final=last),
                "modelVersion": model,
                "responseId": "benchStreamId00000000001",
            }
        )
    return events


def models_list() -> dict[str, Any]:
    def model(mid: str, name: str, methods: list[str]) -> dict[str, Any]:
        return {
            "name": f"models/{mid}",
            "version": "001",
            "displayName": name,
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": methods,
            "thinking": True,
        }

    gen = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
    return {
        "models": [
            model("gemini-2.5-flash", "Gemini 2.5 Flash", gen),
            model("gemini-2.5-pro", "Gemini 2.5 Pro", gen),
            model("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", gen),
            model("gemini-embedding-001", "Gemini Embedding 001", ["embedContent"]),
        ]
    }


def _head(status: int, ctype: bytes, length: int | None) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    lines = [b"HTTP/1.1 %d %s" % (status, reason), b"content-type: " + ctype]
    if length is None:
        lines.append(b"transfer-encoding: chunked")
    else:
        lines.append(b"content-length: %d" % length)
    lines.append(b"server: bench-fake-gemini")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _whole(status: int, body: bytes, ctype: bytes = JSON_TYPE) -> bytes:
    return _head(status, ctype, len(body)) + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _error(code: int, message: str, status: str) -> bytes:
    body = {"error": {"code": code, "message": message, "status": status}}
    return _whole(code, orjson.dumps(body))


class FakeGemini:
    """Shared state of one fake: configuration, canned replies, counters."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.counts: Counter[str] = Counter()
        self.by_key: Counter[str] = Counter()  # calls per upstream key: who sent them
        self.open_streams = 0
        self._generate: dict[tuple[str, tuple[int, int, int]], bytes] = {}
        self._stream: dict[tuple[str, int, bool], list[bytes]] = {}
        self._models = orjson.dumps(models_list())
        self._embedding = [round(((i * 7919) % 2000 - 1000) / 1e4, 4) for i in range(2048)]

    def generate(self, model: str) -> bytes:
        c = self.config
        usage = (c.usage_prompt, c.usage_output, c.usage_thoughts)
        reply = self._generate.get((model, usage))
        if reply is None:
            body = orjson.dumps(generate_response(model, usage))
            reply = self._generate[(model, usage)] = _whole(200, body)
        return reply

    def stream_frames(self, model: str, sse: bool) -> list[bytes]:
        """The body pieces of one stream, each already framed as an HTTP chunk."""
        n = max(1, self.config.stream_chunks)
        key = (model, n, sse)
        frames = self._stream.get(key)
        if frames is None:
            events = stream_events(model, n)
            if sse:
                frames = [_chunk(b"data: " + orjson.dumps(e) + b"\r\n\r\n") for e in events]
            else:  # Google's JSON-array stream: pretty objects joined by ",\r\n"
                pretty = [orjson.dumps(e, option=orjson.OPT_INDENT_2) for e in events]
                frames = [_chunk((b"," if i else b"[") + p + b"\r\n") for i, p in enumerate(pretty)]
                frames[-1] += _chunk(b"]")
            frames[-1] += b"0\r\n\r\n"
            self._stream[key] = frames
        return frames

    def embeddings(self, n: int) -> bytes:
        values = self._embedding[: self.config.embedding_dims]
        if n < 0:
            return _whole(200, orjson.dumps({"embedding": {"values": values}}))
        return _whole(200, orjson.dumps({"embeddings": [{"values": values}] * n}))

    def model(self, mid: str) -> bytes | None:
        for m in models_list()["models"]:
            if m["name"] == f"models/{mid}":
                return _whole(200, orjson.dumps(m))
        return None


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.method = b""
        self.keep_alive = True


class HttpProtocol(asyncio.Protocol):
    """One client connection: requests answered in order, streams written from a task."""

    def __init__(self, fake: FakeGemini) -> None:
        self.fake = fake
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current = _Request()
        self.pending: deque[_Request] = deque()
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_error(400, "Malformed request.", "INVALID_ARGUMENT"))
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()
        self.transport = None

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.current = _Request()

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.current.body.append(body)

    def on_message_complete(self) -> None:
        req = self.current
        req.method = self.parser.get_method()
        req.keep_alive = self.parser.should_keep_alive()
        if self.task is not None:
            self.pending.append(req)  # a stream is still going on this connection
        else:
            self._dispatch(req)

    # -- replies ---------------------------------------------------------------------------
    def _dispatch(self, req: _Request) -> None:
        while True:
            if self.transport is None:
                return
            reply = self._answer(req)
            if isinstance(reply, bytes):
                self.transport.write(reply)
                if not req.keep_alive:
                    self.transport.close()
                    return
            else:
                self.task = asyncio.get_running_loop().create_task(reply)
                return
            if not self.pending:
                return
            req = self.pending.popleft()

    def _answer(self, req: _Request) -> Any:
        url = httptools.parse_url(req.url)
        path = url.path.decode("latin-1")
        query = parse_qs(url.query.decode("latin-1")) if url.query else {}
        fake = self.fake
        if path.startswith("/_bench/"):
            return self._control(path, req)
        m = _ROUTE.fullmatch(path)
        if m is None:
            return _error(404, f"No route for {path}.", "NOT_FOUND")
        key = req.headers.get(b"x-goog-api-key", b"").decode("latin-1") or query.get("key", [""])[0]
        if not key:
            fake.counts["bad_key"] += 1
            return _whole(400, orjson.dumps(_BAD_KEY))
        fake.by_key[key] += 1
        model, action = m[2], m[3]
        get = req.method == b"GET"
        if get and model is None:
            fake.counts["listModels"] += 1
            return _whole(200, fake._models)
        if get and action is None and model is not None:
            fake.counts["getModel"] += 1
            found = fake.model(model)
            return found or _error(404, f"models/{model} is not found.", "NOT_FOUND")
        if get or model is None or action is None:
            return _error(404, f"No route for {req.method.decode()} {path}.", "NOT_FOUND")
        fake.counts[action] += 1
        if action == "generateContent":
            if fake.config.latency_ms > 0:
                return self._later(fake.generate(model), req)
            return fake.generate(model)
        if action == "streamGenerateContent":
            sse = query.get("alt") == ["sse"]
            return self._stream(fake.stream_frames(model, sse), sse, req)
        if action == "countTokens":
            return _whole(
                200,
                b'{"totalTokens":12,"promptTokensDetails":[{"modality":"TEXT","tokenCount":12}]}',
            )
        if action == "embedContent":
            return fake.embeddings(-1)
        if action == "batchEmbedContents":
            try:
                body = orjson.loads(b"".join(req.body))
                n = len(body.get("requests") or [])
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                return _error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
            return fake.embeddings(n)
        return _error(404, f"Method {action} is not served by the fake.", "NOT_FOUND")

    def _control(self, path: str, req: _Request) -> bytes:
        fake = self.fake
        if path == "/_bench/config" and req.method == b"POST":
            update = orjson.loads(b"".join(req.body) or b"{}")
            for name, value in update.items():
                if hasattr(fake.config, name):
                    setattr(fake.config, name, type(getattr(fake.config, name))(value))
        elif path == "/_bench/reset" and req.method == b"POST":
            fake.counts.clear()
            fake.by_key.clear()
        elif path != "/_bench/stats":
            return _error(404, f"No control {path}.", "NOT_FOUND")
        stats = {
            "counts": dict(fake.counts),
            "total": sum(v for k, v in fake.counts.items() if k != "bad_key"),
            "by_key": dict(fake.by_key),
            "open_streams": fake.open_streams,
            "config": {
                "stream_chunks": fake.config.stream_chunks,
                "stream_delay_ms": fake.config.stream_delay_ms,
                "latency_ms": fake.config.latency_ms,
            },
        }
        return _whole(200, orjson.dumps(stats))

    async def _later(self, reply: bytes, req: _Request) -> None:
        await asyncio.sleep(self.fake.config.latency_ms / 1e3)
        await self._finish(reply, req)

    async def _stream(self, frames: list[bytes], sse: bool, req: _Request) -> None:
        fake = self.fake
        delay = fake.config.stream_delay_ms / 1e3
        fake.open_streams += 1
        try:
            head = _head(200, SSE_TYPE if sse else JSON_TYPE, None)
            for i, frame in enumerate(frames):
                if self.transport is None:
                    return
                if i == 0:
                    self.transport.write(head + frame)
                else:
                    await asyncio.sleep(delay)
                    if self.transport is None:
                        return
                    self.transport.write(frame)
            await self._finish(b"", req)
        finally:
            fake.open_streams -= 1

    async def _finish(self, data: bytes, req: _Request) -> None:
        self.task = None
        if self.transport is None:
            return
        if data:
            self.transport.write(data)
        if not req.keep_alive:
            self.transport.close()
        elif self.pending:
            self._dispatch(self.pending.popleft())


async def serve(host: str, port: int, config: FakeConfig, ready: bool = True) -> None:
    loop = asyncio.get_running_loop()
    fake = FakeGemini(config)
    server = await loop.create_server(
        lambda: HttpProtocol(fake), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    if ready:
        print(f"fake-gemini listening on http://{host}:{bound} (pid {os.getpid()})", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fake_upstream", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--stream-chunks", type=int, default=10)
    p.add_argument("--stream-delay-ms", type=float, default=20.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("the bench fake listens on loopback only", file=sys.stderr)
        return 2
    config = FakeConfig(args.stream_chunks, args.stream_delay_ms, args.latency_ms)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    runner(serve(args.host, args.port, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
