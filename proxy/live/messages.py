"""Reading the Live API's messages: pure functions over the JSON of ``BidiGenerateContent``.

The relay forwards every frame as it came; it only *reads* them, to check the setup, meter each
turn and see the end of a session coming. Messages are protobuf JSON, so a field may be spelled
camelCase or snake_case, and the google-genai SDK mixes both in one message
(``{"client_content": {"turnComplete": true}}``, ``{"realtime_input": {"audio": {"mime_type":
...}}}``): every reader here accepts either spelling.

Usage (``usageMetadata``, which may ride on any server message) is reported once per model
response, each counting the whole context window of that turn, so a turn's usage is billed as
reported and a session costs the sum of its turns: the price lists' rule for Live ("billed per
turn for all tokens in the session's context window"). :class:`TurnMeter` turns the stream of
server messages into one :class:`TurnRecord` per turn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import orjson

from proxy.usage import Usage

__all__ = [
    "CLIENT_KINDS",
    "MAX_CLOSE_REASON_BYTES",
    "SERVER_KINDS",
    "ClientInput",
    "LiveMessageError",
    "LiveUsage",
    "ServerEvent",
    "SetupError",
    "TurnMeter",
    "TurnRecord",
    "b64_size",
    "close_reason",
    "decode",
    "get",
    "live_usage",
    "model_id",
    "parse_client",
    "parse_duration",
    "parse_server",
    "pcm_seconds",
    "setup_model",
]

# The oneof of BidiGenerateContentClientMessage / ServerMessage, in snake_case.
CLIENT_KINDS: Final = (
    "setup",
    "client_content",
    "realtime_input",
    "tool_response",
    "context_update",
)
SERVER_KINDS: Final = (
    "setup_complete",
    "server_content",
    "tool_call",
    "tool_call_cancellation",
    "go_away",
    "session_resumption_update",
    "voice_activity_detection_signal",
    "voice_activity",
)
# RFC 6455 §5.5: a control frame's payload is at most 125 bytes, two of them the close code.
MAX_CLOSE_REASON_BYTES: Final = 123


class LiveMessageError(ValueError):
    """A frame that is not a JSON object."""


class SetupError(ValueError):
    """A setup message the relay must refuse; ``str()`` is fit for a close reason."""


# -- spelling ------------------------------------------------------------------------------


@cache
def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.capitalize() for word in rest)


def get(obj: Any, name: str) -> Any:
    """``obj[name]`` under its snake_case or camelCase spelling; None if absent or not a mapping.

    ``name`` is given in snake_case. When both spellings are present (no real client sends
    that) the snake one wins, as it does in the SDK's own converters.
    """
    if not isinstance(obj, Mapping):
        return None
    value = obj.get(name)
    if value is None and "_" in name:
        value = obj.get(_camel(name))
    return value


def _kinds(msg: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in names if get(msg, n) is not None)


def decode(frame: str | bytes) -> dict[str, Any]:
    """One WebSocket frame's JSON object. Text and binary frames carry the same JSON."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise LiveMessageError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise LiveMessageError("a Live message is a JSON object")
    return msg


def _int(value: Any) -> int:
    # Absent or malformed counts read as zero: a bad reply must never make the meter raise.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def _true(value: Any) -> bool:
    return value is True


# -- setup ---------------------------------------------------------------------------------

# Gemini API model ids: lower-case words joined by '-' or '.', e.g. gemini-2.5-flash-native-audio-
# preview-09-2025 or gemini-live-2.5-flash-preview. Anything else (a host, a path, a query,
# percent-encoding, Vertex's publishers/... names) is refused before it can reach upstream.
_MODEL_ID = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,126}[a-z0-9])?")


def model_id(name: Any) -> str:
    """The bare model id of a setup's ``model`` (``models/<id>``; a bare ``<id>`` is accepted).

    Raises :class:`SetupError` for anything that is not one plain id — ``tunedModels/<id>``
    too, which the SDK would pass: its id could pass an allow-list meant for a base model.
    """
    if not isinstance(name, str) or not name:
        raise SetupError("setup.model is required (models/<id>)")
    bare = name.removeprefix("models/")
    if ".." in bare or not _MODEL_ID.fullmatch(bare):
        raise SetupError("setup.model must be models/<id> with a plain model id")
    return bare


def setup_model(msg: Mapping[str, Any]) -> str:
    """The model id of a session's first message, which must be a setup and only that."""
    kinds = _kinds(msg, CLIENT_KINDS)
    if kinds != ("setup",):
        raise SetupError("the first message of a Live session must be a setup")
    setup = get(msg, "setup")
    if not isinstance(setup, Mapping):
        raise SetupError("setup must be an object")
    return model_id(get(setup, "model"))


# -- usage ---------------------------------------------------------------------------------


def _by_modality(details: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    if isinstance(details, list):
        for item in details:
            modality = get(item, "modality")
            if isinstance(modality, str):
                key = modality.upper()
                counts[key] = counts.get(key, 0) + _int(get(item, "token_count"))
    return counts


@dataclass(frozen=True, slots=True)
class LiveUsage:
    """One Live ``usageMetadata``, split by the modalities the Live price lists name.

    ``prompt_tokens`` is the turn's whole context window (earlier turns included); each
    modality part is clamped so the parts never exceed the whole, and whatever the details do
    not attribute is text (the SDK documents MODALITY_UNSPECIFIED as text).
    """

    prompt_tokens: int = 0
    cached_tokens: int = 0
    response_tokens: int = 0
    thoughts_tokens: int = 0
    tool_use_prompt_tokens: int = 0
    total_tokens: int = 0  # as reported; 0 when absent
    audio_prompt_tokens: int = 0
    prompt_image_tokens: int = 0
    prompt_video_tokens: int = 0
    cached_audio_tokens: int = 0
    response_audio_tokens: int = 0
    response_image_tokens: int = 0

    @property
    def prompt_text_tokens(self) -> int:
        return self.prompt_tokens - self.audio_prompt_tokens - self.prompt_image_video_tokens

    @property
    def prompt_image_video_tokens(self) -> int:
        # One rate in the Live price lists ("vidéo/image", "hình ảnh [video]").
        return self.prompt_image_tokens + self.prompt_video_tokens

    @property
    def response_text_tokens(self) -> int:
        return self.response_tokens - self.response_audio_tokens - self.response_image_tokens

    def __add__(self, other: LiveUsage) -> LiveUsage:
        return LiveUsage(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))

    def to_usage(self) -> Usage:
        """The proxy's :class:`Usage`: the image and video parts of the prompt are counted apart
        from the text, which Live prices at another rate (``input_image_video``)."""
        return Usage(
            prompt_tokens=self.prompt_tokens,
            cached_tokens=self.cached_tokens,
            output_tokens=self.response_tokens,
            thinking_tokens=self.thoughts_tokens,
            tool_use_prompt_tokens=self.tool_use_prompt_tokens,
            audio_prompt_tokens=self.audio_prompt_tokens,
            cached_audio_tokens=self.cached_audio_tokens,
            image_prompt_tokens=self.prompt_image_tokens,
            video_prompt_tokens=self.prompt_video_tokens,
            output_image_tokens=self.response_image_tokens,
            output_audio_tokens=self.response_audio_tokens,
        )


def _values(u: LiveUsage) -> tuple[int, ...]:
    return tuple(getattr(u, name) for name in LiveUsage.__slots__)


def live_usage(md: Any) -> LiveUsage | None:
    """Parse a Live ``usageMetadata`` (None if it is not an object).

    The Gemini API names the output ``responseTokenCount`` / ``responseTokensDetails``;
    Vertex AI's Live API sends ``candidatesTokenCount`` / ``candidatesTokensDetails`` (the SDK
    maps them onto the same field), so either is read.
    """
    if not isinstance(md, Mapping):
        return None
    prompt = _int(get(md, "prompt_token_count"))
    response = _int(get(md, "response_token_count")) or _int(get(md, "candidates_token_count"))
    cached = min(_int(get(md, "cached_content_token_count")), prompt)
    p = _by_modality(get(md, "prompt_tokens_details"))
    r = _by_modality(get(md, "response_tokens_details") or get(md, "candidates_tokens_details"))
    audio = min(p.get("AUDIO", 0), prompt)
    image = min(p.get("IMAGE", 0), prompt - audio)
    video = min(p.get("VIDEO", 0), prompt - audio - image)
    out_audio = min(r.get("AUDIO", 0), response)
    out_image = min(r.get("IMAGE", 0), response - out_audio)
    cached_audio = min(_by_modality(get(md, "cache_tokens_details")).get("AUDIO", 0), cached)
    return LiveUsage(
        prompt_tokens=prompt,
        cached_tokens=cached,
        response_tokens=response,
        thoughts_tokens=_int(get(md, "thoughts_token_count")),
        tool_use_prompt_tokens=_int(get(md, "tool_use_prompt_token_count")),
        total_tokens=_int(get(md, "total_token_count")),
        audio_prompt_tokens=audio,
        prompt_image_tokens=image,
        prompt_video_tokens=video,
        cached_audio_tokens=cached_audio,
        response_audio_tokens=out_audio,
        response_image_tokens=out_image,
    )


# -- media ---------------------------------------------------------------------------------


def b64_size(data: Any) -> int:
    """Decoded size of a base64 string (standard or URL-safe, padded or not), without decoding."""
    if not isinstance(data, str):
        return 0
    n = len(data) - (data.endswith("=") + data.endswith("=="))
    return n * 3 // 4


_RATE = re.compile(r"(?:^|;)\s*rate=(\d+)", re.IGNORECASE)


def pcm_seconds(mime_type: Any, size: int) -> float:
    """Seconds of 16-bit mono PCM in ``size`` bytes of ``audio/pcm;rate=N`` (0.0 if unknown).

    The Live API takes 16-bit little-endian PCM in and sends 24 kHz PCM out; without a rate
    parameter input is taken as 16 kHz, its documented default.
    """
    if not isinstance(mime_type, str) or not mime_type.lower().startswith("audio/pcm"):
        return 0.0
    match = _RATE.search(mime_type)
    rate = int(match[1]) if match else 16000
    return size / (2 * rate) if rate else 0.0


_DURATION = re.compile(r"(-?\d+(?:\.\d{1,9})?)s")


def parse_duration(value: Any) -> float | None:
    """Seconds of a protobuf JSON Duration (``"5s"``, ``"1.5s"``); None if malformed."""
    if isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        return float(match[1])
    return None


def close_reason(text: str) -> str:
    """``text`` cut to what a WebSocket close frame can carry, on a UTF-8 character boundary."""
    raw = text.encode()
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return text
    return raw[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


# -- client messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientInput:
    """What one client message contributes to the current turn."""

    kind: str | None  # one of CLIENT_KINDS, None for an empty or unknown message
    turn_complete: bool = False  # clientContent.turnComplete: the model should answer now
    activity_start: bool = False
    activity_end: bool = False
    audio_stream_end: bool = False
    audio_bytes: int = 0
    audio_seconds: float = 0.0
    video_bytes: int = 0
    text_chars: int = 0
    function_response_ids: tuple[str, ...] = ()

    @property
    def is_input(self) -> bool:
        """True if this message adds to the conversation (opens or continues a user turn)."""
        return self.kind in ("client_content", "realtime_input", "tool_response")


def _text_chars(turns: Any) -> int:
    chars = 0
    if isinstance(turns, list):
        for content in turns:
            parts = get(content, "parts")
            if isinstance(parts, list):
                chars += sum(len(t) for p in parts if isinstance(t := get(p, "text"), str))
    return chars


def _blob(blob: Any) -> tuple[int, float]:
    size = b64_size(get(blob, "data"))
    return size, pcm_seconds(get(blob, "mime_type"), size)


def parse_client(msg: Mapping[str, Any]) -> ClientInput:
    """Read one client message (after the setup)."""
    kinds = _kinds(msg, CLIENT_KINDS)
    kind = kinds[0] if kinds else None
    body = get(msg, kind) if kind else None
    if kind == "client_content":
        return ClientInput(
            kind,
            turn_complete=_true(get(body, "turn_complete")),
            text_chars=_text_chars(get(body, "turns")),
        )
    if kind == "realtime_input":
        audio_bytes, seconds = _blob(get(body, "audio"))
        video_bytes = b64_size(get(get(body, "video"), "data"))
        chunks = get(body, "media_chunks")  # deprecated, still sent by AsyncSession.send()
        if isinstance(chunks, list):
            for chunk in chunks:
                size, secs = _blob(chunk)
                mime = get(chunk, "mime_type")
                if isinstance(mime, str) and mime.startswith("audio/"):
                    audio_bytes, seconds = audio_bytes + size, seconds + secs
                else:
                    video_bytes += size
        text = get(body, "text")
        return ClientInput(
            kind,
            activity_start=get(body, "activity_start") is not None,
            activity_end=get(body, "activity_end") is not None,
            audio_stream_end=_true(get(body, "audio_stream_end")),
            audio_bytes=audio_bytes,
            audio_seconds=seconds,
            video_bytes=video_bytes,
            text_chars=len(text) if isinstance(text, str) else 0,
        )
    if kind == "tool_response":
        responses = get(body, "function_responses")
        ids = tuple(
            i for r in (responses if isinstance(responses, list) else []) if (i := get(r, "id"))
        )
        return ClientInput(kind, function_response_ids=ids)
    return ClientInput(kind)


# -- server messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """What one server message says about the session and its current turn."""

    kinds: tuple[str, ...]  # the SERVER_KINDS present (one, or none for a usage-only message)
    usage: LiveUsage | None = None
    turn_complete: bool = False
    generation_complete: bool = False
    interrupted: bool = False
    waiting_for_input: bool = False
    interaction_status: str | None = None  # IN_PROGRESS / IDLE, when the server says
    tool_call_ids: tuple[str, ...] = ()
    cancelled_tool_call_ids: tuple[str, ...] = ()
    go_away_seconds: float | None = None  # goAway.timeLeft; -1.0 if present but unreadable
    resumption_handle: str | None = None  # sessionResumptionUpdate.newHandle when resumable
    text_chars: int = 0  # modelTurn text and outputTranscription, for estimates
    audio_bytes: int = 0  # modelTurn inlineData audio

    @property
    def ends_turn(self) -> bool:
        """The model is done with the turn. As the SDK's ``receive()`` decides it: an
        ``interactionStatus`` (sent with turnComplete by servers that reason in the background)
        overrides turnComplete, and only IDLE ends the turn."""
        if self.interaction_status not in (None, "INTERACTION_STATUS_UNSPECIFIED"):
            return self.interaction_status == "IDLE"
        return self.turn_complete

    @property
    def opens_turn(self) -> bool:
        """True if the message is part of a turn's answer (content, a tool call, its usage)."""
        return "server_content" in self.kinds or "tool_call" in self.kinds


def _model_output(content: Any) -> tuple[int, int]:
    chars = audio = 0
    parts = get(get(content, "model_turn"), "parts")
    if isinstance(parts, list):
        for part in parts:
            text = get(part, "text")
            if isinstance(text, str):
                chars += len(text)
            blob = get(part, "inline_data")
            mime = get(blob, "mime_type")
            if isinstance(mime, str) and mime.startswith("audio/"):
                audio += b64_size(get(blob, "data"))
    transcript = get(get(content, "output_transcription"), "text")
    if isinstance(transcript, str):
        chars += len(transcript)
    return chars, audio


def _ids(items: Any, key: str) -> tuple[str, ...]:
    if not isinstance(items, list):
        return ()
    if not key:
        return tuple(i for i in items if isinstance(i, str))
    return tuple(i for item in items if isinstance(i := get(item, key), str))


def parse_server(msg: Mapping[str, Any]) -> ServerEvent:
    """Read one server message. ``usageMetadata`` sits beside the oneof, so any message may
    carry it (a usage-only message has no kind at all)."""
    kinds = _kinds(msg, SERVER_KINDS)
    usage = live_usage(get(msg, "usage_metadata"))
    content = get(msg, "server_content")
    chars, audio = _model_output(content)
    go_away = get(msg, "go_away")
    seconds = None
    if go_away is not None:
        seconds = parse_duration(get(go_away, "time_left"))
        seconds = -1.0 if seconds is None else seconds
    status = get(content, "interaction_status")
    update = get(msg, "session_resumption_update")
    handle = get(update, "new_handle") if _true(get(update, "resumable")) else None
    return ServerEvent(
        kinds=kinds,
        usage=usage,
        turn_complete=_true(get(content, "turn_complete")),
        generation_complete=_true(get(content, "generation_complete")),
        interrupted=_true(get(content, "interrupted")),
        waiting_for_input=_true(get(content, "waiting_for_input")),
        interaction_status=status.upper() if isinstance(status, str) else None,
        tool_call_ids=_ids(get(get(msg, "tool_call"), "function_calls"), "id"),
        cancelled_tool_call_ids=_ids(get(get(msg, "tool_call_cancellation"), "ids"), ""),
        go_away_seconds=seconds,
        resumption_handle=handle if isinstance(handle, str) and handle else None,
        text_chars=chars,
        audio_bytes=audio,
    )


# -- turns ---------------------------------------------------------------------------------


@dataclass(slots=True)
class TurnRecord:
    """What one turn leaves for the ledger: one row.

    ``usage`` is None when no ``usageMetadata`` came for the turn (cut before it, or a server
    that sent none); the ``input_*`` / ``output_*`` observations are there to estimate such a
    turn and are otherwise informative only.
    """

    index: int  # 1-based, in the order the turns ended
    usage: LiveUsage | None = None
    complete: bool = False  # ended by serverContent.turnComplete (False: the session ended first)
    interrupted: bool = False  # the client barged in (serverContent.interrupted)
    generation_complete: bool = False
    generations: int = 0  # usage reports summed into ``usage`` (a tool call splits a turn)
    superseded_reports: int = 0  # later reports that replaced an earlier one of a generation
    tool_calls: int = 0
    input_text_chars: int = 0
    input_audio_seconds: float = 0.0
    input_video_bytes: int = 0
    output_text_chars: int = 0
    output_audio_bytes: int = 0

    @property
    def empty(self) -> bool:
        """Nothing happened in it: no usage, no input, no output."""
        return self.usage is None and not (
            self.input_text_chars
            or self.input_audio_seconds
            or self.input_video_bytes
            or self.output_text_chars
            or self.output_audio_bytes
            or self.tool_calls
        )


@dataclass(slots=True)
class TurnMeter:
    """Folds a session's messages into one :class:`TurnRecord` per turn. No I/O, no clock.

    A turn ends where the SDK's ``receive()`` ends it (:attr:`ServerEvent.ends_turn`): at
    ``serverContent.turnComplete``, after ``interrupted`` too (the protocol then still sends
    turnComplete), unless an ``interactionStatus`` says more is coming. Within a turn, usage
    reports are folded per *generation*: a later report replaces an earlier one (Gemini's
    counts are snapshots, as in streamed generateContent), and a tool call (or a turnComplete
    that is not the end) ends a generation, since the model answers in a new one that reads
    the whole context again. A turn whose turnComplete came without usage is held until the
    next server message: a usage-only message then completes it, anything else releases it as
    it is. The meter keeps no finished turns: a session's memory stays flat however long it is.
    """

    _index: int = 0
    _open: TurnRecord | None = None
    _settled: LiveUsage | None = None  # sum of the turn's finished generations
    _pending: LiveUsage | None = None  # the latest report of the current generation
    _held: TurnRecord | None = None

    def _turn(self) -> TurnRecord:
        if self._open is None:
            self._open = TurnRecord(index=0)
        return self._open

    def _end_generation(self) -> None:
        if self._pending is not None:
            done = self._settled
            self._settled = self._pending if done is None else done + self._pending
            self._turn().generations += 1
            self._pending = None

    def _finish(self, *, complete: bool) -> TurnRecord:
        self._end_generation()
        turn = self._turn()
        self._index += 1
        turn.index, turn.usage, turn.complete = self._index, self._settled, complete
        self._open, self._settled = None, None
        return turn

    @property
    def in_turn(self) -> bool:
        """A turn is under way (input or output since the last turn ended)."""
        return self._open is not None

    @property
    def unfinished(self) -> int:
        """Turns begun and not yet returned: the one under way and a held one."""
        return (self._open is not None) + (self._held is not None)

    def client(self, msg: ClientInput) -> None:
        """Note a client message (its input belongs to the turn being built)."""
        if not msg.is_input:
            return
        turn = self._turn()
        turn.input_text_chars += msg.text_chars
        turn.input_audio_seconds += msg.audio_seconds
        turn.input_video_bytes += msg.video_bytes

    def server(self, ev: ServerEvent) -> list[TurnRecord]:
        """Note a server message; returns the turns it ended (usually none, at most two)."""
        out: list[TurnRecord] = []
        if self._held is not None:
            held, self._held = self._held, None
            if ev.usage is not None and not ev.opens_turn:
                held.usage, held.generations = ev.usage, 1
                out.append(held)
                return out
            out.append(held)
        if not (ev.opens_turn or ev.usage is not None):
            return out
        turn = self._turn()
        turn.output_text_chars += ev.text_chars
        turn.output_audio_bytes += ev.audio_bytes
        turn.interrupted |= ev.interrupted
        turn.generation_complete |= ev.generation_complete
        if ev.usage is not None:
            turn.superseded_reports += self._pending is not None
            self._pending = ev.usage
        if ev.tool_call_ids or "tool_call" in ev.kinds:
            turn.tool_calls += 1
            self._end_generation()
        if ev.turn_complete and not ev.ends_turn:  # more output follows: a new generation
            self._end_generation()
        if ev.ends_turn:
            done = self._finish(complete=True)
            if done.usage is None:
                self._held = done
            else:
                out.append(done)
        return out

    def close(self) -> list[TurnRecord]:
        """The session ended: the held turn, and the turn cut mid-way if one was under way."""
        out: list[TurnRecord] = []
        if self._held is not None:
            out.append(self._held)
            self._held = None
        if self._open is not None:
            cut = self._finish(complete=False)
            if not cut.empty:
                out.append(cut)
            else:
                self._index -= 1  # nothing was said: not a turn
        return out
