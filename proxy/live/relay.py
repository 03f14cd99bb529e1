"""The Live API relay: a client's WebSocket session forwarded to Google's, metered turn by turn.

    client ──ws──► /ws/google.ai.generativelanguage.{v1beta,v1alpha}.GenerativeService.
                   BidiGenerateContent  (tenant key in ?key= or x-goog-api-key)
      accept → tenant key → setup (model checked) → session admitted (RPM, models, budget)
      → upstream opened with the proxy's key → setup sent → frames both ways as they come

Every frame is forwarded as it came (text stays text, binary stays binary), one at a time and
never batched; it is read after it went out (the forwarding path only waits on the send),
except a client message that begins a turn, which is read first: the turn is admitted against
the tenant's quotas before its input reaches the model. Each turn is one metered call of the
pipeline (``pipeline.admit(..., estimate=<its worst case>, count_request=False)``, closed with
the usage its ``usageMetadata`` reported): one ledger row per turn, carrying the session id
and the turn number. A turn the session's end cut short is closed with status 499 and an
``error_class`` naming what ended the session (``live_client``, ``live_upstream``,
``live_shutdown``...), billed for the usage reported so far, or for an estimate of it
(``estimated``) if none came while the model was answering. See docs/live.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import metrics
from ..caller import Caller
from ..errors import ProxyError, ServiceUnavailable, TransportError
from ..model_ids import ModelId, model_id
from ..pipeline import MeteredCall
from ..quotas.estimate import Estimate, estimate_tokens
from ..redact import redact
from ..services import Services, authenticate, services
from ..upstream import LiveConnection
from ..usage import Usage
from .messages import (
    ClientInput,
    LiveMessageError,
    SetupError,
    TurnMeter,
    TurnRecord,
    close_reason,
    decode,
    get,
    parse_client,
    parse_server,
    setup_model,
)
from .sessions import SESSIONS

__all__ = ["OPERATION", "ROUTE", "live_endpoint", "routes"]

log = logging.getLogger("gemini_meter.live")

ROUTE = "live"
OPERATION = "bidiGenerateContent"
PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
VERSIONS = frozenset({"v1", "v1beta", "v1alpha"})  # the SDK dials v1 by default
# seeds/004 line 215: 25 tokens a second of audio (in and out); the Live API sends 24 kHz
# 16-bit PCM. Used only to estimate a turn the upstream reported no usage for.
AUDIO_TOKENS_PER_SECOND = 25
OUTPUT_AUDIO_BYTES_PER_SECOND = 2 * 24000
CHARS_PER_TOKEN = 4

# Close codes (RFC 6455 §7.4.1): the SDK raises them as APIError(code, reason).
NORMAL = 1000
POLICY = 1008  # key refused, model not allowed, quota or budget
INVALID = 1007  # the first message is not a valid setup
TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN = 1013  # quotas cannot be checked right now


def _code_for(exc: ProxyError) -> int:
    return TRY_AGAIN if isinstance(exc, ServiceUnavailable) else POLICY


class Relay:
    """One client session and its upstream session."""

    def __init__(self, ws: WebSocket, svc: Services, version: str) -> None:
        self.ws = ws
        self.svc = svc
        self.version = version
        self.id = uuid.uuid4().hex
        self.started = time.monotonic()
        self.last_activity = self.started
        self.meter = TurnMeter()
        self.calls: deque[MeteredCall] = deque()  # the turns begun, oldest first
        self.rows = 0
        self.turns = 0
        self.context = 0  # tokens of the session's context window, as last reported
        self.context_audio = 0
        self.caller: Caller | None = None
        self.model: ModelId | None = None
        self.setup: Mapping[str, Any] = {}
        self.upstream: LiveConnection | None = None
        self.client_gone = False
        self.cause: str | None = None  # what ended the session (a metric label, bounded)
        self.code = NORMAL
        self.reason = ""
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- control (from the pumps, the watchdog and the shutdown) ------------------------------

    def stop(self, cause: str, code: int, reason: str) -> None:
        """End the session: the first cause stands."""
        if self.cause is None:
            self.cause, self.code, self.reason = cause, code, reason
        self._stop.set()

    def go_away(self, seconds: float) -> None:
        """Tell the client the session will end in ``seconds`` (the shutdown's notice)."""
        frame = f'{{"goAway": {{"timeLeft": "{max(0, math.floor(seconds))}s"}}}}'

        async def send() -> None:
            with contextlib.suppress(Exception):  # the client went already: nothing to tell
                await self.ws.send_text(frame)

        task = asyncio.ensure_future(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    # -- the session ------------------------------------------------------------------------

    async def run(self) -> None:
        await self.ws.accept()
        SESSIONS.add(self)
        metrics.LIVE_SESSIONS_OPEN.inc()
        try:
            if await self._open():
                await self._relay()
        except Exception:
            log.exception("Live session %s failed", self.id)
            self.stop("error", INTERNAL, "Internal error in the proxy.")
        finally:
            try:
                await self._finish()
            finally:
                SESSIONS.discard(self)
                metrics.LIVE_SESSIONS_OPEN.dec()
                # The session's access line (the HTTP access line is written per request).
                log.info(
                    "live session %s tenant=%s model=%s turns=%d rows=%d ended=%s code=%d %.1fs",
                    self.id, self.caller.tenant_name if self.caller else "-",
                    self.model.name if self.model else "-", self.turns, self.rows,
                    self.cause or "client", self.code, time.monotonic() - self.started,
                )  # fmt: skip
                metrics.LIVE_SESSION_DURATION.labels(self.cause or "client").observe(
                    time.monotonic() - self.started
                )

    async def _open(self) -> bool:
        """Authenticate, read and check the setup, admit the session, open the upstream."""
        settings = self.svc.settings
        if SESSIONS.draining:
            self.stop("shutdown", 1001, "The proxy is shutting down; reconnect to continue.")
            return False
        refused: ProxyError | None = None
        try:
            _, caller = await authenticate(self.ws)
        except ProxyError as exc:
            refused = exc
        try:
            async with asyncio.timeout(settings.live_setup_timeout):
                first = await self._receive_client()
        except TimeoutError:
            self.stop("idle", POLICY, "No setup message came in time.")
            return False
        if refused is not None:
            # Closed once the setup is read, as Google does: a close before it races the
            # client's send of its setup, and the SDK would not surface the reason.
            self.stop("refused", POLICY, str(refused))
            return False
        self.caller = caller
        if first is None:
            return False
        try:
            msg = decode(first)
            self.model = model_id(setup_model(msg))
            setup = get(msg, "setup")
        except (LiveMessageError, SetupError, ProxyError) as exc:
            self.stop("refused", INVALID, str(exc))
            return False
        self.setup = setup if isinstance(setup, Mapping) else {}
        try:
            await self.svc.pipeline.admit_only(
                self.caller, model=self.model, operation=OPERATION, estimate=self._estimate(0, 0)
            )
        except ProxyError as exc:
            self.stop("refused", _code_for(exc), str(exc))
            return False
        try:
            self.upstream = await self.svc.live.connect(self.version)
        except TransportError as exc:
            log.warning("Live session %s: upstream unavailable: %s", self.id, exc)
            # The session was admitted and tried upstream: one row says so (no tokens, $0).
            call = self.svc.pipeline.open(self.caller, route=ROUTE, operation=OPERATION,
                                          model=self.model, streamed=True)  # fmt: skip
            call.meter.session_id = self.id
            call.close(502, error_class=f"upstream_{type(exc).__name__}")
            self.rows += 1
            self.stop("upstream", INTERNAL, "The upstream Live API is unavailable.")
            return False
        await self.upstream.send(first)
        return True

    async def _relay(self) -> None:
        tasks = [
            asyncio.create_task(self._client_pump()),
            asyncio.create_task(self._upstream_pump()),
            asyncio.create_task(self._watchdog()),
            asyncio.create_task(self._stop.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, TransportError):
                self.stop("upstream", INTERNAL, "The upstream Live connection was lost.")
            elif isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError):
                log.error("Live session %s: relay failed", self.id, exc_info=r)
                self.stop("error", INTERNAL, "Internal error in the proxy.")

    async def _receive_client(self) -> str | bytes | None:
        """The client's next frame; None once it is gone (the session then ends)."""
        try:
            msg = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            msg = {"type": "websocket.disconnect"}
        if msg["type"] == "websocket.disconnect":
            self.client_gone = True
            self.stop("client", NORMAL, "")
            return None
        data: str | bytes | None = msg.get("text")
        if data is None:
            data = msg.get("bytes") or b""
        self.touch()
        if self._too_big(data):
            return None
        return data

    def _too_big(self, data: str | bytes) -> bool:
        limit = self.svc.settings.live_max_message_bytes
        size = len(data)
        if isinstance(data, str) and size * 4 > limit:
            size = len(data.encode())
        if size > limit:
            self.stop("too_big", TOO_BIG, f"A Live message is limited to {limit} bytes.")
            return True
        return False

    async def _client_pump(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        while True:
            data = await self._receive_client()
            if data is None:
                return
            if self.meter.in_turn:
                await upstream.send(data)  # forward first, read after
                self.meter.client(self._parse_client(data))
                continue
            read = self._parse_client(data)
            if read.is_input and not await self._admit_turn(read):
                return
            await upstream.send(data)
            self.meter.client(read)

    @staticmethod
    def _parse_client(data: str | bytes) -> ClientInput:
        try:
            return parse_client(decode(data))
        except LiveMessageError:
            return ClientInput(None)  # forwarded as it is: the upstream answers it

    async def _upstream_pump(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        while True:
            frame = await upstream.receive()
            if frame is None:
                code = upstream.close_code or 1006
                reason = redact(upstream.close_reason)
                if code in (1005, 1006, 1015):  # no close frame, or none to forward
                    code, reason = INTERNAL, reason or "The upstream Live connection was lost."
                self.stop("upstream", code, reason)
                return
            self.touch()
            if self._too_big(frame):
                return
            try:
                if isinstance(frame, str):
                    await self.ws.send_text(frame)
                else:
                    await self.ws.send_bytes(frame)
            except (WebSocketDisconnect, RuntimeError, OSError):
                # The client vanished without a close frame: the message was made upstream
                # all the same, so it is metered before the session ends.
                self.client_gone = True
                self.stop("client", NORMAL, "")
                await self._on_server(frame)
                return
            await self._on_server(frame)

    async def _on_server(self, frame: str | bytes) -> None:
        try:
            ev = parse_server(decode(frame))
        except LiveMessageError:
            return
        for record in self.meter.server(ev):
            call = self.calls.popleft() if self.calls else await self._server_turn()
            self._close_turn(call, record)
        while len(self.calls) < self.meter.unfinished:  # a turn the server began
            self.calls.append(await self._server_turn())

    async def _watchdog(self) -> None:
        idle = self.svc.settings.live_idle_timeout
        while True:
            left = self.last_activity + idle - time.monotonic()
            if left <= 0:
                self.stop("idle", NORMAL, f"Idle timeout: no message for {idle:g} seconds.")
                return
            await asyncio.sleep(left)

    # -- turns ------------------------------------------------------------------------------

    def _estimate(self, new_tokens: int, new_audio: int) -> Estimate:
        assert self.model is not None
        return estimate_tokens(
            self.svc.catalog,
            self.model.name,
            self.context + new_tokens,
            self.context_audio + new_audio,
            self.setup,
            OPERATION,
        )

    async def _admit_turn(self, read: ClientInput) -> bool:
        """Admit the turn the client begins: its worst case (the context window so far, this
        first message's input, the setup's output cap) held against the tenant's budget and
        token quotas. Refused: the session ends before the input reaches the model."""
        assert self.caller is not None and self.model is not None
        audio = math.ceil(read.audio_seconds * AUDIO_TOKENS_PER_SECOND)
        text = -(-read.text_chars // CHARS_PER_TOKEN)
        try:
            call = await self.svc.pipeline.admit(
                self.caller, route=ROUTE, operation=OPERATION, model=self.model, request={},
                streamed=True, estimate=self._estimate(text + audio, audio), count_request=False,
            )  # fmt: skip
        except ProxyError as exc:
            self.stop("quota", _code_for(exc), str(exc))
            return False
        self.calls.append(call)
        return True

    async def _server_turn(self) -> MeteredCall:
        """A call for a turn the server began without client input (proactive audio). It is
        admitted if it can be; if not, it is still recorded, and the session ends."""
        assert self.caller is not None and self.model is not None
        try:
            return await self.svc.pipeline.admit(
                self.caller, route=ROUTE, operation=OPERATION, model=self.model, request={},
                streamed=True, estimate=self._estimate(0, 0), count_request=False,
            )  # fmt: skip
        except ProxyError as exc:
            self.stop("quota", _code_for(exc), str(exc))
            return self.svc.pipeline.open(
                self.caller, route=ROUTE, operation=OPERATION, model=self.model, streamed=True
            )

    def _close_turn(self, call: MeteredCall, record: TurnRecord) -> None:
        m = call.meter
        if record.usage is not None:
            m.observe_usage(record.usage.to_usage())
        elif record.output_text_chars or record.output_audio_bytes or record.tool_calls:
            m.observe_usage(self._guess(record))  # cut while answering: billed, estimated
        else:
            m.estimate(self._guess(record))  # nothing came back: recorded, not billed
        m.session_id, m.turn = self.id, record.index
        m.detail = {
            "turn_complete": record.complete,
            "interrupted": record.interrupted,
            "tool_calls": record.tool_calls,
            "generations": record.generations,
        }
        if record.complete:
            call.close(200)
        else:
            call.close(499, error_class=f"live_{self.cause or 'ended'}")
        self.rows += 1
        self.turns = record.index
        if record.usage is not None:
            u = record.usage
            self.context = u.prompt_tokens + u.response_tokens + u.thoughts_tokens
            self.context_audio = u.audio_prompt_tokens + u.response_audio_tokens

    def _guess(self, record: TurnRecord) -> Usage:
        """A turn the upstream reported no usage for (cut before it): the context window so
        far, what was said and what was answered, estimated. Billed if the model had begun
        to answer (rather than dropped); a turn nothing came back for is not."""
        audio_in = math.ceil(record.input_audio_seconds * AUDIO_TOKENS_PER_SECOND)
        audio_out = math.ceil(
            record.output_audio_bytes / OUTPUT_AUDIO_BYTES_PER_SECOND * AUDIO_TOKENS_PER_SECOND
        )
        text_in = -(-record.input_text_chars // CHARS_PER_TOKEN)
        text_out = -(-record.output_text_chars // CHARS_PER_TOKEN)
        return Usage(
            prompt_tokens=self.context + text_in + audio_in,
            audio_prompt_tokens=self.context_audio + audio_in,
            output_tokens=text_out + audio_out,
            output_audio_tokens=audio_out,
            estimated=True,
        )

    # -- the end ----------------------------------------------------------------------------

    async def _finish(self) -> None:
        """Meter what is left, then close both sides (the rows never wait on a close)."""
        for record in self.meter.close():
            call = self.calls.popleft() if self.calls else None
            if call is None and self.caller is not None and self.model is not None:
                call = self.svc.pipeline.open(self.caller, route=ROUTE, operation=OPERATION,
                                              model=self.model, streamed=True)  # fmt: skip
            if call is not None:
                self._close_turn(call, record)
        while self.calls:  # admitted, but nothing was said in it: no tokens, not billed
            call = self.calls.popleft()
            call.meter.session_id, call.meter.turn = self.id, self.turns + 1
            call.close(499, error_class=f"live_{self.cause or 'ended'}")
            self.rows += 1
        if self.upstream is not None:
            if self.rows == 0 and self.caller is not None and self.model is not None:
                # A session that ended before its first turn still reached the upstream.
                call = self.svc.pipeline.open(self.caller, route=ROUTE, operation=OPERATION,
                                              model=self.model, streamed=True)  # fmt: skip
                call.meter.session_id, call.meter.turn = self.id, 0
                clean = self.cause in ("client", None)
                call.close(200 if clean else 499, None if clean else f"live_{self.cause}")
                self.rows += 1
            await self.upstream.close(NORMAL)
        if not self.client_gone:
            with contextlib.suppress(Exception):  # the client is gone already
                await self.ws.close(self.code, close_reason(self.reason))
        for task in list(self._tasks):
            task.cancel()


async def live_endpoint(ws: WebSocket) -> None:
    version = ws.path_params["version"]
    svc = services(ws)
    if version not in VERSIONS:
        await ws.close(POLICY, f"Unsupported Live API version {version[:20]!r}.")
        return
    await Relay(ws, svc, version).run()


def routes() -> list[BaseRoute]:
    return [WebSocketRoute(PATH, live_endpoint)]
