"""A scriptable fake of Google's Live API (``BidiGenerateContent`` over WebSocket, TLS only).

    tls = make_tls(tmp_path)
    fake = FakeLive(api_key="upstream-key")
    fake.enqueue(text_turn("Hi!", usage=usage_metadata(12, 3)), tool_call_turn(...))
    async with fake.serve(tls) as url:      # https://127.0.0.1:PORT; the SDK dials wss:// anyway
        options = HttpOptions(base_url=url, async_client_args={"ssl": tls.client_context()})
        client = genai.Client(api_key="upstream-key", http_options=options)
        async with client.aio.live.connect(model="gemini-live-2.5-flash-preview") as session: ...
    fake.sessions[0].usage_sent   # every usageMetadata the fake sent, in order

Routes: ``/ws/google.ai.generativelanguage.{v1,v1beta,v1alpha}.GenerativeService.
BidiGenerateContent`` (and ``...BidiGenerateContentConstrained`` for ephemeral tokens), with any
number of leading slashes: the SDK joins a ``base_url`` ending in ``/`` into ``//ws/...``.
Other paths get HTTP 404 at the handshake.

Auth as Google takes it: ``?key=`` or the ``x-goog-api-key`` header (the SDK sends the header);
a wrong key is accepted at the handshake and closed with 1008 once the setup is read.

A session: the first message must be a setup (else close 1007); a model outside ``models``
closes with 1008; otherwise ``setupComplete`` (or the steps of ``on_setup``). A client message
that ends a user turn — ``clientContent.turnComplete``, ``realtimeInput`` ``activityEnd`` /
``audioStreamEnd`` / ``text`` (the fake has no voice activity detection) — plays the next
enqueued :class:`Turn`, FIFO across sessions, or a default text answer. Client input that
arrives while a turn is paused (``Pause`` / ``Hold``) interrupts it: ``interrupted``, then
``turnComplete`` with the usage so far, as the protocol does on barge-in.

Usage: each session keeps a model of its context window (system instruction, every input and
every output so far: text 4 chars a token, audio 25 tokens a second, a video frame 258 tokens),
and a ``usageMetadata`` left as :data:`AUTO` is filled from it when sent: ``promptTokenCount``
is the whole window, ``responseTokenCount`` what was sent since the last report. So usage is per
turn, and the prompt grows turn by turn, as Google reports it and bills it.

Server frames are binary by default (``binary=False`` for text frames; the SDK reads both).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes.gemini import FakeGemini
from tests.fakes.tls import Tls

_PATH = re.compile(
    r"/+ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\."
    r"(BidiGenerateContent|BidiGenerateContentConstrained)"
)
LIVE_MODELS = (
    "gemini-live-2.5-flash-preview",
    "gemini-2.5-flash-native-audio-preview-09-2025",
    "gemini-2.0-flash-live-001",
)
AUDIO_TOKENS_PER_SECOND = 25  # seeds/004 line 215: "25 jetons par seconde d'audio"
VIDEO_FRAME_TOKENS = 258  # same line: 258 tokens per second of video, a frame a second
OUTPUT_RATE = 24000  # the Live API's audio out: 16-bit PCM at 24 kHz
BAD_KEY = "API key not valid. Please pass a valid API key."
INVALID = "Request contains an invalid argument."


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


AUTO: Any = _Auto()  # a usageMetadata the fake computes from the session's context window


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4) if chars > 0 else 0


def _pcm_tokens(size: int, rate: int) -> float:
    return size / (2 * rate) * AUDIO_TOKENS_PER_SECOND


def _rate(mime: Any, default: int = 16000) -> int:
    m = re.search(r"rate=(\d+)", mime) if isinstance(mime, str) else None
    return int(m[1]) if m else default


def _get(obj: Any, snake: str) -> Any:
    # Protobuf JSON: either spelling. Kept apart from proxy.live.messages on purpose, so the
    # fake and the relay do not share a reading mistake.
    if not isinstance(obj, dict):
        return None
    if snake in obj:
        return obj[snake]
    head, *rest = snake.split("_")
    return obj.get(head + "".join(w.capitalize() for w in rest))


def _b64decode(data: Any) -> bytes:
    if not isinstance(data, str):
        return b""
    data = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4))


def usage_metadata(
    prompt: int,
    response: int = 0,
    *,
    prompt_audio: int = 0,
    prompt_image: int = 0,
    prompt_video: int = 0,
    response_audio: int = 0,
    cached: int = 0,
    thoughts: int = 0,
    tool_use: int = 0,
) -> dict[str, Any]:
    """A self-consistent Live ``usageMetadata``, spelt as the Gemini API does (``response...``)."""
    prompt_details = [
        {"modality": m, "tokenCount": n}
        for m, n in [
            ("TEXT", prompt - prompt_audio - prompt_image - prompt_video),
            ("AUDIO", prompt_audio),
            ("IMAGE", prompt_image),
            ("VIDEO", prompt_video),
        ]
        if n
    ]
    response_details = [
        {"modality": m, "tokenCount": n}
        for m, n in [("TEXT", response - response_audio), ("AUDIO", response_audio)]
        if n
    ]
    md: dict[str, Any] = {
        "promptTokenCount": prompt,
        "responseTokenCount": response,
        "totalTokenCount": prompt + response + thoughts + tool_use,
    }
    extra = [("cachedContentTokenCount", cached), ("thoughtsTokenCount", thoughts),
             ("toolUsePromptTokenCount", tool_use)]  # fmt: skip
    md |= {k: v for k, v in extra if v}
    if prompt_details:
        md["promptTokensDetails"] = prompt_details
    if response_details:
        md["responseTokensDetails"] = response_details
    return md


# -- script --------------------------------------------------------------------------------


@dataclass
class Frame:
    """Send ``message`` as a text or binary frame regardless of the fake's default."""

    message: dict[str, Any]
    binary: bool


@dataclass
class Expect:
    """Wait for the client's next message of ``kind`` (snake_case, e.g. ``tool_response``)."""

    kind: str
    timeout: float = 10.0


@dataclass
class Pause:
    seconds: float


@dataclass
class Hold:
    """Wait for :meth:`FakeLive.release` (or for the client to interrupt)."""


@dataclass
class Close:
    """Close the session with this code and reason (a clean close frame)."""

    code: int = 1011
    reason: str = "Internal error encountered."


@dataclass
class Drop:
    """Cut the TCP connection without a close frame (the client sees 1006)."""


@dataclass
class GoAway:
    """Send ``goAway`` now; after ``time_left`` seconds close with ``code`` / ``reason``, whatever
    the session is doing (None: never)."""

    time_left: float = 5.0
    code: int | None = 1011
    reason: str = "The operation was aborted."


Step = dict[str, Any] | Frame | Expect | Pause | Hold | Close | Drop | GoAway


@dataclass
class Turn:
    """The server's side of one turn: steps played in order when the client ends its turn."""

    steps: list[Step]


def _content(**fields: Any) -> dict[str, Any]:
    return {"serverContent": fields}


def _end(usage: dict[str, Any] | Any) -> list[Step]:
    return [_content(generationComplete=True), {"serverContent": {"turnComplete": True},
                                                "usageMetadata": usage}]  # fmt: skip


def text_turn(*texts: str, usage: dict[str, Any] | Any = AUTO) -> Turn:
    """A text answer in ``texts`` chunks, then generationComplete, then turnComplete + usage."""
    chunks = texts or ("OK.",)
    steps: list[Step] = [
        _content(modelTurn={"role": "model", "parts": [{"text": t}]}) for t in chunks
    ]
    return Turn(steps + _end(usage))


def audio_turn(
    pcm: bytes,
    *,
    chunks: int = 3,
    transcript: str | None = None,
    heard: str | None = None,
    usage: Any = AUTO,
) -> Turn:
    """An audio answer: ``pcm`` (16-bit, 24 kHz) in ``chunks`` inlineData parts, base64 as
    protobuf JSON has it, with optional transcriptions of the client's speech (``heard``,
    sent first) and of the answer (``transcript``)."""
    size = max(1, math.ceil(len(pcm) / chunks))
    mime = f"audio/pcm;rate={OUTPUT_RATE}"
    steps: list[Step] = [_content(inputTranscription={"text": heard})] if heard else []
    for i in range(0, len(pcm), size):
        data = base64.b64encode(pcm[i : i + size]).decode()
        steps.append(
            _content(modelTurn={"parts": [{"inlineData": {"mimeType": mime, "data": data}}]})
        )
    if transcript:
        steps.append(_content(outputTranscription={"text": transcript}))
    return Turn(steps + _end(usage))


def tool_call_turn(*calls: dict[str, Any], then: Turn | None = None, usage: Any = AUTO) -> Turn:
    """A ``toolCall`` (with the usage of the generation that made it), a wait for the client's
    ``toolResponse``, then ``then`` (a text answer by default) in the same turn.

    Each call is ``{"name": ..., "args": {...}}``; ids ``call-1``, ``call-2``... are added when
    missing (the Gemini API requires the client to echo them).
    """
    function_calls = [{"id": f"call-{i}"} | c for i, c in enumerate(calls, 1)]
    first: dict[str, Any] = {"toolCall": {"functionCalls": function_calls}, "usageMetadata": usage}
    rest = (then or text_turn("Done.")).steps
    return Turn([first, Expect("tool_response"), *rest])


def cut_turn(
    *texts: str, code: int | None = 1011, reason: str = "Internal error encountered."
) -> Turn:
    """Some of an answer, then the upstream closes (``Drop()`` as ``code=None``: no close frame)."""
    steps: list[Step] = [_content(modelTurn={"parts": [{"text": t}]}) for t in texts]
    return Turn([*steps, Drop() if code is None else Close(code, reason)])


def go_away(time_left: str = "5s") -> dict[str, Any]:
    """A bare ``goAway`` message (see :class:`GoAway` for one that then closes)."""
    return {"goAway": {"timeLeft": time_left}}


# -- records -------------------------------------------------------------------------------


@dataclass
class Received:
    data: str | bytes
    message: dict[str, Any] | None  # None: not a JSON object

    @property
    def binary(self) -> bool:
        return isinstance(self.data, bytes)

    @property
    def kind(self) -> str | None:
        if self.message is None:
            return None
        for kind in ("setup", "client_content", "realtime_input", "tool_response",
                     "context_update"):  # fmt: skip
            if _get(self.message, kind) is not None:
                return kind
        return None


@dataclass
class LiveSession:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    version: str
    method: str
    key_source: str | None = None  # "query", "header", "token" or None (no credential)
    authorized: bool = False
    setup: dict[str, Any] | None = None
    model: str | None = None
    received: list[Received] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    usage_sent: list[dict[str, Any]] = field(default_factory=list)
    # Both directions in the order the fake saw them: ("client" | "server", message).
    transcript: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    turns_played: int = 0
    interrupted_turns: int = 0
    close_code: int | None = None  # as the fake saw the end (1006: no close frame)
    close_reason: str | None = None
    closed_by_server: bool = False
    ended: bool = False
    handle: str | None = None  # the resumption handle it started from
    # The context window model behind AUTO usage, tokens by modality.
    # Fractional, so that 100 ms audio chunks add up to 25 tokens a second.
    context: dict[str, float] = field(default_factory=dict)
    pending_in: dict[str, float] = field(default_factory=dict)
    pending_out: dict[str, float] = field(default_factory=dict)

    def kinds(self) -> list[str | None]:
        return [r.kind for r in self.received]

    def messages(self, kind: str) -> list[dict[str, Any]]:
        return [_get(r.message, kind) for r in self.received if r.kind == kind]

    def add_tokens(self, bucket: dict[str, float], modality: str, tokens: float) -> None:
        if tokens:
            bucket[modality] = bucket.get(modality, 0) + tokens

    def auto_usage(self) -> dict[str, Any]:
        prompt = {m: round(self.context.get(m, 0) + self.pending_in.get(m, 0))
                  for m in set(self.context) | set(self.pending_in)}  # fmt: skip
        out = {m: round(n) for m, n in self.pending_out.items()}
        md = usage_metadata(
            sum(prompt.values()),
            sum(out.values()),
            prompt_audio=prompt.get("AUDIO", 0),
            prompt_image=prompt.get("IMAGE", 0),
            prompt_video=prompt.get("VIDEO", 0),
            response_audio=out.get("AUDIO", 0),
        )
        self.fold()
        return md

    def fold(self) -> None:
        """A usage report was sent: what was pending is now part of the context window."""
        for bucket in (self.pending_in, self.pending_out):
            for m, n in bucket.items():
                self.context[m] = self.context.get(m, 0) + n
            bucket.clear()


class _Session:
    """One connection's live state (the record is :class:`LiveSession`)."""

    def __init__(self, fake: FakeLive, ws: ServerConnection, record: LiveSession) -> None:
        self.fake, self.ws, self.rec = fake, ws, record
        self.inbox: asyncio.Queue[str] = asyncio.Queue()  # kinds of client messages, for Expect
        self.triggers: asyncio.Queue[None] = asyncio.Queue()
        self.interrupt = asyncio.Event()
        self.pausing = False
        self.tasks: set[asyncio.Task[None]] = set()  # closes scheduled from sync code

    def later(self, delay: float, code: int, reason: str) -> None:
        def start() -> None:
            task = asyncio.ensure_future(self.fake._close(self, code, reason))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        asyncio.get_running_loop().call_later(delay, start)


# -- the fake ------------------------------------------------------------------------------


class FakeLive:
    def __init__(
        self,
        api_key: str | Collection[str] | None = "fake-gemini-key",
        *,
        models: Iterable[str] = LIVE_MODELS,
        tokens: Collection[str] = (),
        binary: bool = True,
        max_size: int | None = 2**20,
    ) -> None:
        # None disables the key check; ``tokens`` are ephemeral ``auth_tokens/...`` names.
        self.api_keys = {api_key} if isinstance(api_key, str) else api_key
        self.tokens = set(tokens)
        self.models = set(models)
        self.binary = binary
        self.max_size = max_size
        self._lock = threading.Lock()
        self._turns: deque[Turn] = deque()
        self._setup_steps: deque[list[Step]] = deque()
        self._released = threading.Event()
        self._handles: dict[str, dict[str, float]] = {}
        self._ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        """Forget sessions and queued scripts (to share one served fake across tests)."""
        with self._lock:
            self.sessions: list[LiveSession] = []
            self.rejected: list[tuple[str, int]] = []  # handshakes refused: (path, status)
            self._turns.clear()
            self._setup_steps.clear()
        self._released.clear()

    def enqueue(self, *turns: Turn) -> None:
        """Answers for the next client turns, FIFO (across sessions)."""
        with self._lock:
            self._turns.extend(turns)

    def on_setup(self, *steps: Step) -> None:
        """Steps that the next session plays instead of its ``setupComplete``."""
        with self._lock:
            self._setup_steps.append(list(steps))

    @property
    def pending(self) -> int:
        return len(self._turns)

    def release(self) -> None:
        """Let turns waiting at a :class:`Hold` go on."""
        self._released.set()

    # FakeGemini's polling helpers use nothing of the instance: the same functions serve here.
    wait_until = staticmethod(FakeGemini.wait_until)
    await_until = staticmethod(FakeGemini.await_until)

    # -- serving ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self, tls: Tls, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on the running loop; yields ``https://host:port`` (a base_url for the SDK)."""
        server = await self._start(tls, host, port)
        try:
            yield self._url(server, host)
        finally:
            server.close()
            await server.wait_closed()

    @contextlib.contextmanager
    def serve_thread(self, tls: Tls, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve on a thread of its own (for tests whose loop may block, or sync callers)."""
        started = threading.Event()
        url: list[str] = []
        failure: list[BaseException] = []
        stop: list[Callable[[], object]] = []

        async def main() -> None:
            done = asyncio.Event()
            try:
                server = await self._start(tls, host, port)
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            url.append(self._url(server, host))
            loop = asyncio.get_running_loop()
            stop.append(lambda: loop.call_soon_threadsafe(done.set))
            started.set()
            await done.wait()
            server.close()
            await server.wait_closed()

        thread = threading.Thread(target=asyncio.run, args=(main(),), name="FakeLive", daemon=True)
        thread.start()
        started.wait(10)
        if failure or not url:
            raise RuntimeError("FakeLive did not start") from (failure[0] if failure else None)
        try:
            yield url[0]
        finally:
            stop[0]()
            thread.join(10)

    async def _start(self, tls: Tls, host: str, port: int) -> Server:
        return await serve(
            self._handle,
            host,
            port,
            ssl=tls.server_context(),
            process_request=self._check_path,
            max_size=self.max_size,
        )

    @staticmethod
    def _url(server: Server, host: str) -> str:
        port = next(iter(server.sockets)).getsockname()[1]
        return f"https://{host}:{port}"

    def _check_path(self, ws: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]  # not urlsplit: it reads //ws/... as a host
        if _PATH.fullmatch(path):
            return None
        with self._lock:
            self.rejected.append((request.path, 404))
        return ws.respond(404, f"Fake Live has no WebSocket at {path}.\n")

    # -- a session -----------------------------------------------------------------------------

    def _record(self, ws: ServerConnection) -> LiveSession:
        request = ws.request
        assert request is not None
        path, _, query = request.path.partition("?")
        m = _PATH.fullmatch(path)
        assert m is not None
        headers: dict[str, str] = {}
        for name, value in request.headers.raw_items():
            lower = name.lower()
            headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
        rec = LiveSession(request.path, dict(parse_qsl(query)), headers, m[1], m[2])
        if m[2] == "BidiGenerateContentConstrained":
            auth = headers.get("authorization", "")
            token: str | None = auth.removeprefix("Token ") if auth.startswith("Token ") else None
            token = token or rec.query.get("access_token")
            rec.key_source = "token" if token else None
            rec.authorized = token in self.tokens
        else:
            key = rec.query.get("key")
            rec.key_source = "query" if key is not None else None
            if key is None and "x-goog-api-key" in headers:
                key, rec.key_source = headers["x-goog-api-key"], "header"
            rec.authorized = self.api_keys is None or key in self.api_keys
        with self._lock:
            self.sessions.append(rec)
        return rec

    async def _handle(self, ws: ServerConnection) -> None:
        s = _Session(self, ws, self._record(ws))
        player: asyncio.Task[None] | None = None
        try:
            if await self._open(s):
                player = asyncio.create_task(self._player(s))
                async for data in ws:
                    self._on_client(s, data)
        except ConnectionClosed:
            pass
        finally:
            if player is not None:
                player.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await player
            self._ended(s)

    def _ended(self, s: _Session) -> None:
        rec, ws = s.rec, s.ws
        rec.ended = True
        if rec.close_code is None:
            frame = ws.protocol.close_rcvd or ws.protocol.close_sent
            rec.close_code = frame.code if frame else 1006
            rec.close_reason = frame.reason if frame else ""

    async def _open(self, s: _Session) -> bool:
        rec = s.rec
        data = await s.ws.recv()
        msg = self._receive(s, data)
        setup = _get(msg, "setup") if msg is not None else None
        if not isinstance(setup, dict) or len(msg or {}) != 1:
            await self._close(s, 1007, INVALID)
            return False
        rec.setup = setup
        if not rec.authorized:
            await self._close(s, 1008, BAD_KEY)
            return False
        name = setup.get("model")
        rec.model = name.removeprefix("models/") if isinstance(name, str) else None
        if rec.model not in self.models:
            await self._close(s, 1008, f"{name} is not found for API version {rec.version}, or is "
                              "not supported for bidiGenerateContent. Call ListModels to see the "
                              "list of available models and their supported methods.")  # fmt: skip
            return False
        resumption = _get(setup, "session_resumption")
        handle = _get(resumption, "handle")
        if handle:
            if handle not in self._handles:
                await self._close(s, 1008, "BidiGenerateContent session not found")
                return False
            rec.handle, rec.context = handle, dict(self._handles[handle])
        else:
            system = _get(setup, "system_instruction")
            chars = sum(len(p.get("text", "")) for p in (_get(system, "parts") or []))
            rec.add_tokens(rec.context, "TEXT", _tokens(chars))
        with self._lock:
            steps = self._setup_steps.popleft() if self._setup_steps else [{"setupComplete": {}}]
        return await self._play(s, steps)

    def _receive(self, s: _Session, data: str | bytes) -> dict[str, Any] | None:
        try:
            msg = json.loads(data)
        except ValueError:
            msg = None
        msg = msg if isinstance(msg, dict) else None
        s.rec.received.append(Received(data, msg))
        if msg is not None:
            s.rec.transcript.append(("client", msg))
        return msg

    def _on_client(self, s: _Session, data: str | bytes) -> None:
        msg = self._receive(s, data)
        entry = s.rec.received[-1]
        kind = entry.kind
        if msg is None or kind in (None, "setup"):
            s.later(0, 1007, INVALID)
            return
        body = _get(msg, kind)
        ends_turn, interrupts = self._account(s.rec, kind, body)
        s.inbox.put_nowait(kind)
        if interrupts and s.pausing:
            s.interrupt.set()
        if ends_turn:
            s.triggers.put_nowait(None)

    @staticmethod
    def _account(rec: LiveSession, kind: str, body: Any) -> tuple[bool, bool]:
        """Add a client message's tokens to the context; (ends the user turn, interrupts)."""
        add = rec.add_tokens
        if kind == "client_content":
            turns = _get(body, "turns") or []
            chars = sum(len(p.get("text", "")) for t in turns for p in (_get(t, "parts") or []))
            add(rec.pending_in, "TEXT", _tokens(chars))
            return _get(body, "turn_complete") is True, True
        if kind == "realtime_input":
            blobs = [_get(body, "audio"), _get(body, "video"), *(_get(body, "media_chunks") or [])]
            for blob in blobs:
                mime = _get(blob, "mime_type")
                if not isinstance(mime, str):
                    continue
                if mime.startswith("audio/"):
                    size = len(_b64decode(_get(blob, "data")))
                    add(rec.pending_in, "AUDIO", _pcm_tokens(size, _rate(mime)))
                else:
                    add(rec.pending_in, "IMAGE", VIDEO_FRAME_TOKENS)
            text = _get(body, "text")
            add(rec.pending_in, "TEXT", _tokens(len(text) if isinstance(text, str) else 0))
            ends = any(_get(body, k) is not None for k in ("activity_end", "text")) or (
                _get(body, "audio_stream_end") is True
            )
            interrupts = any(_get(body, k) is not None for k in ("activity_start", "text"))
            return ends, interrupts
        if kind == "tool_response":
            add(rec.pending_in, "TEXT", _tokens(len(json.dumps(body))))
        return False, False

    async def _player(self, s: _Session) -> None:
        while True:
            await s.triggers.get()
            with self._lock:
                turn = self._turns.popleft() if self._turns else text_turn()
            s.rec.turns_played += 1
            s.interrupt.clear()
            if not await self._play(s, turn.steps):
                return

    async def _play(self, s: _Session, steps: list[Step]) -> bool:
        """Play steps; False once the session is closed."""
        for step in steps:
            match step:
                case dict() | Frame():
                    await self._send(s, step)
                case Expect(kind=kind, timeout=timeout):
                    async with asyncio.timeout(timeout):
                        while await s.inbox.get() != kind:
                            pass
                case Pause(seconds=seconds):
                    if await self._pause(s, seconds):
                        return await self._interrupted(s)
                case Hold():
                    if await self._pause(s, None):
                        return await self._interrupted(s)
                case Close(code=code, reason=reason):
                    await self._close(s, code, reason)
                    return False
                case Drop():
                    s.rec.close_code, s.rec.close_reason, s.rec.closed_by_server = 1006, "", True
                    s.ws.transport.abort()
                    return False
                case GoAway(time_left=left, code=code, reason=reason):
                    await self._send(s, go_away(f"{left:g}s"))
                    if code is not None:
                        s.later(left, code, reason)
        return True

    async def _pause(self, s: _Session, seconds: float | None) -> bool:
        """Wait (for ``seconds``, or until released); True if the client interrupted."""
        s.pausing = True
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            while not s.interrupt.is_set():
                if deadline is None and self._released.is_set():
                    return False
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(s.interrupt.wait(), 0.005)
            return True
        finally:
            s.pausing = False

    async def _interrupted(self, s: _Session) -> bool:
        s.rec.interrupted_turns += 1
        await self._send(s, _content(interrupted=True))
        await self._send(s, {"serverContent": {"turnComplete": True}, "usageMetadata": AUTO})
        return True

    async def _send(self, s: _Session, step: dict[str, Any] | Frame) -> None:
        binary = step.binary if isinstance(step, Frame) else self.binary
        msg = dict(step.message if isinstance(step, Frame) else step)
        self._account_out(s.rec, msg)
        if msg.get("usageMetadata") is AUTO:
            msg["usageMetadata"] = s.rec.auto_usage()
        elif "usageMetadata" in msg:
            s.rec.fold()
        if "usageMetadata" in msg:
            s.rec.usage_sent.append(msg["usageMetadata"])
        s.rec.sent.append(msg)
        s.rec.transcript.append(("server", msg))
        text = json.dumps(msg)
        await s.ws.send(text.encode() if binary else text)
        if handle := self._resumption(s, msg):
            await self._send(
                s, {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}}
            )

    def _resumption(self, s: _Session, msg: dict[str, Any]) -> str | None:
        # After each turn, a session that asked for resumption gets a handle to its context.
        done = _get(_get(msg, "server_content"), "turn_complete") is True
        if not done or _get(s.rec.setup, "session_resumption") is None:
            return None
        handle = f"fake-handle-{next(self._ids)}"
        context = dict(s.rec.context)
        for bucket in (s.rec.pending_in, s.rec.pending_out):
            for m, n in bucket.items():
                context[m] = context.get(m, 0) + n
        self._handles[handle] = context
        return handle

    @staticmethod
    def _account_out(rec: LiveSession, msg: dict[str, Any]) -> None:
        content = _get(msg, "server_content")
        for part in _get(_get(content, "model_turn"), "parts") or []:
            if isinstance(text := part.get("text"), str):
                rec.add_tokens(rec.pending_out, "TEXT", _tokens(len(text)))
            blob = _get(part, "inline_data")
            mime = _get(blob, "mime_type")
            if isinstance(mime, str) and mime.startswith("audio/"):
                size = len(_b64decode(_get(blob, "data")))
                rec.add_tokens(
                    rec.pending_out, "AUDIO", _pcm_tokens(size, _rate(mime, OUTPUT_RATE))
                )
        # Transcripts of the model's speech are billed as text output (seeds/004 line 138).
        transcript = _get(_get(content, "output_transcription"), "text")
        if isinstance(transcript, str):
            rec.add_tokens(rec.pending_out, "TEXT", _tokens(len(transcript)))
        calls = _get(_get(msg, "tool_call"), "function_calls")
        if calls:
            rec.add_tokens(rec.pending_out, "TEXT", _tokens(len(json.dumps(calls))))

    async def _close(self, s: _Session, code: int, reason: str) -> None:
        rec = s.rec
        if rec.close_code is None:
            rec.close_code, rec.close_reason, rec.closed_by_server = code, reason, True
        with contextlib.suppress(ConnectionClosed):
            # A close frame carries at most 123 bytes of reason (RFC 6455 §5.5).
            await s.ws.close(code, reason.encode()[:123].decode(errors="ignore"))
