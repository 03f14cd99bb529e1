"""proxy.live.messages: reading Live API messages in either spelling, and metering per turn."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.live.messages import (
    MAX_CLOSE_REASON_BYTES,
    ClientInput,
    LiveMessageError,
    LiveUsage,
    ServerEvent,
    SetupError,
    TurnMeter,
    TurnRecord,
    b64_size,
    close_reason,
    decode,
    get,
    live_usage,
    model_id,
    parse_client,
    parse_duration,
    parse_server,
    pcm_seconds,
    setup_model,
)
from proxy.usage import Usage

# -- spelling and frames -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "name", "expected"),
    [
        ({"turn_complete": True}, "turn_complete", True),
        ({"turnComplete": True}, "turn_complete", True),
        ({"turn_complete": False, "turnComplete": True}, "turn_complete", False),  # snake wins
        ({"turn_complete": None, "turnComplete": True}, "turn_complete", True),
        ({"audio_stream_end": True}, "audio_stream_end", True),
        ({"audioStreamEnd": True}, "audio_stream_end", True),
        ({"text": "hi"}, "text", "hi"),
        ({}, "turn_complete", None),
        (["turnComplete"], "turn_complete", None),
        (None, "text", None),
    ],
)
def test_get_reads_both_spellings(obj: Any, name: str, expected: Any) -> None:
    assert get(obj, name) == expected


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"setupComplete": {}}', {"setupComplete": {}}),
        (b'{"setupComplete": {}}', {"setupComplete": {}}),  # a binary frame, as Google sends
        ('{"a": "\\u00e9"}', {"a": "é"}),
    ],
)
def test_decode(frame: str | bytes, expected: dict[str, Any]) -> None:
    assert decode(frame) == expected


@pytest.mark.parametrize("frame", ["", "not json", "[1, 2]", "3", b"\xff\xfe", '"setup"'])
def test_decode_refuses_what_is_not_an_object(frame: str | bytes) -> None:
    with pytest.raises(LiveMessageError):
        decode(frame)


# -- setup ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("models/gemini-live-2.5-flash-preview", "gemini-live-2.5-flash-preview"),
        ("models/gemini-2.5-flash-native-audio-preview-09-2025",
         "gemini-2.5-flash-native-audio-preview-09-2025"),
        ("models/gemini-2.0-flash-live-001", "gemini-2.0-flash-live-001"),
        ("gemini-2.0-flash-live-001", "gemini-2.0-flash-live-001"),  # bare ids: raw clients
    ],
)  # fmt: skip
def test_model_id_accepts_plain_ids(name: str, expected: str) -> None:
    assert model_id(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        None,
        "",
        42,
        ["models/gemini-2.0-flash-live-001"],
        "models/",
        "models/../v1beta/files",
        "models/gemini..live",
        "models/a/b",
        "models//gemini-2.0-flash-live-001",
        "models/gemini-2.0-flash-live-001?key=x",
        "models/gemini-2.0-flash-live-001#x",
        "models/gemini%2Fx",
        "models/Gemini-2.0-Flash",
        "models/gemini 2",
        "models/gemini-2.0-flash-live-001\n",
        "https://evil.example/models/x",
        "//evil.example/x",
        "evil.example:443",
        "publishers/google/models/gemini-2.0-flash-live-001",  # Vertex AI's form
        "projects/p/locations/l/publishers/google/models/x",
        "models/-gemini",
        "tunedModels/gemini-2.0-flash-live-001",
        "models/models/gemini-2.0-flash-live-001",
        "models/gemini-",
        "models/" + "a" * 200,
    ],
)
def test_model_id_refuses_anything_else(name: Any) -> None:
    with pytest.raises(SetupError):
        model_id(name)


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        ({"setup": {"model": "models/gemini-live-2.5-flash-preview"}},
         "gemini-live-2.5-flash-preview"),
        # What google-genai 3.6 sends: camelCase around values it did not convert.
        ({"setup": {"model": "models/gemini-2.0-flash-live-001",
                    "generationConfig": {"responseModalities": ["TEXT"]},
                    "realtimeInputConfig": {"automatic_activity_detection": {"disabled": True}}}},
         "gemini-2.0-flash-live-001"),
    ],
)  # fmt: skip
def test_setup_model(msg: dict[str, Any], expected: str) -> None:
    assert setup_model(msg) == expected


@pytest.mark.parametrize(
    "msg",
    [
        {},
        {"setup": None},
        {"setup": "models/x"},
        {"setup": {}},
        {"clientContent": {"turnComplete": True}},
        {"setup": {"model": "models/x"}, "client_content": {"turnComplete": True}},
        {"setup": {"model": "models/../../x"}},
    ],
)
def test_setup_model_refuses(msg: dict[str, Any]) -> None:
    with pytest.raises(SetupError) as caught:
        setup_model(msg)
    assert len(str(caught.value).encode()) <= MAX_CLOSE_REASON_BYTES  # fit for a close reason


# -- usage ---------------------------------------------------------------------------------

GEMINI_API = {  # as the Gemini API sends Live usage
    "promptTokenCount": 452,
    "responseTokenCount": 24,
    "totalTokenCount": 476,
    "promptTokensDetails": [
        {"modality": "TEXT", "tokenCount": 52},
        {"modality": "AUDIO", "tokenCount": 300},
        {"modality": "IMAGE", "tokenCount": 60},
        {"modality": "VIDEO", "tokenCount": 40},
    ],
    "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 20},
                              {"modality": "TEXT", "tokenCount": 4}],
}  # fmt: skip
EXPECTED = LiveUsage(
    prompt_tokens=452,
    response_tokens=24,
    total_tokens=476,
    audio_prompt_tokens=300,
    prompt_image_tokens=60,
    prompt_video_tokens=40,
    response_audio_tokens=20,
)


@pytest.mark.parametrize(
    ("md", "expected"),
    [
        (GEMINI_API, EXPECTED),
        # Vertex AI's Live API names the output as generateContent does.
        ({k.replace("response", "candidates"): v for k, v in GEMINI_API.items()}, EXPECTED),
        # snake_case, as the SDK's model_dump() writes it (a client that logs what it got).
        ({"prompt_token_count": 452, "response_token_count": 24, "total_token_count": 476,
          "prompt_tokens_details": [{"modality": "AUDIO", "token_count": 300},
                                    {"modality": "image", "token_count": 60},
                                    {"modality": "VIDEO", "token_count": 40}],
          "response_tokens_details": [{"modality": "AUDIO", "token_count": 20}]}, EXPECTED),
        ({}, LiveUsage()),
        ({"promptTokenCount": 10}, LiveUsage(prompt_tokens=10)),
        # Details past the whole are clamped; junk counts read as zero.
        ({"promptTokenCount": 10, "responseTokenCount": 5,
          "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 8},
                                  {"modality": "IMAGE", "tokenCount": 8}, "junk",
                                  {"modality": "VIDEO", "tokenCount": -3}],
          "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 9}]},
         LiveUsage(prompt_tokens=10, response_tokens=5, audio_prompt_tokens=8,
                   prompt_image_tokens=2, response_audio_tokens=5)),
        ({"promptTokenCount": "12", "responseTokenCount": True, "thoughtsTokenCount": 3.5},
         LiveUsage()),
        ({"promptTokenCount": 100, "cachedContentTokenCount": 150, "thoughtsTokenCount": 7,
          "toolUsePromptTokenCount": 9, "cacheTokensDetails": [{"modality": "AUDIO",
                                                                "tokenCount": 500}]},
         LiveUsage(prompt_tokens=100, cached_tokens=100, thoughts_tokens=7,
                   tool_use_prompt_tokens=9, cached_audio_tokens=100)),
    ],
)  # fmt: skip
def test_live_usage(md: dict[str, Any], expected: LiveUsage) -> None:
    assert live_usage(md) == expected


@pytest.mark.parametrize("md", [None, [], "usage", 3])
def test_live_usage_of_a_non_object(md: Any) -> None:
    assert live_usage(md) is None


def test_live_usage_modality_parts() -> None:
    u = EXPECTED
    assert (u.prompt_text_tokens, u.prompt_image_video_tokens) == (52, 100)
    assert u.response_text_tokens == 4
    doubled = u + u
    assert doubled.prompt_tokens == 904 and doubled.prompt_video_tokens == 80
    assert doubled.response_text_tokens == 8


def test_to_usage_reads_the_live_output_count() -> None:
    usage = EXPECTED.to_usage()
    assert usage == Usage(prompt_tokens=452, output_tokens=24, audio_prompt_tokens=300,
                          image_prompt_tokens=60, video_prompt_tokens=40,
                          output_audio_tokens=20)  # fmt: skip
    # Usage.from_metadata reads generateContent's candidatesTokenCount, which Live does not
    # send: read directly, a Live turn would bill no output at all.
    assert Usage.from_metadata(GEMINI_API).output_tokens == 0


# -- media, durations, close reasons -------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 31, 3200, 4097])
def test_b64_size_matches_decoding(size: int) -> None:
    raw = bytes(range(256)) * (size // 256 + 1)
    raw = raw[:size]
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        assert b64_size(encoded) == size
        assert b64_size(encoded.rstrip("=")) == size  # protobuf JSON may omit padding


@pytest.mark.parametrize("data", [None, 3, b"AAAA", {"data": "AAAA"}])
def test_b64_size_of_a_non_string(data: Any) -> None:
    assert b64_size(data) == 0


@pytest.mark.parametrize(
    ("mime", "size", "seconds"),
    [
        ("audio/pcm;rate=16000", 32000, 1.0),
        ("audio/pcm; rate=24000", 48000, 1.0),
        ("audio/pcm;rate=8000", 1600, 0.1),
        ("audio/pcm", 3200, 0.1),  # 16 kHz when the rate is not given
        ("AUDIO/PCM;RATE=16000", 16000, 0.5),
        ("audio/pcm;rate=0", 100, 0.0),
        ("audio/wav", 32000, 0.0),
        ("image/jpeg", 32000, 0.0),
        (None, 32000, 0.0),
    ],
)
def test_pcm_seconds(mime: Any, size: int, seconds: float) -> None:
    assert pcm_seconds(mime, size) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5s", 5.0),
        ("0.2s", 0.2),
        ("1.000000001s", 1.000000001),
        ("-1s", -1.0),
        (" 10s ", 10.0),
        ("5", None),
        ("5 s", None),
        ("s", None),
        ("PT5S", None),
        (5, None),
        (None, None),
    ],
)
def test_parse_duration(value: Any, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("over budget", "over budget"),
        ("x" * 123, "x" * 123),
        ("x" * 124, "x" * 120 + "..."),
        ("é" * 70, "é" * 60 + "..."),  # 2-byte characters: never cut one in half
    ],
)
def test_close_reason_fits_a_close_frame(text: str, expected: str) -> None:
    assert close_reason(text) == expected
    assert len(close_reason(text).encode()) <= MAX_CLOSE_REASON_BYTES


# -- client messages (as google-genai 3.6 writes them) -------------------------------------

AUDIO_100MS = base64.urlsafe_b64encode(b"\x01\x02" * 1600).decode()


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        ({"client_content": {"turns": [{"parts": [{"text": "hello"}], "role": "user"}],
                             "turnComplete": True}},
         ClientInput("client_content", turn_complete=True, text_chars=5)),
        ({"client_content": {"turnComplete": False}}, ClientInput("client_content")),
        ({"clientContent": {"turn_complete": True}},
         ClientInput("client_content", turn_complete=True)),
        ({"realtime_input": {"audio": {"data": AUDIO_100MS, "mime_type": "audio/pcm;rate=16000"}}},
         ClientInput("realtime_input", audio_bytes=3200, audio_seconds=0.1)),
        ({"realtimeInput": {"audio": {"data": AUDIO_100MS, "mimeType": "audio/pcm;rate=16000"}}},
         ClientInput("realtime_input", audio_bytes=3200, audio_seconds=0.1)),
        ({"realtime_input": {"activityStart": {}}},
         ClientInput("realtime_input", activity_start=True)),
        ({"realtime_input": {"activityEnd": {}}}, ClientInput("realtime_input", activity_end=True)),
        ({"realtime_input": {"audioStreamEnd": True}},
         ClientInput("realtime_input", audio_stream_end=True)),
        ({"realtime_input": {"text": "what now?"}}, ClientInput("realtime_input", text_chars=9)),
        ({"realtime_input": {"video": {"data": "AAAA", "mime_type": "image/jpeg"}}},
         ClientInput("realtime_input", video_bytes=3)),
        # AsyncSession.send() (deprecated) still writes media_chunks.
        ({"realtime_input": {"media_chunks": [
            {"data": AUDIO_100MS, "mime_type": "audio/pcm"},
            {"data": "AAAA", "mime_type": "image/jpeg"}]}},
         ClientInput("realtime_input", audio_bytes=3200, audio_seconds=0.1, video_bytes=3)),
        ({"tool_response": {"functionResponses": [{"id": "call-1", "name": "f",
                                                   "response": {}}, {"name": "no id"}]}},
         ClientInput("tool_response", function_response_ids=("call-1",))),
        ({"clientContent": {}, "junk": 1}, ClientInput("client_content")),
        ({"contextUpdate": {"systemInstruction": {"parts": [{"text": "x"}]}}},
         ClientInput("context_update")),
        ({"setup": {"model": "models/x"}}, ClientInput("setup")),
        ({}, ClientInput(None)),
        ({"somethingNew": {}}, ClientInput(None)),
    ],
)  # fmt: skip
def test_parse_client(msg: dict[str, Any], expected: ClientInput) -> None:
    assert parse_client(msg) == expected


def test_client_input_kinds_that_add_to_a_turn() -> None:
    assert [ClientInput(k).is_input for k in ("client_content", "realtime_input", "tool_response",
                                              "context_update", "setup", None)] == [
        True, True, True, False, False, False]  # fmt: skip


# -- server messages -----------------------------------------------------------------------

USAGE = {"promptTokenCount": 10, "responseTokenCount": 3, "totalTokenCount": 13}
AUDIO_OUT = base64.b64encode(b"\x00" * 4800).decode()


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        ({"setupComplete": {}}, ServerEvent(("setup_complete",))),
        ({"serverContent": {"modelTurn": {"parts": [{"text": "Hello"}, {"text": " you"}]}}},
         ServerEvent(("server_content",), text_chars=9)),
        ({"serverContent": {"modelTurn": {"parts": [{"inlineData": {
            "mimeType": "audio/pcm;rate=24000", "data": AUDIO_OUT}}]}}},
         ServerEvent(("server_content",), audio_bytes=4800)),
        ({"serverContent": {"outputTranscription": {"text": "Hi"}}},
         ServerEvent(("server_content",), text_chars=2)),
        ({"serverContent": {"inputTranscription": {"text": "ignored"}}},
         ServerEvent(("server_content",))),
        ({"serverContent": {"generationComplete": True}},
         ServerEvent(("server_content",), generation_complete=True)),
        ({"serverContent": {"turnComplete": True}, "usageMetadata": USAGE},
         ServerEvent(("server_content",), usage=LiveUsage(10, 0, 3, total_tokens=13),
                     turn_complete=True)),
        ({"server_content": {"interrupted": True, "waiting_for_input": True}},
         ServerEvent(("server_content",), interrupted=True, waiting_for_input=True)),
        ({"usageMetadata": USAGE}, ServerEvent((), usage=LiveUsage(10, 0, 3, total_tokens=13))),
        ({"serverContent": {"turnComplete": True, "interactionStatus": "in_progress"}},
         ServerEvent(("server_content",), turn_complete=True, interaction_status="IN_PROGRESS")),
        ({"toolCall": {"functionCalls": [{"id": "c1", "name": "f", "args": {}}, {"name": "g"}]}},
         ServerEvent(("tool_call",), tool_call_ids=("c1",))),
        ({"toolCallCancellation": {"ids": ["c1", 7]}},
         ServerEvent(("tool_call_cancellation",), cancelled_tool_call_ids=("c1",))),
        ({"goAway": {"timeLeft": "10s"}}, ServerEvent(("go_away",), go_away_seconds=10.0)),
        ({"go_away": {"time_left": "0.5s"}}, ServerEvent(("go_away",), go_away_seconds=0.5)),
        ({"goAway": {}}, ServerEvent(("go_away",), go_away_seconds=-1.0)),
        ({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}},
         ServerEvent(("session_resumption_update",), resumption_handle="h1")),
        ({"sessionResumptionUpdate": {"newHandle": "", "resumable": False}},
         ServerEvent(("session_resumption_update",))),
        ({}, ServerEvent(())),
    ],
)  # fmt: skip
def test_parse_server(msg: dict[str, Any], expected: ServerEvent) -> None:
    assert parse_server(msg) == expected


@pytest.mark.parametrize(
    ("content", "ends"),
    [
        ({"turnComplete": True}, True),
        ({"turnComplete": False}, False),
        ({}, False),
        ({"turnComplete": True, "interactionStatus": "INTERACTION_STATUS_UNSPECIFIED"}, True),
        ({"turnComplete": True, "interactionStatus": "IN_PROGRESS"}, False),
        ({"turnComplete": True, "interactionStatus": "IDLE"}, True),
        ({"interaction_status": "IDLE"}, True),
        ({"turnComplete": True, "interactionStatus": "REQUIRES_ACTION"}, False),
    ],
)
def test_ends_turn_as_the_sdk_decides(content: dict[str, Any], ends: bool) -> None:
    assert parse_server({"serverContent": content}).ends_turn is ends


# -- turns ---------------------------------------------------------------------------------


def usage(prompt: int, response: int) -> dict[str, Any]:
    return {"promptTokenCount": prompt, "responseTokenCount": response,
            "totalTokenCount": prompt + response}  # fmt: skip


def text(t: str) -> dict[str, Any]:
    return {"serverContent": {"modelTurn": {"parts": [{"text": t}]}}}


def done(md: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"serverContent": {"turnComplete": True}}
    return msg | {"usageMetadata": md} if md else msg


def ask(t: str = "hi") -> dict[str, Any]:
    return {"client_content": {"turns": [{"role": "user", "parts": [{"text": t}]}],
                               "turnComplete": True}}  # fmt: skip


@dataclass
class Run:
    meter: TurnMeter = field(default_factory=TurnMeter)
    records: list[TurnRecord] = field(default_factory=list)

    def feed(self, msg: dict[str, Any]) -> list[int]:
        """One message (a client's has a snake_case kind); the indexes of the turns it ended."""
        if parse_client(msg).kind is not None:
            self.meter.client(parse_client(msg))
            return []
        return self.keep(self.meter.server(parse_server(msg)))

    def keep(self, records: list[TurnRecord]) -> list[int]:
        self.records += records
        return [r.index for r in records]


def run(*messages: dict[str, Any], close: bool = False) -> tuple[Run, list[list[int]]]:
    """Feed a session to a meter; per message, the indexes of the turns it ended."""
    r = Run()
    ended = [r.feed(msg) for msg in messages]
    if close:
        ended.append(r.keep(r.meter.close()))
    return r, ended


def prompts(r: Run) -> list[tuple[int, int] | None]:
    return [(t.usage.prompt_tokens, t.usage.response_tokens) if t.usage else None
            for t in r.records]  # fmt: skip


def test_three_turns_one_record_each() -> None:
    meter, ended = run(
        {"setupComplete": {}},
        ask("one"), text("1"), done(usage(10, 2)),
        ask("two"), text("2"), done(usage(14, 3)),
        ask("three"), text("3"), done(usage(19, 4)),
        close=True,
    )  # fmt: skip
    assert ended == [[], [], [], [1], [], [], [2], [], [], [3], []]
    assert prompts(meter) == [(10, 2), (14, 3), (19, 4)]
    assert all(r.complete and r.generations == 1 for r in meter.records)
    assert [r.input_text_chars for r in meter.records] == [3, 3, 5]
    assert [r.output_text_chars for r in meter.records] == [1, 1, 1]


def test_a_tool_call_splits_a_turn_into_generations_that_add_up() -> None:
    call = {
        "toolCall": {"functionCalls": [{"id": "c1", "name": "f"}]},
        "usageMetadata": usage(20, 5),
    }
    reply = {"tool_response": {"functionResponses": [{"id": "c1", "name": "f", "response": {}}]}}
    meter, ended = run(ask(), call, reply, text("ok"), done(usage(40, 2)))
    assert ended == [[], [], [], [], [1]]
    record = meter.records[0]
    assert (record.generations, record.tool_calls) == (2, 1)
    assert record.usage == LiveUsage(prompt_tokens=60, response_tokens=7, total_tokens=67)


def test_a_tool_call_without_its_own_usage_leaves_one_generation() -> None:
    call = {"toolCall": {"functionCalls": [{"id": "c1", "name": "f"}]}}
    meter, _ = run(ask(), call, text("ok"), done(usage(40, 2)))
    assert meter.records[0].generations == 1 and prompts(meter) == [(40, 2)]


def test_a_later_report_in_a_generation_replaces_the_earlier() -> None:
    meter, _ = run(ask(), {**text("a"), "usageMetadata": usage(10, 1)}, text("b"),
                   done(usage(10, 2)))  # fmt: skip
    assert prompts(meter) == [(10, 2)]
    assert meter.records[0].superseded_reports == 1


def test_an_interrupted_turn_still_ends_at_turn_complete() -> None:
    meter, ended = run(
        ask(), text("Let me"), ask("stop"),
        {"serverContent": {"interrupted": True}}, done(usage(12, 2)),
        text("ok"), done(usage(16, 1)),
    )  # fmt: skip
    assert ended[4] == [1] and ended[6] == [2]
    assert [r.interrupted for r in meter.records] == [True, False]
    assert not meter.records[0].generation_complete


def test_background_reasoning_keeps_the_turn_open() -> None:
    more = {
        "serverContent": {"turnComplete": True, "interactionStatus": "IN_PROGRESS"},
        "usageMetadata": usage(10, 2),
    }
    idle = {"serverContent": {"turnComplete": True, "interactionStatus": "IDLE"},
            "usageMetadata": usage(15, 3)}  # fmt: skip
    meter, ended = run(ask(), text("thinking"), more, text("found it"), idle)
    assert ended == [[], [], [], [], [1]]
    assert meter.records[0].generations == 2 and prompts(meter) == [(25, 5)]


def test_usage_after_turn_complete_joins_its_turn() -> None:
    meter, ended = run(ask(), text("a"), done(), {"usageMetadata": usage(10, 1)},
                       ask(), text("b"), done(usage(12, 1)))  # fmt: skip
    assert ended == [[], [], [], [1], [], [], [2]]
    assert prompts(meter) == [(10, 1), (12, 1)]
    assert meter.records[0].generations == 1


def test_a_turn_that_never_got_usage_is_released_by_the_next_answer() -> None:
    meter, ended = run(ask(), text("a"), done(), ask(), text("b"), done(usage(12, 1)))
    assert ended == [[], [], [], [], [1], [2]]
    assert prompts(meter) == [None, (12, 1)]
    assert meter.records[0].complete


def test_a_held_turn_is_released_at_close() -> None:
    meter, ended = run(ask(), text("a"), done(), close=True)
    assert ended[-1] == [1] and prompts(meter) == [None]


def test_a_turn_cut_mid_way_keeps_what_it_reported() -> None:
    call = {
        "toolCall": {"functionCalls": [{"id": "c1", "name": "f"}]},
        "usageMetadata": usage(20, 5),
    }
    meter, ended = run(ask(), call, text("partial"), close=True)
    assert ended[-1] == [1]
    cut = meter.records[0]
    assert not cut.complete and prompts(meter) == [(20, 5)]
    assert cut.output_text_chars == len("partial")


def test_a_turn_cut_before_any_usage_is_recorded_for_an_estimate() -> None:
    audio = {"realtime_input": {"audio": {"data": AUDIO_100MS, "mime_type": "audio/pcm"}}}
    meter, ended = run(audio, audio, text("par"), close=True)
    cut = meter.records[0]
    assert ended[-1] == [1] and cut.usage is None and not cut.complete
    assert cut.input_audio_seconds == pytest.approx(0.2) and cut.output_text_chars == 3
    assert not cut.empty


def test_close_with_nothing_under_way_records_nothing() -> None:
    meter, ended = run({"setupComplete": {}}, ask(), text("a"), done(usage(5, 1)),
                       {"goAway": {"timeLeft": "5s"}}, close=True)  # fmt: skip
    assert ended[-1] == [] and len(meter.records) == 1
    # A turn opened by a bare activity signal, with nothing said or answered, is not a turn.
    start: dict[str, Any] = {"realtime_input": {"activityStart": {}}}
    meter, ended = run(ask(), text("a"), done(usage(5, 1)), start, close=True)
    assert ended[-1] == [] and [r.index for r in meter.records] == [1]
    meter.feed(ask())
    meter.feed(done(usage(7, 1)))
    assert [r.index for r in meter.records] == [1, 2]


def test_session_messages_outside_turns_do_not_open_one() -> None:
    meter, _ = run(
        {"setupComplete": {}}, {"sessionResumptionUpdate": {"newHandle": "h", "resumable": True}},
        {"goAway": {"timeLeft": "1s"}}, {"toolCallCancellation": {"ids": ["x"]}},
        {"contextUpdate": {"systemInstruction": {"parts": [{"text": "x"}]}}}, close=True,
    )  # fmt: skip
    assert meter.records == []
