"""A scriptable fake of Google's Gemini REST API (``/v1beta/...`` and ``/v1/...``), as an ASGI app.

Serve it on a real port with ``tests.fakes.server.serve(fake)`` (the SDKs need a URL), or in
process with ``httpx.ASGITransport(app=fake)`` (which buffers bodies, so no streaming timing).

    fake = FakeGemini(api_key="upstream-key")
    fake.enqueue(ErrorReply(503), text_reply("hi", usage_metadata(10, 2)), action="generateContent")
    with serve(fake) as url: ...  # the proxy retries once, then meters 10 + 2 tokens
    assert fake.requests[-1].headers["x-goog-api-key"] == "upstream-key"

Without enqueued replies each call gets the fixture reply from ``tests/fixtures/gemini``.
Enqueued replies are consumed FIFO by the next request whose action matches (``None`` = any).
A wrong or missing ``x-goog-api-key`` gets Google's 400 API_KEY_INVALID and consumes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, MutableMapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Replies composed from Gemini's documented shapes (tests/fixtures/gemini/README.md).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"
JSON_TYPE = "application/json; charset=UTF-8"
MODEL = "gemini-2.5-flash"
_ROUTE = re.compile(r"/(v1beta|v1)/models(?:/([^/:]+)(?::(\w+))?)?")
# fmt: off
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
# Page tokens are opaque to clients; this framing reproduces the fixture's token exactly.
_TOKEN_PREFIX = b"\n\x1d"
# A second page after the fixture's four models, so clients must follow nextPageToken.
_PAGE_TWO = [
    {"name": f"models/{mid}", "version": ver, "displayName": title, "inputTokenLimit": 1048576,
     "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens"],
     "thinking": True}
    for mid, ver, title in [("gemini-2.5-flash-lite", "001", "Gemini 2.5 Flash-Lite"),
                            ("gemini-3-pro-preview", "3.0", "Gemini 3 Pro Preview")]
]
# fmt: on


def partial(body: Any, req: RecordedRequest) -> Any:
    """Google's partial responses: ``fields`` / ``$fields`` keep only the named top-level
    fields of a reply (and of each stream event); errors are whole."""
    fields = req.query.get("fields") or req.query.get("$fields")
    if not fields or not isinstance(body, dict) or "error" in body:
        return body
    keep = {f.strip().split("/")[0].split("(")[0] for f in fields.split(",")}
    return {k: v for k, v in body.items() if k in keep}


@cache
def fixture_bytes(name: str) -> bytes:
    """Raw bytes of a fixture file; ``name`` without a suffix means ``name.json``."""
    return (FIXTURES / (name if "." in name else f"{name}.json")).read_bytes()


def fixture(name: str) -> Any:
    """A fixture: a fresh parsed object for JSON files, raw bytes for ``.sse`` / ``.json_array``."""
    raw = fixture_bytes(name)
    return orjson.loads(raw) if name.endswith(".json") or "." not in name else raw


def parse_sse(body: bytes) -> list[Any]:
    """The JSON objects of a ``data:`` event stream (CRLF or LF framing)."""
    frames = re.split(rb"\r?\n\r?\n", body)
    return [orjson.loads(f.removeprefix(b"data:").strip()) for f in frames if f.strip()]


def error_body(code: int, message: str | None = None) -> dict[str, Any]:
    """Google's error envelope for an HTTP status."""
    text = message or f"Fake Gemini error {code}."
    return {"error": {"code": code, "message": text, "status": _STATUS.get(code, "UNKNOWN")}}


def usage_metadata(
    prompt: int, candidates: int = 0, *, thoughts: int = 0, cached: int = 0, tool_use: int = 0
) -> dict[str, Any]:
    """A self-consistent ``usageMetadata`` (total = prompt + candidates + thoughts + tool use)."""
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts + tool_use,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    extra = [("thoughtsTokenCount", thoughts), ("cachedContentTokenCount", cached),
             ("toolUsePromptTokenCount", tool_use)]  # fmt: skip
    return usage | {key: value for key, value in extra if value}  # absent means zero


def _chunk(text: str, usage: dict[str, Any], model: str, finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    ids = {"modelVersion": model, "responseId": "fakeResponseId0001"}
    return {"candidates": [candidate], "usageMetadata": usage} | ids


def text_response(
    text: str,
    usage: dict[str, Any] | None = None,
    *,
    model: str = MODEL,
    finish_reason: str = "STOP",
) -> dict[str, Any]:
    """A one-candidate GenerateContentResponse carrying exactly ``usage``."""
    return _chunk(text, usage or usage_metadata(12, max(1, len(text) // 4)), model, finish_reason)


def text_reply(text: str, usage: dict[str, Any] | None = None, **kw: Any) -> JsonReply:
    return JsonReply(text_response(text, usage, **kw))


def stream_events(
    texts: Iterable[str], usage: dict[str, Any] | None = None, *, model: str = MODEL,
    finish_reason: str = "STOP",
) -> list[dict[str, Any]]:  # fmt: skip
    """Stream chunks as Google sends them: prompt-only usage early, full ``usage`` on the last."""
    texts = list(texts)
    final = usage or usage_metadata(12, max(1, sum(len(t) for t in texts) // 4))
    prompt = final["promptTokenCount"]
    keep = ("promptTokenCount", "promptTokensDetails")
    early: dict[str, Any] = {k: final[k] for k in keep if k in final} | {"totalTokenCount": prompt}
    last = len(texts) - 1
    return [
        _chunk(t, final if i == last else dict(early), model, finish_reason if i == last else None)
        for i, t in enumerate(texts)
    ]


@dataclass
class JsonReply:
    body: Any  # dict / list are serialised; bytes go out verbatim
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamReply:
    """Stream events, framed as SSE or as a JSON array by the request's ``alt=sse`` query."""

    events: list[Any]  # dicts are framed; bytes go out verbatim (to split or break frames)
    delay: float = 0.0  # seconds between events
    status: int = 200
    close_early: bool = False  # drop the connection after the events, without the stream's end
    hold_after: int | None = None  # after this many events wait for FakeGemini.release()
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ErrorReply:
    """``ErrorReply(503)``, ``ErrorReply("error_429")`` (fixture) or ``ErrorReply({...}, 400)``."""

    error: int | str | dict[str, Any] | bytes = 503
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def resolve(self) -> JsonReply:
        err = self.error
        if isinstance(err, int):
            exists = (FIXTURES / f"error_{err}.json").exists()
            body: Any = fixture(f"error_{err}.json") if exists else error_body(err)
        else:
            body = fixture(err) if isinstance(err, str) else err
        status = self.status or (body["error"]["code"] if isinstance(body, dict) else 500)
        return JsonReply(body, status, self.headers)


@dataclass
class DropConnection:
    """Close the TCP connection without any response (real servers only; ASGITransport raises)."""


@dataclass
class Hang:
    """Say nothing for ``seconds`` (or until the client gives up), then play ``then`` / default."""

    seconds: float = 30.0
    then: Reply | None = None


Reply = JsonReply | StreamReply | ErrorReply | DropConnection | Hang


@dataclass
class RecordedRequest:
    method: str
    path: str  # raw, still percent-encoded
    query_string: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    version: str | None = None  # "v1beta" / "v1"
    model: str | None = None  # "gemini-2.5-flash"
    action: str | None = None  # "generateContent", ..., "listModels", "getModel"

    def json(self) -> Any:
        return orjson.loads(self.body)


class _Conn:
    """One request's ASGI channel; a watcher task notices the client hanging up."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self.receive, self.send, self.gone = receive, send, asyncio.Event()
        self._watch = asyncio.create_task(self._watcher())

    async def _watcher(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.gone.set()

    async def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the client disconnected meanwhile."""
        try:
            await asyncio.wait_for(self.gone.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def start(self, status: int, ctype: str, headers: dict[str, str], size: int = -1) -> None:
        hdrs = {"content-type": ctype} | {k.lower(): v for k, v in headers.items()}
        if size >= 0:
            hdrs["content-length"] = str(size)
        raw = [(k.encode(), v.encode()) for k, v in hdrs.items()]
        await self.send({"type": "http.response.start", "status": status, "headers": raw})

    async def body(self, data: bytes, more: bool = False) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def drop(self) -> None:
        # ASGI cannot abort a connection; uvicorn's receive() is bound to its cycle, which holds
        # the transport. Waiting for the disconnect stops uvicorn answering 500 on our behalf.
        transport = getattr(getattr(self.receive, "__self__", None), "transport", None)
        if transport is None:
            raise ConnectionAbortedError("FakeGemini dropped the connection")
        transport.close()
        await self.wait(5.0)

    def close(self) -> None:
        self._watch.cancel()


class FakeGemini:
    def __init__(
        self, api_key: str | Collection[str] | None = "fake-gemini-key", *,
        models: list[dict[str, Any]] | None = None, page_size: int = 4,
    ) -> None:  # fmt: skip
        # None disables the key check; a collection allows several (key-pool tests).
        self.api_keys = {api_key} if isinstance(api_key, str) else api_key
        self.models = models if models is not None else fixture("models_list")["models"] + _PAGE_TWO
        self.page_size = page_size  # Google's default is 50; 4 makes page one the fixture
        self.stream_done = threading.Event()  # threading: set on the server's thread
        self._released = threading.Event()
        self._queue: deque[tuple[str | None, Reply]] = deque()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Forget requests, queued replies and counters (to share one served fake across tests).

        ``in_flight`` is live state and is kept: a late request from the last test may still end.
        """
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = self.in_flight
        self.streams_started = self.streams_finished = self.cancelled = 0
        self.stream_done.clear()
        self._released.clear()
        self._queue.clear()
        # Imported here: the resources build on this module's reply types.
        from tests.fakes.resources import Resources

        self.resources = Resources()  # files, caches, batches, Imagen, Veo: fresh state

    def enqueue(self, *replies: Reply, action: str | None = None) -> None:
        with self._lock:
            self._queue.extend((action, r) for r in replies)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def release(self) -> None:
        """Let streams held by ``StreamReply(hold_after=...)`` continue."""
        self._released.set()

    def calls(self, action: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.action == action]

    @staticmethod
    def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("fake: condition not reached")
            time.sleep(0.005)

    @staticmethod
    async def await_until(predicate: Callable[[], bool], within: float = 3.0) -> None:
        # Polling, not an Event: the counters change on the server thread's loop.
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (msg := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body, more = body + msg.get("body", b""), msg.get("more_body", False)
        req = self._record(scope, body)
        conn = _Conn(receive, send)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._play(self._choose(req), req, conn)
        finally:
            conn.close()
            with self._lock:
                self.in_flight -= 1

    def _record(self, scope: Message, body: bytes) -> RecordedRequest:
        qs = scope.get("query_string", b"").decode("latin-1")
        raw_path = scope.get("raw_path") or scope["path"].encode()
        pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = {k: ", ".join(v for n, v in pairs if n == k) for k, _ in pairs}  # repeats joined
        query = dict(parse_qsl(qs, keep_blank_values=True))
        req = RecordedRequest(scope["method"], raw_path.decode("latin-1"), qs, query, headers, body)
        if m := _ROUTE.fullmatch(scope["path"]):
            req.version, req.model = m[1], m[2]
            req.action = m[3] or ("getModel" if m[2] else "listModels")
        req.action = req.action or self.resources.action(req)
        self.requests.append(req)
        return req

    def _choose(self, req: RecordedRequest) -> Reply:
        keyed = not self.resources.keyless(req)
        if (
            keyed
            and self.api_keys is not None
            and req.headers.get("x-goog-api-key") not in self.api_keys
        ):
            return JsonReply(fixture("error_bad_key"), 400)
        if req.method == "POST" and not self.resources.own_body(req):
            try:
                orjson.loads(req.body)
            except orjson.JSONDecodeError:
                return JsonReply(error_body(400, "Invalid JSON payload received."), 400)
        with self._lock:
            for i, (action, reply) in enumerate(self._queue):
                if action is None or action == req.action:
                    del self._queue[i]
                    return reply
        return self._default(req)

    def _default(self, req: RecordedRequest) -> Reply:
        reply: Reply = self.resources.serve(req, self._builtin)
        return reply

    def _builtin(self, req: RecordedRequest) -> Reply:
        get, name = req.method == "GET", f"models/{req.model}"
        match req.action:
            case "listModels" if get:
                return self._page(req.query)
            case "getModel" if get:
                found = [m for m in self.models if m["name"] == name]
                msg = f"{name} is not found for API version {req.version}, or is not supported."
                return JsonReply(found[0]) if found else JsonReply(error_body(404, msg), 404)
            case "generateContent" if not get:
                return JsonReply(fixture("generate_text") | {"modelVersion": req.model})
            case "streamGenerateContent" if not get:
                events = parse_sse(fixture_bytes("stream_text.sse"))
                return StreamReply([e | {"modelVersion": req.model} for e in events])
            case "countTokens" if not get:
                return JsonReply(fixture("count_tokens"))
            case "embedContent" if not get:
                return JsonReply(fixture("embed_content"))
            case "batchEmbedContents" if not get:
                pool = fixture("batch_embed_contents")["embeddings"]
                body = req.json()
                requests = body.get("requests") if isinstance(body, dict) else None
                n = len(requests) if isinstance(requests, list) else 0  # fuzzed bodies too
                return JsonReply({"embeddings": [pool[i % len(pool)] for i in range(n)]})
        return JsonReply(error_body(404, f"Fake Gemini has no {req.method} {req.path}."), 404)

    def _page(self, query: dict[str, str]) -> Reply:
        start = 0
        if token := query.get("pageToken"):
            try:
                last = base64.b64decode(token).removeprefix(_TOKEN_PREFIX).decode()
                start = 1 + [m["name"] for m in self.models].index(last)
            except (ValueError, binascii.Error):
                return JsonReply(error_body(400, "Invalid page token."), 400)
        try:
            end = start + int(query.get("pageSize") or self.page_size)
        except ValueError:
            return JsonReply(error_body(400, "Invalid value at 'page_size' (TYPE_INT32)."), 400)
        page: dict[str, Any] = {"models": self.models[start:end]}
        if end < len(self.models):
            last = _TOKEN_PREFIX + page["models"][-1]["name"].encode()
            page["nextPageToken"] = base64.b64encode(last).decode()
        return JsonReply(page)

    async def _play(self, reply: Reply, req: RecordedRequest, conn: _Conn) -> None:
        match reply:
            case ErrorReply():
                await self._play(reply.resolve(), req, conn)
            case JsonReply(body=body, status=status, headers=headers):
                data = body if isinstance(body, bytes) else orjson.dumps(partial(body, req))
                await conn.start(status, JSON_TYPE, headers, len(data))
                await conn.body(data)
            case StreamReply():
                await self._stream(reply, req, conn)
            case DropConnection():
                await conn.drop()
            case Hang(seconds=seconds, then=then):
                if await conn.wait(seconds):
                    self.cancelled += 1
                else:
                    await self._play(then or self._default(req), req, conn)

    async def _stream(self, reply: StreamReply, req: RecordedRequest, conn: _Conn) -> None:
        sse = req.query.get("alt") == "sse"
        if reply.hold_after is not None:
            self._released.clear()
        self.stream_done.clear()
        self.streams_started += 1
        try:
            await conn.start(reply.status, "text/event-stream" if sse else JSON_TYPE, reply.headers)
            opened = False
            for i, event in enumerate(reply.events):
                if (i and reply.delay and await conn.wait(reply.delay)) or conn.gone.is_set():
                    self.cancelled += 1
                    return
                while i == reply.hold_after and not self._released.is_set():
                    if await conn.wait(0.005):
                        self.cancelled += 1
                        return
                if isinstance(event, bytes):
                    data = event
                elif sse:
                    data = b"data: " + orjson.dumps(partial(event, req)) + b"\r\n\r\n"
                else:  # Google's JSON-array stream: pretty objects joined by ",\r\n"
                    pretty = orjson.dumps(partial(event, req), option=orjson.OPT_INDENT_2)
                    data = (b",\r\n" if opened else b"[") + pretty
                    opened = True
                await conn.body(data, more=True)
            if reply.close_early:
                await conn.drop()
                return
            # Raw-bytes events carry their own framing, so no "]" unless a dict opened the array.
            # Counted before the last write, so a client that saw the end sees the count too.
            self.streams_finished += 1
            self.stream_done.set()
            await conn.body(b"]" if opened else b"" if sse or reply.events else b"[]")
        finally:
            self.stream_done.set()
