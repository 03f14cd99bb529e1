"""The fake Live upstream speaks the Live API as the real google-genai SDK expects it.

Every test drives ``client.aio.live.connect`` against the fake over TLS, so what the SDK sends
(paths, headers, mixed-case JSON) and what it makes of the replies (close codes, usage) is
checked against the SDK itself, not against our reading of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from proxy.live.messages import TurnMeter, TurnRecord, live_usage, parse_client, parse_server
from tests.fakes.live import (
    AUTO,
    BAD_KEY,
    Close,
    FakeLive,
    Frame,
    GoAway,
    Hold,
    LiveSession,
    Pause,
    Turn,
    audio_turn,
    cut_turn,
    go_away,
    text_turn,
    tool_call_turn,
    usage_metadata,
)
from tests.fakes.tls import Tls, make_tls

KEY = "upstream-live-key"
MODEL = "gemini-live-2.5-flash-preview"
AUDIO_MODEL = "gemini-2.5-flash-native-audio-preview-09-2025"
TEXT_ONLY = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT])


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def served(tls: Tls) -> AsyncIterator[tuple[FakeLive, str]]:
    fake = FakeLive(api_key=KEY)
    async with fake.serve(tls) as url:
        yield fake, url


def client(url: str, tls: Tls, key: str = KEY, *, api_version: str | None = None) -> genai.Client:
    options = types.HttpOptions(
        base_url=url, api_version=api_version, async_client_args={"ssl": tls.client_context()}
    )
    return genai.Client(api_key=key, http_options=options)


async def turn_messages(session: Any) -> list[types.LiveServerMessage]:
    """One turn's messages, as an app reads them (receive() stops after turnComplete)."""
    return [msg async for msg in session.receive()]


def metered(rec: LiveSession) -> list[TurnRecord]:
    """The relay's view of a session the fake served: its wire messages through the meter."""
    meter, records = TurnMeter(), []
    for side, msg in rec.transcript:
        if side == "client":
            meter.client(parse_client(msg))
        else:
            records += meter.server(parse_server(msg))
    return records + meter.close()


def pcm(seconds: float, rate: int) -> bytes:
    """A 440 Hz tone, 16-bit little-endian mono: real PCM, not filler."""
    n = int(seconds * rate)
    samples = (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n))
    return b"".join(s.to_bytes(2, "little", signed=True) for s in samples)


# -- the handshake ---------------------------------------------------------------------------


async def test_sdk_handshake_path_headers_and_setup(served: tuple[FakeLive, str], tls: Tls) -> None:
    fake, url = served
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT],
        system_instruction="Answer in one word.",
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
        ),
    )
    async with client(url, tls).aio.live.connect(model=MODEL, config=config) as session:
        assert session.setup_complete is not None
    rec = fake.sessions[0]
    # google-genai 3.6 defaults to API version v1 for the Gemini API and sends the key as a
    # header, never in the query; the setup's model is always models/<id>.
    assert rec.path == "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"
    assert (rec.version, rec.method, rec.key_source) == ("v1", "BidiGenerateContent", "header")
    assert rec.query == {}
    assert rec.headers["x-goog-api-key"] == KEY
    assert rec.headers["user-agent"].startswith("google-genai-sdk/")
    assert "sec-websocket-protocol" not in rec.headers  # no subprotocol
    assert "permessage-deflate" in rec.headers["sec-websocket-extensions"]
    # The setup is a text frame of camelCase fields whose values the SDK did not convert.
    first = rec.received[0]
    assert not first.binary and first.kind == "setup"
    assert rec.setup is not None
    assert rec.setup["model"] == f"models/{MODEL}"
    assert rec.setup["generationConfig"] == {"responseModalities": ["TEXT"]}
    assert rec.setup["realtimeInputConfig"] == {"automatic_activity_detection": {"disabled": True}}
    assert rec.setup["systemInstruction"]["parts"] == [{"text": "Answer in one word."}]
    await fake.await_until(lambda: rec.ended)
    assert rec.close_code == 1000 and not rec.closed_by_server  # the app's `async with` ended


async def test_base_url_with_trailing_slash_dials_double_slash(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    async with client(url + "/", tls, api_version="v1alpha").aio.live.connect(model=MODEL):
        pass
    assert fake.sessions[0].path.startswith("//ws/google.ai.generativelanguage.v1alpha.")
    assert fake.sessions[0].version == "v1alpha"


async def test_an_http_base_url_still_dials_wss(served: tuple[FakeLive, str], tls: Tls) -> None:
    fake, url = served
    async with client(url.replace("https://", "http://"), tls).aio.live.connect(model=MODEL):
        pass
    assert len(fake.sessions) == 1  # the fake only speaks TLS: the SDK dialled wss://


async def test_key_in_query_as_raw_clients_send_it(served: tuple[FakeLive, str], tls: Tls) -> None:
    fake, url = served
    ws_url = url.replace("https://", "wss://")
    path = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    async with websockets.connect(f"{ws_url}{path}?key={KEY}", ssl=tls.client_context()) as ws:
        await ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        assert json.loads(await ws.recv()) == {"setupComplete": {}}
    assert fake.sessions[0].key_source == "query" and fake.sessions[0].authorized


async def test_wrong_key_closes_1008_after_setup(served: tuple[FakeLive, str], tls: Tls) -> None:
    fake, url = served
    with pytest.raises(genai_errors.APIError) as caught:
        async with client(url, tls, key="wrong-key").aio.live.connect(model=MODEL):
            pass
    assert (caught.value.code, caught.value.details) == (1008, BAD_KEY)
    assert fake.sessions[0].closed_by_server and not fake.sessions[0].authorized


async def test_unknown_model_closes_1008(served: tuple[FakeLive, str], tls: Tls) -> None:
    _, url = served
    with pytest.raises(genai_errors.APIError) as caught:
        async with client(url, tls).aio.live.connect(model="gemini-2.5-pro"):
            pass
    assert caught.value.code == 1008
    assert "models/gemini-2.5-pro is not found for API version v1" in caught.value.details


async def test_unknown_path_is_refused_at_the_handshake(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    ws_url = url.replace("https://", "wss://")
    with pytest.raises(websockets.InvalidStatus) as caught:
        async with websockets.connect(f"{ws_url}/ws/other?key={KEY}", ssl=tls.client_context()):
            pass
    assert caught.value.response.status_code == 404
    assert fake.rejected == [(f"/ws/other?key={KEY}", 404)]
    assert fake.sessions == []


async def test_a_first_message_that_is_not_a_setup_closes_1007(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    _, url = served
    ws_url = url.replace("https://", "wss://")
    path = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    async with websockets.connect(f"{ws_url}{path}?key={KEY}", ssl=tls.client_context()) as ws:
        await ws.send(json.dumps({"clientContent": {"turnComplete": True}}))
        with pytest.raises(websockets.ConnectionClosedError) as caught:
            await ws.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1007


# -- sessions --------------------------------------------------------------------------------


async def test_three_text_turns_report_usage_per_turn(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    scripted = usage_metadata(40, 9)
    fake.enqueue(text_turn("Paris", " is the capital."), text_turn("Yes.", usage=scripted))
    seen: list[types.UsageMetadata] = []
    texts: list[str] = []
    async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
        for question in ("Capital of France?", "Sure?", "Thanks!"):
            await session.send_client_content(
                turns=types.Content(role="user", parts=[types.Part(text=question)])
            )
            msgs = await turn_messages(session)
            assert msgs[-1].server_content and msgs[-1].server_content.turn_complete
            texts.append("".join(m.text or "" for m in msgs))
            seen += [m.usage_metadata for m in msgs if m.usage_metadata]
    assert texts == ["Paris is the capital.", "Yes.", "OK."]  # the third is the default answer
    rec = fake.sessions[0]
    assert rec.turns_played == 3 and len(rec.usage_sent) == 3
    # The SDK reads the Gemini API's spelling: responseTokenCount, not candidatesTokenCount.
    assert [(u.prompt_token_count, u.response_token_count) for u in seen] == [
        (u["promptTokenCount"], u["responseTokenCount"]) for u in rec.usage_sent
    ]
    assert rec.usage_sent[1] == scripted
    first, third = rec.usage_sent[0], rec.usage_sent[2]
    # Per turn, not cumulative: the response counts only its own answer, while the prompt is
    # the whole context window (every earlier input and output is read again).
    assert first["responseTokenCount"] == math.ceil(len("Paris") / 4) + math.ceil(16 / 4)
    assert third["responseTokenCount"] == 1  # "OK."
    assert third["promptTokenCount"] > first["promptTokenCount"] + first["responseTokenCount"]
    # The relay's meter reads the same turns, one record each, usage as sent.
    records = metered(rec)
    assert [r.usage for r in records] == [live_usage(u) for u in rec.usage_sent]
    assert [r.complete for r in records] == [True, True, True]
    # The SDK's client content: a snake_case kind around camelCase fields.
    sent = [json.loads(r.data) for r in rec.received[1:]]
    assert sent[0] == {
        "client_content": {
            "turns": [{"parts": [{"text": "Capital of France?"}], "role": "user"}],
            "turnComplete": True,
        }
    }


async def test_server_frames_text_or_binary_read_alike(tls: Tls) -> None:
    fake = FakeLive(api_key=KEY, binary=False)
    chunk = Frame({"serverContent": {"modelTurn": {"parts": [{"text": "a"}]}}}, binary=True)
    fake.enqueue(Turn([chunk, {"serverContent": {"turnComplete": True}, "usageMetadata": AUTO}]))
    async with (
        fake.serve(tls) as url,
        client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session,
    ):
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "hi"}]})
        msgs = await turn_messages(session)
    assert [m.text for m in msgs] == ["a", None]
    assert msgs[1].usage_metadata is not None


async def test_audio_session_realtime_chunks_in_audio_out(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    answer = pcm(0.5, 24000)
    fake.enqueue(audio_turn(answer, chunks=4, transcript="A tone.", heard="Beep."))
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        output_audio_transcription=types.AudioTranscriptionConfig(),
    )
    spoken = pcm(1.0, 16000)
    async with client(url, tls).aio.live.connect(model=AUDIO_MODEL, config=config) as session:
        for i in range(0, len(spoken), 3200):  # 100 ms chunks, as a microphone sends them
            blob = types.Blob(data=spoken[i : i + 3200], mime_type="audio/pcm;rate=16000")
            await session.send_realtime_input(audio=blob)
        await session.send_realtime_input(audio_stream_end=True)
        msgs = await turn_messages(session)
    heard = b"".join(m.data or b"" for m in msgs)
    assert heard == answer
    contents = [m.server_content for m in msgs if m.server_content]
    assert [c.input_transcription.text for c in contents if c.input_transcription] == ["Beep."]
    assert [c.output_transcription.text for c in contents if c.output_transcription] == ["A tone."]
    rec = fake.sessions[0]
    chunks = rec.messages("realtime_input")
    assert len(chunks) == 11
    # Audio goes out as realtime_input.audio with a snake_case mime_type and URL-safe base64.
    assert chunks[0]["audio"]["mime_type"] == "audio/pcm;rate=16000"
    got = b"".join(base64.urlsafe_b64decode(c["audio"]["data"]) for c in chunks[:10])
    assert got == spoken
    assert chunks[10] == {"audioStreamEnd": True}
    usage = msgs[-1].usage_metadata
    assert usage is not None and usage.prompt_tokens_details and usage.response_tokens_details
    prompt = {d.modality: d.token_count for d in usage.prompt_tokens_details}
    response = {d.modality: d.token_count for d in usage.response_tokens_details}
    # 25 tokens a second: 1 s spoken in, 0.5 s spoken out, the transcript billed as text.
    assert prompt[types.MediaModality.AUDIO] == 25
    assert response == {types.MediaModality.AUDIO: 12, types.MediaModality.TEXT: 2}
    (record,) = metered(rec)
    assert record.input_audio_seconds == pytest.approx(1.0)
    assert record.output_audio_bytes == len(answer)
    assert record.usage is not None and record.usage.audio_prompt_tokens == 25
    assert (record.usage.response_audio_tokens, record.usage.response_text_tokens) == (12, 2)


async def test_activity_end_ends_a_turn_with_manual_activity_detection(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
        await session.send_realtime_input(activity_start=types.ActivityStart())
        await session.send_realtime_input(audio={"data": pcm(0.2, 16000), "mime_type": "audio/pcm"})
        await session.send_realtime_input(activity_end=types.ActivityEnd())
        msgs = await turn_messages(session)
    assert msgs[-1].server_content and msgs[-1].server_content.turn_complete
    assert fake.sessions[0].messages("realtime_input")[-1] == {"activityEnd": {}}


async def test_tool_call_round_trip(served: tuple[FakeLive, str], tls: Tls) -> None:
    fake, url = served
    fake.enqueue(
        tool_call_turn(
            {"name": "get_weather", "args": {"city": "Paris"}}, then=text_turn("It is sunny.")
        )
    )
    tool = types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="get_weather",
                parameters=types.Schema(type="OBJECT", properties={"city": {"type": "STRING"}}),
            )
        ]
    )
    config = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT], tools=[tool])
    async with client(url, tls).aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Weather?"}]})
        first = await anext(aiter(session.receive()))
        assert first.tool_call and first.tool_call.function_calls
        call = first.tool_call.function_calls[0]
        assert (call.id, call.name, call.args) == ("call-1", "get_weather", {"city": "Paris"})
        await session.send_tool_response(
            function_responses=[
                types.FunctionResponse(id=call.id, name=call.name, response={"sky": "clear"})
            ]
        )
        rest = await turn_messages(session)
    assert "".join(m.text or "" for m in rest) == "It is sunny."
    rec = fake.sessions[0]
    assert rec.messages("tool_response") == [
        {
            "functionResponses": [
                {"id": "call-1", "name": "get_weather", "response": {"sky": "clear"}}
            ]
        }
    ]
    # Two generations in one turn, each with its own usage: the tool call's, then the answer's,
    # whose prompt holds the call and the tool response as well.
    assert len(rec.usage_sent) == 2
    assert first.usage_metadata is not None
    call_usage, answer_usage = rec.usage_sent
    assert answer_usage["promptTokenCount"] > (
        call_usage["promptTokenCount"] + call_usage["responseTokenCount"]
    )
    # One turn for the meter, billed for both generations.
    (record,) = metered(rec)
    assert (record.generations, record.tool_calls) == (2, 1)
    called, answered = live_usage(call_usage), live_usage(answer_usage)
    assert called is not None and answered is not None and record.usage == called + answered


async def test_upstream_closing_mid_turn_surfaces_code_and_reason(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    fake.enqueue(cut_turn("Once upon", code=1011, reason="Internal error encountered."))
    got: list[str | None] = []
    with pytest.raises(genai_errors.APIError) as caught:
        async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
            await session.send_client_content(turns={"role": "user", "parts": [{"text": "Story"}]})
            async for msg in session.receive():
                got.append(msg.text)
    # Not a ServerError: the SDK raises a bare APIError whose code is the close code.
    assert type(caught.value) is genai_errors.APIError
    assert caught.value.code == 1011 and caught.value.details == "Internal error encountered."
    assert str(caught.value) == "1011 None. Internal error encountered."
    assert got == ["Once upon"]
    rec = fake.sessions[0]
    await fake.await_until(lambda: rec.ended)
    assert rec.usage_sent == [] and rec.close_code == 1011
    # The meter keeps the cut turn, without usage, with what it saw for an estimate.
    (cut,) = metered(rec)
    assert (cut.complete, cut.usage, cut.output_text_chars) == (False, None, len("Once upon"))


async def test_dropped_connection_is_1006(served: tuple[FakeLive, str], tls: Tls) -> None:
    fake, url = served
    fake.enqueue(cut_turn("Once", code=None))
    with pytest.raises(genai_errors.APIError) as caught:
        async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
            await session.send_client_content(turns={"role": "user", "parts": [{"text": "Go"}]})
            await turn_messages(session)
    assert caught.value.code == 1006


async def test_go_away_then_the_session_is_ended(served: tuple[FakeLive, str], tls: Tls) -> None:
    fake, url = served
    fake.enqueue(Turn([*text_turn("Hi.").steps, GoAway(time_left=0.2)]))
    async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Hello"}]})
        await turn_messages(session)
        with pytest.raises(genai_errors.APIError) as caught:
            async for msg in session.receive():
                assert msg.go_away is not None and msg.go_away.time_left == "0.2s"
    assert (caught.value.code, caught.value.details) == (1011, "The operation was aborted.")
    assert fake.sessions[0].sent[-1] == go_away("0.2s")


async def test_go_away_right_after_setup(served: tuple[FakeLive, str], tls: Tls) -> None:
    fake, url = served
    fake.on_setup({"setupComplete": {}}, go_away("10s"))
    async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
        msg = await anext(aiter(session.receive()))
    assert msg.go_away is not None and msg.go_away.time_left == "10s"


async def test_close_during_setup_surfaces_in_connect(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    fake.on_setup(Close(1008, "over budget"))
    with pytest.raises(genai_errors.APIError) as caught:
        async with client(url, tls).aio.live.connect(model=MODEL):
            pass
    assert (caught.value.code, caught.value.details) == (1008, "over budget")


async def test_normal_close_while_receiving_is_an_error_too(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    fake.enqueue(Turn([Close(1000, "session ended")]))
    with pytest.raises(genai_errors.APIError) as caught:
        async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
            await session.send_client_content(turns={"role": "user", "parts": [{"text": "Hi"}]})
            await turn_messages(session)
    assert (caught.value.code, caught.value.details) == (1000, "session ended")


async def test_client_barge_in_interrupts_a_paused_turn(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    fake.enqueue(Turn([{"serverContent": {"modelTurn": {"parts": [{"text": "Let me"}]}}}, Hold(),
                       *text_turn("never sent").steps]))  # fmt: skip
    async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Talk"}]})
        first = await anext(aiter(session.receive()))
        assert first.text == "Let me"
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Stop"}]})
        rest = await turn_messages(session)
        assert [bool(m.server_content and m.server_content.interrupted) for m in rest] == [
            True,
            False,
        ]
        assert rest[-1].usage_metadata is not None
        # The interrupting input is a turn of its own.
        after = await turn_messages(session)
    assert "".join(m.text or "" for m in after) == "OK."
    assert fake.sessions[0].interrupted_turns == 1


async def test_session_resumption_hands_out_handles_and_resumes_context(
    served: tuple[FakeLive, str], tls: Tls
) -> None:
    fake, url = served
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT],
        session_resumption=types.SessionResumptionConfig(),
    )
    sdk = client(url, tls)
    async with sdk.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Remember 7"}]})
        await turn_messages(session)
        update = await anext(aiter(session.receive()))
    assert update.session_resumption_update is not None
    handle = update.session_resumption_update.new_handle
    assert handle and update.session_resumption_update.resumable
    before = fake.sessions[0].usage_sent[-1]
    config.session_resumption = types.SessionResumptionConfig(handle=handle)
    async with sdk.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Which?"}]})
        await turn_messages(session)
    after = fake.sessions[1].usage_sent[0]
    assert fake.sessions[1].handle == handle
    assert after["promptTokenCount"] == before["totalTokenCount"] + 2  # "Which?" is 2 tokens
    config.session_resumption = types.SessionResumptionConfig(handle="no-such-handle")
    with pytest.raises(genai_errors.APIError) as caught:
        async with sdk.aio.live.connect(model=MODEL, config=config):
            pass
    assert (caught.value.code, caught.value.details) == (
        1008,
        "BidiGenerateContent session not found",
    )


async def test_pause_delays_a_turn(served: tuple[FakeLive, str], tls: Tls) -> None:
    fake, url = served
    fake.enqueue(Turn([Pause(0.1), *text_turn("Late.").steps]))
    loop = asyncio.get_running_loop()
    async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
        started = loop.time()
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Hi"}]})
        msgs = await turn_messages(session)
        assert loop.time() - started >= 0.1
    assert msgs[0].text == "Late."


def test_serve_thread_for_a_blocking_caller(tls: Tls) -> None:
    fake = FakeLive(api_key=KEY)

    async def talk(url: str) -> list[types.LiveServerMessage]:
        async with client(url, tls).aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
            await session.send_client_content(turns={"role": "user", "parts": [{"text": "Hi"}]})
            return await turn_messages(session)

    with fake.serve_thread(tls) as url:
        msgs = asyncio.run(talk(url))
        fake.wait_until(lambda: bool(fake.sessions) and fake.sessions[0].ended)
    assert msgs[-1].usage_metadata is not None


@pytest.fixture
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_usage_metadata_is_self_consistent(no_warnings: None) -> None:
    md = usage_metadata(100, 30, prompt_audio=60, prompt_image=10, response_audio=25, thoughts=4)
    assert md["totalTokenCount"] == 134
    assert md["promptTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": 30},
        {"modality": "AUDIO", "tokenCount": 60},
        {"modality": "IMAGE", "tokenCount": 10},
    ]
    assert md["responseTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": 5},
        {"modality": "AUDIO", "tokenCount": 25},
    ]
    parsed = types.UsageMetadata.model_validate(md)  # the SDK's own type reads every field
    assert parsed.response_token_count == 30 and parsed.thoughts_token_count == 4


def test_tls_files_exist(tls: Tls, tmp_path: Path) -> None:
    assert tls.cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" in tls.key_path.read_bytes()


async def test_ephemeral_token_dials_the_constrained_method_on_v1alpha(tls: Tls) -> None:
    fake = FakeLive(api_key=KEY, tokens={"auth_tokens/abc"})
    async with fake.serve(tls) as url:
        sdk = client(url, tls, key="auth_tokens/abc", api_version="v1alpha")
        with pytest.warns(genai_errors.ExperimentalWarning):
            async with sdk.aio.live.connect(model=MODEL, config=TEXT_ONLY):
                pass
    rec = fake.sessions[0]
    assert (rec.version, rec.method, rec.key_source) == (
        "v1alpha",
        "BidiGenerateContentConstrained",
        "token",
    )
    assert rec.headers["authorization"] == "Token auth_tokens/abc" and rec.authorized
    # The SDK still sends the token as x-goog-api-key too: a relay must not forward it upstream.
    assert rec.headers["x-goog-api-key"] == "auth_tokens/abc"
