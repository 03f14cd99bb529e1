"""The fake Gemini speaks Google's wire format: the real SDK and raw HTTP agree with fixtures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.fakes.gemini import (
    DropConnection,
    ErrorReply,
    FakeGemini,
    Hang,
    JsonReply,
    Message,
    Receive,
    Send,
    StreamReply,
    fixture,
    fixture_bytes,
    parse_sse,
    stream_events,
    text_reply,
    usage_metadata,
)
from tests.fakes.server import serve, serve_async

KEY = "upstream-test-key"
GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
COUNT = "/v1beta/models/gemini-2.5-flash:countTokens"
BODY = {"contents": [{"role": "user", "parts": [{"text": "What is a proxy?"}]}]}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeGemini, str]]:
    # One server for the module keeps the suite fast; `fake` resets it for every test.
    fake = FakeGemini(api_key=KEY)
    with serve(fake) as url:
        yield fake, url


@pytest.fixture
def fake(served: tuple[FakeGemini, str]) -> FakeGemini:
    served[0].reset()
    return served[0]


@pytest.fixture
def url(served: tuple[FakeGemini, str]) -> str:
    return served[1]


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers={"x-goog-api-key": KEY}, timeout=5) as client:
        yield client


@pytest.fixture
def sdk(url: str) -> Iterator[genai.Client]:
    options = genai_types.HttpOptions(base_url=url)
    with genai.Client(api_key=KEY, http_options=options) as client:
        yield client


# --- the google-genai SDK pointed straight at the fake ---------------------------------------


def test_sdk_generate_content(fake: FakeGemini, sdk: genai.Client) -> None:
    reply = sdk.models.generate_content(model="gemini-2.5-flash", contents="What is a proxy?")
    expected = fixture("generate_text")
    assert reply.text == expected["candidates"][0]["content"]["parts"][0]["text"]
    assert reply.usage_metadata is not None
    assert reply.usage_metadata.thoughts_token_count == 423
    assert reply.usage_metadata.total_token_count == 452
    (req,) = fake.requests
    # This SDK builds {base_url}/{api_version}/models/{id}:method itself and sends the key as a
    # header; its default api_version is "v1" (older releases used "v1beta").
    assert req.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert req.headers["x-goog-api-key"] == KEY
    assert req.json()["contents"][0]["parts"][0]["text"] == "What is a proxy?"


def test_sdk_v1beta_and_scripted_usage(fake: FakeGemini, url: str) -> None:
    fake.enqueue(text_reply("Hi!", usage_metadata(7, 2, thoughts=5, cached=3)))
    options = genai_types.HttpOptions(base_url=url, api_version="v1beta")
    with genai.Client(api_key=KEY, http_options=options) as client:
        reply = client.models.generate_content(model="gemini-2.5-pro", contents="hello")
    assert reply.text == "Hi!"
    usage = reply.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (7, 2)
    assert (usage.thoughts_token_count, usage.cached_content_token_count) == (5, 3)
    assert usage.total_token_count == 14
    assert fake.requests[0].path == "/v1beta/models/gemini-2.5-pro:generateContent"


def test_sdk_stream(fake: FakeGemini, sdk: genai.Client) -> None:
    chunks = list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    assert "".join(c.text or "" for c in chunks) == (
        "Proxies forward requests from clients to servers and relay the replies back."
    )
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.total_token_count == 298
    assert fake.requests[0].query == {"alt": "sse"}
    assert fake.streams_finished == 1


async def test_sdk_async_client_streams(fake: FakeGemini, url: str) -> None:
    fake.enqueue(StreamReply(stream_events(["a", "b"], usage_metadata(4, 2)), delay=0.01))
    options = genai_types.HttpOptions(base_url=url)
    async with genai.Client(api_key=KEY, http_options=options).aio as client:
        stream = await client.models.generate_content_stream(model="gemini-2.5-flash", contents="x")
        chunks = [chunk async for chunk in stream]
    assert [c.text for c in chunks] == ["a", "b"]
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.total_token_count == 6


def test_sdk_count_tokens_and_embed(fake: FakeGemini, sdk: genai.Client) -> None:
    counted = sdk.models.count_tokens(model="gemini-2.5-flash", contents="hello there")
    assert counted.total_tokens == 31
    embedded = sdk.models.embed_content(model="gemini-embedding-001", contents=["a", "b", "c"])
    assert embedded.embeddings is not None
    assert len(embedded.embeddings) == 3
    assert embedded.embeddings[1].values == [-0.055, 0.066, -0.077, 0.088]
    # The SDK embeds through batchEmbedContents even for a single text.
    assert [r.action for r in fake.requests] == ["countTokens", "batchEmbedContents"]


def test_sdk_models_list_follows_pages_and_get(fake: FakeGemini, sdk: genai.Client) -> None:
    names = [m.name for m in sdk.models.list()]
    assert names[:4] == [m["name"] for m in fixture("models_list")["models"]]
    assert names[4:] == ["models/gemini-2.5-flash-lite", "models/gemini-3-pro-preview"]
    assert fake.requests[1].query["pageToken"] == fixture("models_list")["nextPageToken"]
    model = sdk.models.get(model="gemini-2.5-pro")
    assert model.display_name == "Gemini 2.5 Pro"
    with pytest.raises(genai_errors.ClientError) as caught:
        sdk.models.get(model="gemini-0-nope")
    assert caught.value.code == 404
    assert caught.value.status == "NOT_FOUND"


def test_sdk_wrong_key_gets_googles_400(url: str) -> None:
    options = genai_types.HttpOptions(base_url=url)
    client = genai.Client(api_key="wrong", http_options=options)
    with client, pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert caught.value.code == 400
    assert "API key not valid" in str(caught.value.message)


# --- raw HTTP: framing, auth, routes ----------------------------------------------------------


def test_sse_stream_is_byte_exact(http: httpx.Client) -> None:
    reply = http.post(STREAM, params={"alt": "sse"}, json=BODY)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.content == fixture_bytes("stream_text.sse")


def test_json_array_stream_is_byte_exact(http: httpx.Client) -> None:
    reply = http.post(STREAM, json=BODY)
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.content == fixture_bytes("stream_text.json_array")
    assert reply.json() == parse_sse(fixture_bytes("stream_text.sse"))


def test_default_replies(http: httpx.Client) -> None:
    generated = http.post("/v1/models/gemini-2.0-flash:generateContent", json=BODY).json()
    assert generated == fixture("generate_text") | {"modelVersion": "gemini-2.0-flash"}
    assert http.post(COUNT, json=BODY).json() == fixture("count_tokens")
    embed = http.post("/v1beta/models/gemini-embedding-001:embedContent", json={"content": {}})
    assert embed.json() == fixture("embed_content")
    batch = {"requests": [{"content": {"parts": [{"text": str(i)}]}} for i in range(5)]}
    reply = http.post("/v1beta/models/gemini-embedding-001:batchEmbedContents", json=batch)
    assert len(reply.json()["embeddings"]) == 5
    assert http.get("/v1beta/models").json() == fixture("models_list")
    assert http.get("/v1beta/models", params={"pageSize": 50}).json().keys() == {"models"}
    assert http.get("/v1beta/models/gemini-2.5-flash").json()["displayName"] == "Gemini 2.5 Flash"


def test_errors_use_googles_envelope(http: httpx.Client) -> None:
    missing = http.get("/v1beta/models/no-such-model")
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"
    bad_json = http.post(GEN, content=b"{not json")
    assert (bad_json.status_code, bad_json.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert http.get(GEN).status_code == 404  # wrong method
    assert http.post("/v1beta/models/x:noSuchMethod", json={}).status_code == 404


@pytest.mark.parametrize("headers", [{}, {"x-goog-api-key": "nope"}, {"authorization": KEY}])
def test_wrong_or_missing_key_is_400_and_consumes_nothing(
    fake: FakeGemini, url: str, headers: dict[str, str]
) -> None:
    fake.enqueue(ErrorReply(503))
    reply = httpx.post(url + GEN, json=BODY, headers=headers, params={"key": KEY})
    assert reply.status_code == 400
    assert reply.json() == fixture("error_bad_key")
    assert fake.pending == 1


def test_request_is_recorded_raw(fake: FakeGemini, http: httpx.Client) -> None:
    http.post(
        "/v1beta/models/gemini-2.5-flash%3AstreamGenerateContent?alt=sse&x=a%20b",
        content=orjson.dumps(BODY),
        headers={"X-Custom": "Yes"},
    )
    (req,) = fake.requests
    assert req.method == "POST"
    assert req.path == "/v1beta/models/gemini-2.5-flash%3AstreamGenerateContent"
    assert (req.query_string, req.query) == ("alt=sse&x=a%20b", {"alt": "sse", "x": "a b"})
    assert req.headers["x-custom"] == "Yes"
    assert (req.version, req.model) == ("v1beta", "gemini-2.5-flash")
    assert req.action == "streamGenerateContent"
    assert req.json() == BODY


# --- scripting ---------------------------------------------------------------------------------


def test_enqueue_is_fifo_and_matches_action(fake: FakeGemini, http: httpx.Client) -> None:
    fake.enqueue(ErrorReply(503), ErrorReply("error_429"), action="generateContent")
    fake.enqueue(text_reply("third", usage_metadata(3, 1)))
    # countTokens skips the generateContent-only entries and takes the catch-all one.
    assert http.post(COUNT, json=BODY).json()["usageMetadata"] == (usage_metadata(3, 1))
    first, second = (http.post(GEN, json=BODY) for _ in range(2))
    assert (first.status_code, first.json()) == (503, fixture("error_503"))
    assert (second.status_code, second.json()) == (429, fixture("error_429"))
    assert http.post(GEN, json=BODY).json() == fixture("generate_text")  # queue empty: default
    assert fake.pending == 0


def test_reply_kinds(fake: FakeGemini, http: httpx.Client) -> None:
    fake.enqueue(
        JsonReply(b'{"raw": true}', status=201, headers={"x-extra": "1"}),
        ErrorReply(504),
        ErrorReply({"error": {"code": 400, "message": "m", "status": "FAILED_PRECONDITION"}}),
    )
    raw = http.post(GEN, json=BODY)
    assert (raw.status_code, raw.content, raw.headers["x-extra"]) == (201, b'{"raw": true}', "1")
    assert http.post(GEN, json=BODY).json()["error"]["status"] == "DEADLINE_EXCEEDED"
    assert http.post(GEN, json=BODY).status_code == 400


def test_stream_helpers_carry_exact_usage(fake: FakeGemini, http: httpx.Client) -> None:
    usage = usage_metadata(20, 6, thoughts=4)
    fake.enqueue(StreamReply(stream_events(["a", "b", "c"], usage)))
    events = parse_sse(http.post(STREAM, params={"alt": "sse"}, json=BODY).content)
    assert [e["candidates"][0]["content"]["parts"][0]["text"] for e in events] == ["a", "b", "c"]
    assert events[0]["usageMetadata"]["totalTokenCount"] == 20  # prompt only, as Google does
    assert events[-1]["usageMetadata"] == usage
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert usage["totalTokenCount"] == 30


def test_raw_byte_events_are_sent_verbatim(fake: FakeGemini, http: httpx.Client) -> None:
    whole = fixture_bytes("stream_error_midway.sse")
    fake.enqueue(StreamReply([whole[:50], whole[50:]]))
    assert http.post(STREAM, params={"alt": "sse"}, json=BODY).content == whole


def test_first_event_arrives_before_upstream_finishes(fake: FakeGemini, http: httpx.Client) -> None:
    fake.enqueue(StreamReply(stream_events(["one", "two", "three"]), hold_after=1))
    with http.stream("POST", STREAM, params={"alt": "sse"}, json=BODY) as reply:
        lines = reply.iter_lines()
        assert next(lines).startswith('data: {"candidates"')
        assert not fake.stream_done.is_set()  # the fake is provably still holding the rest
        fake.release()
        rest = list(lines)
    assert sum(line.startswith("data: ") for line in rest) == 2
    assert fake.stream_done.is_set()
    assert fake.streams_finished == 1


def test_delay_spaces_events(fake: FakeGemini, http: httpx.Client) -> None:
    fake.enqueue(StreamReply(stream_events(["x", "y"]), delay=0.3))
    started = time.monotonic()
    with http.stream("POST", STREAM, json=BODY) as reply:
        chunks = reply.iter_bytes()
        assert next(chunks).startswith(b"[{")
        first_at = time.monotonic() - started
        assert not fake.stream_done.is_set()
        body = b"".join(chunks)
    assert body.endswith(b"}]")
    assert first_at < 0.25 <= time.monotonic() - started


def test_client_disconnect_mid_stream_is_counted(fake: FakeGemini, http: httpx.Client) -> None:
    fake.enqueue(StreamReply(stream_events(["a", "b", "c"]), delay=5))
    with http.stream("POST", STREAM, params={"alt": "sse"}, json=BODY) as reply:
        next(reply.iter_lines())
    # Leaving the block closes the pooled connection mid-body; the fake notices promptly.
    fake.wait_until(lambda: fake.cancelled == 1)
    fake.wait_until(lambda: fake.in_flight == 0)
    assert fake.streams_finished == 0


def test_close_early_breaks_the_body(fake: FakeGemini, http: httpx.Client) -> None:
    fake.enqueue(StreamReply(stream_events(["a", "b"]), close_early=True))
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(STREAM, params={"alt": "sse"}, json=BODY)
    assert http.post(GEN, json=BODY).status_code == 200  # the fake carries on


def test_drop_connection_sends_nothing(fake: FakeGemini, http: httpx.Client) -> None:
    fake.enqueue(DropConnection())
    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        http.post(GEN, json=BODY)
    assert http.post(GEN, json=BODY).status_code == 200
    assert len(fake.requests) == 2


def test_hang_times_out_the_client_then_answers_later_calls(
    fake: FakeGemini, http: httpx.Client
) -> None:
    fake.enqueue(Hang(30), Hang(0.05, then=ErrorReply(503)))
    with pytest.raises(httpx.ReadTimeout):
        http.post(GEN, json=BODY, timeout=0.2)
    fake.wait_until(lambda: fake.cancelled == 1)  # it stopped waiting when the client left
    assert http.post(GEN, json=BODY).status_code == 503
    assert http.post(GEN, json=BODY).status_code == 200


async def test_concurrency_is_tracked(fake: FakeGemini, url: str) -> None:
    fake.enqueue(*(Hang(0.3) for _ in range(3)))
    async with httpx.AsyncClient(base_url=url, headers={"x-goog-api-key": KEY}) as client:
        replies = [client.post(GEN, json=BODY) for _ in range(3)]
        done = await asyncio.gather(*replies)
    assert [r.status_code for r in done] == [200, 200, 200]
    assert fake.max_in_flight == 3
    await fake.await_until(lambda: fake.in_flight == 0)


# --- the server helpers -------------------------------------------------------------------------


class LifespanApp:
    """Records lifespan events; proves serve() runs startup and shutdown."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"  # only lifespan is exercised here
        while True:
            message = await receive()
            self.events.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return


def test_serve_runs_lifespan_and_several_servers_without_leaking_threads() -> None:
    before = threading.active_count()
    app, other = LifespanApp(), FakeGemini(api_key=None)
    with serve(app) as first, serve(other) as second:
        assert first != second
        assert app.events == ["lifespan.startup"]
        assert httpx.get(second + "/v1beta/models/gemini-2.5-flash").status_code == 200
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]
    assert threading.active_count() == before


def test_serve_reports_startup_failure() -> None:
    async def broken(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "boom"})

    with pytest.raises(RuntimeError, match="did not start"), serve(broken):
        pass


@pytest.fixture
async def async_served() -> AsyncIterator[tuple[FakeGemini, str]]:
    fake = FakeGemini(api_key=KEY)
    async with serve_async(fake) as url:
        yield fake, url


async def test_serve_async(async_served: tuple[FakeGemini, str]) -> None:
    fake, url = async_served
    async with httpx.AsyncClient(base_url=url, headers={"x-goog-api-key": KEY}) as client:
        reply = await client.post(STREAM, params={"alt": "sse"}, json=BODY)
    assert reply.content == fixture_bytes("stream_text.sse")
    assert fake.streams_finished == 1


async def test_asgi_transport_in_process() -> None:
    # No server at all: httpx drives the fake in process (bodies are buffered, no timing).
    transport = httpx.ASGITransport(app=FakeGemini(api_key=KEY))
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        reply = await client.post(GEN, json=BODY, headers={"x-goog-api-key": KEY})
    assert reply.json()["usageMetadata"]["totalTokenCount"] == 452
