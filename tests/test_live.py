"""The Live API through the proxy: the real google-genai SDK's ``client.aio.live.connect`` over
TLS (the proxy served with a throw-away certificate), relayed to the fake Live upstream (TLS
too, trusted through ``upstream_ca_file``), every turn a ledger row priced from the catalog."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from prometheus_client import REGISTRY
from redis import Redis

from proxy.app import create_app
from proxy.live.messages import live_usage
from proxy.pricing.catalog import Catalog
from proxy.pricing.cost import price_call
from tests.conftest import (
    UPSTREAM_KEY,
    fetch_rows,
    make_tenant_key,
    proxy_settings,
    run_sync,
)
from tests.fakes.gemini import FakeGemini, text_reply
from tests.fakes.gemini import usage_metadata as gemini_usage
from tests.fakes.live import (
    BAD_KEY,
    FakeLive,
    GoAway,
    Hold,
    Turn,
    audio_turn,
    cut_turn,
    text_turn,
    tool_call_turn,
    usage_metadata,
)
from tests.fakes.server import serve
from tests.fakes.tls import Tls, make_tls
from tests.test_cli import free_port
from tests.test_quota_fixtures import REDIS_URL, add_policy

MODEL = "gemini-live-2.5-flash-preview"  # priced on vertex-ai (gemini-2.5-flash-live)
PRICED_MODEL = "gemini-2.0-flash-live-001"  # priced on gemini-api (gemini-2.0-flash-live)
TEXT_ONLY = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT])
WS_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def live_upstream(tls: Tls) -> Iterator[tuple[FakeLive, str]]:
    fake = FakeLive(api_key=UPSTREAM_KEY)
    with fake.serve_thread(tls) as url:
        yield fake, url


@dataclass
class LiveProxy:
    url: str
    key: str
    fake: FakeLive
    tls: Tls
    database_url: str

    def client(self, key: str | None = None) -> genai.Client:
        options = types.HttpOptions(
            base_url=self.url, async_client_args={"ssl": self.tls.client_context()}
        )
        return genai.Client(api_key=key or self.key, http_options=options)

    def rows(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The ledger's Live rows, once at least ``count`` are written (turn order)."""
        end = time.monotonic() + timeout
        while True:
            rows = [r for r in run_sync(lambda: fetch_rows(self.database_url))
                    if r["route"] == "live"]  # fmt: skip
            if len(rows) >= count or time.monotonic() > end:
                return sorted(rows, key=lambda r: (r["session_id"] or "", r["turn"] or 0))
            time.sleep(0.02)


@pytest.fixture
def live_proxy(
    live_upstream: tuple[FakeLive, str], tls: Tls, sqlite_url: str
) -> Iterator[Callable[..., LiveProxy]]:
    fake, upstream_url = live_upstream
    fake.reset()
    stack: list[Any] = []

    def start(database_url: str = sqlite_url, **overrides: Any) -> LiveProxy:
        settings = proxy_settings(
            database_url, upstream_url, upstream_ca_file=tls.cert_path, **overrides
        )
        key = run_sync(lambda: make_tenant_key(database_url, "team-live"))
        cm = serve(
            create_app(settings),
            ws="websockets-sansio",
            ssl_certfile=str(tls.cert_path),
            ssl_keyfile=str(tls.key_path),
        )
        url = cm.__enter__().replace("http://", "https://")
        stack.append(cm)
        return LiveProxy(url, key, fake, tls, database_url)

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


async def turn_messages(session: Any) -> list[types.LiveServerMessage]:
    return [msg async for msg in session.receive()]


def cost_of(model: str, md: dict[str, Any]) -> Decimal | None:
    usage = live_usage(md)
    assert usage is not None
    return price_call(CATALOG, model, usage.to_usage(), status=200, at=None).cost


CATALOG = Catalog.load("gemini-api", None, "vertex-ai")


# -- the relay and one row per turn ------------------------------------------------------------


async def test_three_text_turns_one_row_each_matching_the_upstream_usage(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    proxy.fake.enqueue(text_turn("Paris", " is the capital."), text_turn("Yes."), text_turn("Bye."))
    texts = []
    async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
        for question in ("Capital of France?", "Sure?", "Thanks!"):
            await session.send_client_content(
                turns=types.Content(role="user", parts=[types.Part(text=question)])
            )
            msgs = await turn_messages(session)
            texts.append("".join(m.text or "" for m in msgs))
    assert texts == ["Paris is the capital.", "Yes.", "Bye."]
    rec = proxy.fake.sessions[0]
    # The proxy's key went upstream, in the header; the tenant's never did.
    assert rec.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert proxy.key not in json.dumps(rec.headers) + json.dumps(rec.query)
    assert rec.setup is not None and rec.setup["model"] == f"models/{MODEL}"
    rows = proxy.rows(3)
    assert len(rows) == 3 and len(rec.usage_sent) == 3
    assert len({r["session_id"] for r in rows}) == 1 and rows[0]["session_id"]
    for turn, (row, sent) in enumerate(zip(rows, rec.usage_sent, strict=True), 1):
        assert (row["turn"], row["status"], row["operation"]) == (turn, 200, "bidiGenerateContent")
        assert row["prompt_tokens"] == sent["promptTokenCount"]
        assert row["output_tokens"] == sent["responseTokenCount"]
        assert row["priced"] and row["cost_usd"] == cost_of(MODEL, sent)
        assert not row["estimated"] and row["error_class"] is None
    # Each turn is billed for the whole context window: the prompt grows turn by turn.
    prompts = [r["prompt_tokens"] for r in rows]
    assert prompts == sorted(prompts) and prompts[2] > prompts[0] + rows[0]["output_tokens"]


async def test_raw_client_with_key_in_query_text_and_binary_frames(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    proxy.fake.enqueue(text_turn("Hi."))
    url = proxy.url.replace("https://", "wss://") + WS_PATH + f"?key={proxy.key}"
    async with websockets.connect(url, ssl=proxy.tls.client_context()) as ws:
        await ws.send(json.dumps({"setup": {"model": f"models/{PRICED_MODEL}"}}).encode())
        first = await ws.recv()
        assert isinstance(first, bytes)  # the fake answers in binary frames: relayed as such
        assert json.loads(first) == {"setupComplete": {}}
        await ws.send(json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [
            {"text": "Hello"}]}], "turnComplete": True}}))  # fmt: skip
        got = []
        while True:
            msg = json.loads(await ws.recv())
            got.append(msg)
            if msg.get("serverContent", {}).get("turnComplete"):
                break
    rec = proxy.fake.sessions[0]
    assert rec.query == {}  # the tenant key is not passed on
    assert [r.binary for r in rec.received] == [True, False]
    assert [json.loads(first), *got] == rec.sent  # every message, in order
    (row,) = proxy.rows(1)
    assert row["model"] == PRICED_MODEL and row["cost_usd"] == cost_of(
        PRICED_MODEL, rec.usage_sent[0]
    )


async def test_wrong_tenant_key_closes_1008_and_nothing_goes_upstream(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client(key="gm-not-a-key").aio.live.connect(model=MODEL):
            pass
    assert caught.value.code == 1008
    assert "gm-not-a-key" not in str(caught.value) and BAD_KEY not in str(caught.value)
    assert proxy.fake.sessions == []


@pytest.mark.parametrize(
    "model", ["publishers/google/models/gemini-live-2.5-flash", "gemini-x?key=1", "evil.com/x"]
)
async def test_a_setup_model_that_is_not_a_plain_id_closes_1007(
    live_proxy: Callable[..., LiveProxy], model: str
) -> None:
    proxy = live_proxy()
    url = proxy.url.replace("https://", "wss://") + WS_PATH
    headers = {"x-goog-api-key": proxy.key}
    async with websockets.connect(
        url, ssl=proxy.tls.client_context(), additional_headers=headers
    ) as ws:
        await ws.send(json.dumps({"setup": {"model": f"models/{model}"}}))
        with pytest.raises(websockets.ConnectionClosedError) as caught:
            await ws.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1007
    assert proxy.fake.sessions == []


async def test_audio_session_billed_by_modality(live_proxy: Callable[..., LiveProxy]) -> None:
    proxy = live_proxy()
    answer = bytes(24000)  # half a second of 24 kHz 16-bit silence
    proxy.fake.enqueue(audio_turn(answer, chunks=4, transcript="Quiet."))
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        output_audio_transcription=types.AudioTranscriptionConfig(),
    )
    spoken = bytes(32000)  # one second at 16 kHz
    async with proxy.client().aio.live.connect(model=PRICED_MODEL, config=config) as session:
        for i in range(0, len(spoken), 3200):
            blob = types.Blob(data=spoken[i : i + 3200], mime_type="audio/pcm;rate=16000")
            await session.send_realtime_input(audio=blob)
        await session.send_realtime_input(audio_stream_end=True)
        msgs = await turn_messages(session)
    assert b"".join(m.data or b"" for m in msgs) == answer
    (sent,) = proxy.fake.sessions[0].usage_sent
    (row,) = proxy.rows(1)
    assert row["audio_prompt_tokens"] == 25  # 25 tokens a second (seed 004)
    assert row["output_audio_tokens"] == 12
    assert row["cost_usd"] == cost_of(PRICED_MODEL, sent)
    # Audio in at 2.1, audio out at 8.5, the transcript at 1.5 $/1M (gemini-api, 000:63).
    text_in = row["prompt_tokens"] - 25
    expected = (text_in * Decimal("0.35") + 25 * Decimal("2.1") + 12 * Decimal("8.5")
                + (row["output_tokens"] - 12) * Decimal("1.5")) / 1_000_000  # fmt: skip
    assert row["cost_usd"] == expected.quantize(Decimal("1e-10"))


async def test_tool_call_round_trip_is_one_turn_billed_for_both_generations(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    proxy.fake.enqueue(
        tool_call_turn({"name": "get_weather", "args": {"city": "Paris"}}, then=text_turn("Sun."))
    )
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather")])
    config = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT], tools=[tool])
    async with proxy.client().aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Weather?"}]})
        first = await anext(aiter(session.receive()))
        assert first.tool_call and first.tool_call.function_calls
        call = first.tool_call.function_calls[0]
        await session.send_tool_response(
            function_responses=[
                types.FunctionResponse(id=call.id, name=call.name, response={"sky": "clear"})
            ]
        )
        rest = await turn_messages(session)
    assert "".join(m.text or "" for m in rest) == "Sun."
    rec = proxy.fake.sessions[0]
    assert rec.messages("tool_response")[0]["functionResponses"][0]["id"] == "call-1"
    (row,) = proxy.rows(1)
    a, b = rec.usage_sent
    assert row["prompt_tokens"] == a["promptTokenCount"] + b["promptTokenCount"]
    assert row["detail"]["tool_calls"] == 1 and row["detail"]["generations"] == 2


async def test_client_drop_mid_turn_bills_what_the_turn_used(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    proxy.fake.enqueue(text_turn("One."), Turn([{"serverContent": {"modelTurn": {"parts": [
        {"text": "Once upon a time"}]}}}, Hold()]))  # fmt: skip
    async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "First"}]})
        await turn_messages(session)
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Story!"}]})
        first = await anext(aiter(session.receive()))
        assert first.text == "Once upon a time"
    # The app left mid-turn (its `async with` ended): the cut turn is still a row.
    rows = proxy.rows(2)
    assert [(r["turn"], r["status"]) for r in rows] == [(1, 200), (2, 499)]
    cut = rows[1]
    assert cut["error_class"] == "live_client" and cut["estimated"]
    # No usage came for it: estimated from the context window, the input and the output.
    first_turn = rows[0]
    window = first_turn["prompt_tokens"] + first_turn["output_tokens"]
    assert cut["prompt_tokens"] == window + math.ceil(len("Story!") / 4)
    assert cut["output_tokens"] == math.ceil(len("Once upon a time") / 4)
    assert cut["priced"] and cut["cost_usd"] > 0
    proxy.fake.release()


async def test_upstream_close_is_forwarded_and_the_cut_turn_recorded(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    proxy.fake.enqueue(cut_turn("Once upon", code=1011, reason="Internal error encountered."))
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
            await session.send_client_content(turns={"role": "user", "parts": [{"text": "Story"}]})
            async for _ in session.receive():
                pass
    assert caught.value.code == 1011 and caught.value.details == "Internal error encountered."
    (row,) = proxy.rows(1)
    assert (row["status"], row["error_class"], row["turn"]) == (499, "live_upstream", 1)
    assert row["estimated"] and row["output_tokens"] == math.ceil(len("Once upon") / 4)


async def test_upstream_drop_without_close_frame_is_1011(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    proxy.fake.enqueue(cut_turn("Once", code=None))
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
            await session.send_client_content(turns={"role": "user", "parts": [{"text": "Go"}]})
            await turn_messages(session)
    assert caught.value.code == 1011
    (row,) = proxy.rows(1)
    assert row["status"] == 499 and row["error_class"] == "live_upstream"


async def test_a_session_without_turns_leaves_one_row(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY):
        pass
    (row,) = proxy.rows(1)
    assert (row["turn"], row["status"], row["prompt_tokens"], row["cost_usd"]) == (
        0, 200, 0, Decimal(0),
    )  # fmt: skip


# -- quotas ----------------------------------------------------------------------------------

ADMIN = {"authorization": "Bearer admin-token-for-tests"}


def quota_state(proxy: LiveProxy) -> dict[str, Any]:
    url = f"{proxy.url}/admin/tenants/team-live/quota"
    state: dict[str, Any] = httpx.get(url, headers=ADMIN, verify=proxy.tls.client_context()).json()
    return state


def set_policy(proxy: LiveProxy, **limits: Any) -> None:
    run_sync(lambda: add_policy(proxy.database_url, "team-live", **limits))
    quota_state(proxy)  # reading the tenant's quota state loads its policies at once


def ask(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


async def test_a_hard_budget_ends_the_session_on_its_third_turn(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    # gemini-2.0-flash-live (000:63): text in 0.35, text out 1.5, audio out 8.5 $/1M. Turn 1
    # costs $0.0005, turn 2 $0.00085. Each turn holds its worst case first: the context
    # window so far plus its input at 0.35, and 100 output tokens at the dearest rate (8.5):
    # turn 2 holds ~$0.00124 (with $0.0005 spent: fits $0.002), turn 3 ~$0.00159 (with
    # $0.00135 spent: does not).
    set_policy(proxy, budget_usd="0.002", period="day")
    proxy.fake.enqueue(text_turn("One.", usage=usage_metadata(1000, 100)),
                       text_turn("Two.", usage=usage_metadata(2000, 100)))  # fmt: skip
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], max_output_tokens=100
    )
    answers = []
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client().aio.live.connect(model=PRICED_MODEL, config=config) as session:
            for question in ("First?", "Second?", "Third?"):
                await session.send_client_content(turns=ask(question))
                msgs = await turn_messages(session)
                answers.append("".join(m.text or "" for m in msgs))
    assert answers == ["One.", "Two."]
    # The SDK surfaces the close: policy violation, with the quota's reason.
    assert caught.value.code == 1008 and "budget" in (caught.value.details or "")
    rec = proxy.fake.sessions[0]
    assert rec.turns_played == 2  # the third question never reached the model
    assert [m["turns"][0]["parts"][0]["text"] for m in rec.messages("client_content")] == [
        "First?", "Second?",
    ]  # fmt: skip
    rows = proxy.rows(2)
    assert [(r["turn"], r["status"]) for r in rows] == [(1, 200), (2, 200)]
    spent = sum((r["cost_usd"] for r in rows), Decimal(0))
    assert spent == Decimal("0.00135")
    [limit] = [lim for lim in quota_state(proxy)["limits"] if lim["limit"] == "budget_usd"]
    assert Decimal(limit["used"]) == spent and Decimal(limit["reserved"]) == 0


async def test_two_replicas_share_the_budget_of_live_turns(
    live_proxy: Callable[..., LiveProxy], pg_url: str
) -> None:
    prefix = f"gm-live:{uuid.uuid4().hex[:10]}:"
    shared = {"redis_url": REDIS_URL, "redis_prefix": prefix}
    one, two = live_proxy(pg_url, **shared), live_proxy(pg_url, **shared)
    set_policy(one, budget_usd="0.002", period="day")
    quota_state(two)
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], max_output_tokens=100
    )
    # Same figures as the single-replica test: $0.0005 on replica one, $0.00085 on replica two;
    # then replica one's next turn holds ~$0.00124: it fits what replica one spent alone
    # ($0.0005), not what both spent ($0.00135).
    one.fake.enqueue(text_turn("A1.", usage=usage_metadata(1000, 100)),
                     text_turn("B1.", usage=usage_metadata(2000, 100)))  # fmt: skip
    with pytest.raises(genai_errors.APIError) as caught:
        async with one.client().aio.live.connect(model=PRICED_MODEL, config=config) as a:
            await a.send_client_content(turns=ask("a1"))
            await turn_messages(a)
            async with two.client().aio.live.connect(model=PRICED_MODEL, config=config) as b:
                await b.send_client_content(turns=ask("b1"))
                await turn_messages(b)
            spent_everywhere(one, Decimal("0.00135"))
            await a.send_client_content(turns=ask("a2"))
            await turn_messages(a)
    assert caught.value.code == 1008 and "budget" in (caught.value.details or "")
    rows = one.rows(2)
    assert sorted(r["cost_usd"] for r in rows) == [Decimal("0.0005"), Decimal("0.00085")]
    keys = list(Redis.from_url(REDIS_URL).scan_iter(match=f"{prefix}*"))
    if keys:
        Redis.from_url(REDIS_URL).delete(*keys)


def spent_everywhere(proxy: LiveProxy, amount: Decimal) -> None:
    """Wait until the shared store has both replicas' settlements (synced in the background)."""
    deadline = time.monotonic() + 10
    while True:
        [limit] = [x for x in quota_state(proxy)["limits"] if x["limit"] == "budget_usd"]
        if Decimal(limit["used"]) >= amount or time.monotonic() > deadline:
            return
        time.sleep(0.05)


async def test_a_spent_budget_refuses_the_session_at_connect(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    set_policy(proxy, budget_usd="0.0000001", period="month")
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client().aio.live.connect(model=PRICED_MODEL, config=TEXT_ONLY):
            pass
    assert caught.value.code == 1008 and "budget" in (caught.value.details or "")
    assert proxy.fake.sessions == []  # refused before anything went upstream
    assert proxy.rows(0, timeout=0.2) == []


async def test_model_not_allowed_and_rpm_counts_sessions(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    set_policy(proxy, rpm=1, allowed_models=["gemini-2.0-flash-live-*"])
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY):
            pass
    assert caught.value.code == 1008 and "not allowed" in (caught.value.details or "")
    proxy.fake.enqueue(text_turn("A."), text_turn("B."))
    async with proxy.client().aio.live.connect(model=PRICED_MODEL, config=TEXT_ONLY) as s:
        # Turns within the session are not requests: two turns, one request.
        for q in ("a", "b"):
            await s.send_client_content(turns=ask(q))
            await turn_messages(s)
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client().aio.live.connect(model=PRICED_MODEL, config=TEXT_ONLY):
            pass
    assert caught.value.code == 1008 and "Rate limit" in (caught.value.details or "")
    assert len(proxy.fake.sessions) == 1


# -- operations ------------------------------------------------------------------------------


def ended(cause: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "gemini_meter_live_session_duration_seconds_count", {"reason": cause}
        )
        or 0.0
    )


async def test_an_idle_session_is_closed_and_counted(live_proxy: Callable[..., LiveProxy]) -> None:
    proxy = live_proxy(live_idle_timeout=0.5)
    before = ended("idle")
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
            async for _ in session.receive():
                pass
    assert caught.value.code == 1000 and "Idle timeout" in (caught.value.details or "")
    assert ended("idle") == before + 1
    assert REGISTRY.get_sample_value("gemini_meter_live_sessions_open") == 0
    (row,) = proxy.rows(1)  # the session reached the upstream: one row, no tokens
    assert (row["turn"], row["status"], row["error_class"]) == (0, 499, "live_idle")


async def test_a_message_over_the_size_limit_closes_1009_before_it_goes_upstream(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy(live_max_message_bytes=2000)
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
            await session.send_client_content(turns=ask("x" * 3000))
            await turn_messages(session)
    assert caught.value.code == 1009 and "2000 bytes" in (caught.value.details or "")
    assert proxy.fake.sessions[0].messages("client_content") == []


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "proxy", *args], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip()


def _start_serve(env: dict[str, str], tls: Tls, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port),
         "--ssl-certfile", str(tls.cert_path), "--ssl-keyfile", str(tls.key_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            url = f"https://127.0.0.1:{port}/healthz"
            if httpx.get(url, verify=tls.client_context()).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
        time.sleep(0.1)


async def test_sigterm_tells_open_sessions_to_go_away_then_closes_them(
    live_upstream: tuple[FakeLive, str], tls: Tls, tmp_path: Path
) -> None:
    fake, upstream_url = live_upstream
    fake.reset()
    db = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")} | {
        "GEMINI_API_KEY": UPSTREAM_KEY,
        "GEMINI_METER_UPSTREAM_URL": upstream_url,
        "GEMINI_METER_UPSTREAM_CA_FILE": str(tls.cert_path),
        "GEMINI_METER_DATABASE_URL": db,
        "GEMINI_METER_SPOOL_DIR": str(tmp_path / "spool"),
        "GEMINI_METER_SHUTDOWN_GRACE": "2",
    }
    _cli(env, "db", "upgrade")
    _cli(env, "tenants", "create", "team-live")
    key = _cli(env, "keys", "create", "--tenant", "team-live")
    port = free_port()
    proc = _start_serve(env, tls, port)
    fake.enqueue(text_turn("One."), Turn([{"serverContent": {"modelTurn": {"parts": [
        {"text": "Half"}]}}}, Hold()]))  # fmt: skip
    options = types.HttpOptions(
        base_url=f"https://127.0.0.1:{port}", async_client_args={"ssl": tls.client_context()}
    )
    seen: list[types.LiveServerMessage] = []
    try:
        with pytest.raises(genai_errors.APIError) as caught:
            client = genai.Client(api_key=key, http_options=options)
            async with client.aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
                await session.send_client_content(turns=ask("First"))
                await turn_messages(session)
                await session.send_client_content(turns=ask("Second"))
                async for msg in session.receive():
                    seen.append(msg)
                    if msg.text == "Half":
                        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        fake.release()
        if proc.poll() is None:
            proc.kill()
    assert [m.text for m in seen[:1]] == ["Half"]
    # The client heard it coming (goAway, with the grace period left), then the close.
    go_away = [m.go_away for m in seen if m.go_away]
    assert len(go_away) == 1 and go_away[0].time_left == "2s"
    assert caught.value.code == 1001 and "shutting down" in (caught.value.details or "")
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert key not in out and UPSTREAM_KEY not in out
    rows = sorted(run_sync(lambda: fetch_rows(db)), key=lambda r: r["turn"])
    assert [(r["turn"], r["status"], r["error_class"]) for r in rows] == [
        (1, 200, None), (2, 499, "live_shutdown"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ssl-certfile", "{tmp}/cert.pem"], "needs both a certificate"),
        (["--ssl-certfile", "{tmp}/cert.pem", "--ssl-keyfile", "{tmp}/no.pem"], "not a readable"),
    ],
)
def test_serve_refuses_half_a_tls_configuration(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    (tmp_path / "cert.pem").write_text("not used")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    env["GEMINI_METER_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    args = [f.format(tmp=tmp_path) for f in flags]
    done = subprocess.run([sys.executable, "-m", "proxy", "serve", *args], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr + done.stdout


async def test_the_upstreams_go_away_and_close_reach_the_client(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    proxy.fake.enqueue(Turn([*text_turn("Hi.").steps, GoAway(time_left=0.2)]))
    seen: list[types.LiveServerMessage] = []
    with pytest.raises(genai_errors.APIError) as caught:
        async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
            await session.send_client_content(turns=ask("Hello"))
            seen += await turn_messages(session)
            async for msg in session.receive():
                seen.append(msg)
    assert "".join(m.text or "" for m in seen) == "Hi."
    assert [m.go_away.time_left for m in seen if m.go_away] == ["0.2s"]
    assert (caught.value.code, caught.value.details) == (1011, "The operation was aborted.")
    (row,) = proxy.rows(1)  # the turn had ended: billed in full, nothing cut
    assert (row["turn"], row["status"], row["error_class"]) == (1, 200, None)


def test_upstream_ca_file_is_trusted_for_http_calls_too(tls: Tls, sqlite_url: str) -> None:
    fake = FakeGemini(api_key=UPSTREAM_KEY)
    fake.enqueue(text_reply("ok", gemini_usage(7, 2)), action="generateContent")
    with serve(fake, ssl_certfile=str(tls.cert_path), ssl_keyfile=str(tls.key_path)) as upstream:
        settings = proxy_settings(
            sqlite_url, upstream.replace("http://", "https://"), upstream_ca_file=tls.cert_path
        )
        key = run_sync(lambda: make_tenant_key(sqlite_url, "team-live"))
        with serve(create_app(settings)) as url:
            r = httpx.post(f"{url}/v1beta/models/gemini-2.5-flash:generateContent",
                           headers={"x-goog-api-key": key},
                           json={"contents": [{"parts": [{"text": "hi"}]}]})  # fmt: skip
    assert r.status_code == 200, r.text
    (row,) = run_sync(lambda: fetch_rows(sqlite_url))
    assert (row["prompt_tokens"], row["output_tokens"]) == (7, 2)


async def test_a_turn_cut_before_any_answer_is_recorded_but_not_billed(
    live_proxy: Callable[..., LiveProxy],
) -> None:
    proxy = live_proxy()
    proxy.fake.enqueue(Turn([Hold()]))
    async with proxy.client().aio.live.connect(model=MODEL, config=TEXT_ONLY) as session:
        await session.send_client_content(turns=ask("Hello there?"))
        await proxy.fake.await_until(lambda: proxy.fake.sessions[0].turns_played == 1)
    (row,) = proxy.rows(1)
    assert (row["turn"], row["status"], row["error_class"]) == (1, 499, "live_client")
    assert row["estimated"] and row["prompt_tokens"] == math.ceil(len("Hello there?") / 4)
    assert row["output_tokens"] == 0 and row["priced"] and row["cost_usd"] == 0
    proxy.fake.release()
