"""Where clients point: Google's OpenAI-compatible base path (/v1beta/openai/), the unversioned
native paths litellm's gemini/ provider calls with the bare proxy URL, unknown OpenAI routes —
and the cost a streamed chat completion ends with."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest

from proxy.sse import SSEDecoder
from tests.conftest import RunningProxy
from tests.costs import row_cost, sse_objects, stream_cost, usage_cost
from tests.fakes.gemini import StreamReply, fixture, stream_events, usage_metadata

MODEL = "gemini-2.5-flash"


def test_openai_sdk_on_googles_base_path(proxy: RunningProxy) -> None:
    """An app written for Gemini's OpenAI endpoint swaps only the host."""
    with openai.OpenAI(
        base_url=f"{proxy.url}/v1beta/openai/", api_key=proxy.key, max_retries=0
    ) as client:
        chat = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert chat.choices[0].message.content
        assert "gemini-2.5-flash" in [m.id for m in client.models.list()]
        assert client.models.retrieve("gemini-2.5-pro").id == "gemini-2.5-pro"
        emb = client.embeddings.create(model="gemini-embedding-001", input="hello")
        assert len(emb.data[0].embedding) > 0
        assert client.responses.create(model=MODEL, input="hi").output_text
        assert client.completions.create(model=MODEL, prompt="hi").choices[0].text
    actions = [r.action for r in proxy.fake.requests]
    assert actions == [
        "generateContent", "listModels", "getModel", "batchEmbedContents", "generateContent",
        "generateContent",
    ]  # fmt: skip
    assert all(r.path.startswith("/v1beta/models") for r in proxy.fake.requests)
    rows = proxy.rows(6)
    assert {r["route"] for r in rows} == {"openai"}
    billed = [r for r in rows if r["operation"] in ("generateContent", "batchEmbedContents")]
    assert len(billed) == 4 and all(row_cost(r) > 0 for r in billed)


def test_googles_base_path_errors_are_openais(proxy: RunningProxy) -> None:
    r = httpx.post(
        f"{proxy.url}/v1beta/openai/chat/completions", json={"model": MODEL},
        headers={"authorization": f"Bearer {proxy.key}"},
    )  # fmt: skip
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"  # OpenAI's envelope, not Gemini's


# What litellm 1.110 (`completion(model="gemini/gemini-2.5-flash", api_base=<proxy root>)`,
# `embedding(model="gemini/gemini-embedding-001", ...)`) sends, recorded against this proxy.
# litellm is not installed here: it upgrades boto3 past the machine image's awscli pin.
LITELLM_CHAT = b'{"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}'
LITELLM_STREAM = b'{"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}'
LITELLM_EMBED = (
    b'{"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": '
    b'[{"text": "hello"}]}}]}'
)


def test_litellm_gemini_provider_with_the_bare_proxy_url(proxy: RunningProxy) -> None:
    headers = {"x-goog-api-key": proxy.key, "content-type": "application/json"}
    whole = httpx.post(
        f"{proxy.url}/models/{MODEL}:generateContent", content=LITELLM_CHAT, headers=headers
    )
    assert whole.status_code == 200
    assert whole.json()["candidates"] == fixture("generate_text")["candidates"]
    proxy.fake.enqueue(StreamReply(stream_events(["Hel", "lo"], usage_metadata(9, 2))))
    streamed = httpx.post(
        f"{proxy.url}/models/{MODEL}:streamGenerateContent?alt=sse", content=LITELLM_STREAM,
        headers=headers,
    )  # fmt: skip
    texts = [
        orjson.loads(d)["candidates"][0]["content"]["parts"][0]["text"]
        for d in SSEDecoder().feed(streamed.content)
    ]
    assert texts == ["Hel", "lo"]
    emb = httpx.post(
        f"{proxy.url}/models/gemini-embedding-001:batchEmbedContents", content=LITELLM_EMBED,
        headers=headers,
    )  # fmt: skip
    assert emb.status_code == 200 and emb.json()["embeddings"]
    ups = proxy.fake.requests
    assert [(u.version, u.model, u.action) for u in ups] == [
        ("v1beta", MODEL, "generateContent"),
        ("v1beta", MODEL, "streamGenerateContent"),
        ("v1beta", "gemini-embedding-001", "batchEmbedContents"),
    ]
    assert ups[1].query == {"alt": "sse"} and ups[0].body == LITELLM_CHAT
    rows = proxy.rows(3)
    assert [(r["route"], r["operation"]) for r in rows] == [
        ("native", "generateContent"),
        ("native", "streamGenerateContent"),
        ("native", "batchEmbedContents"),
    ]
    assert (rows[1]["prompt_tokens"], rows[1]["output_tokens"]) == (9, 2)
    assert all(row_cost(r) > 0 for r in rows)
    assert Decimal(whole.headers["x-gemini-meter-cost-usd"]) == row_cost(rows[0])


def test_unversioned_errors_are_geminis(proxy: RunningProxy) -> None:
    r = httpx.post(
        f"{proxy.url}/models/{MODEL}:nope", json={}, headers={"x-goog-api-key": proxy.key}
    )
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/audio/speech", 404),
        ("GET", "/v1beta/openai/files", 404),
        ("POST", "/v1/responses/input_tokens", 405),
        ("GET", "/v1/chat/completions", 405),
    ],
)
def test_an_unknown_openai_route_says_which(
    proxy: RunningProxy, method: str, path: str, status: int
) -> None:
    r = httpx.request(
        method, f"{proxy.url}{path}", json={}, headers={"authorization": f"Bearer {proxy.key}"}
    )
    assert r.status_code == status
    error = r.json()["error"]
    assert error["message"].startswith(f"Invalid URL ({method} {path})")
    assert set(error) == {"message", "type", "param", "code"}
    if status == 405:
        assert "allow" in r.headers


def test_the_sdk_shows_the_unknown_route(proxy: RunningProxy) -> None:
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=proxy.key, max_retries=0)
    unknown = r"Invalid URL \(POST /v1/moderations\)"
    with client, pytest.raises(openai.NotFoundError, match=unknown):
        client.moderations.create(input="hi")


# -- cost of a streamed chat completion --------------------------------------------------------


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_ends_with_the_calls_cost(proxy: RunningProxy, include_usage: bool) -> None:
    proxy.fake.enqueue(StreamReply(stream_events(["Hel", "lo"], usage_metadata(9, 2, thoughts=5))))
    body: dict[str, Any] = {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
    }  # fmt: skip
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    r = httpx.post(
        f"{proxy.url}/v1/chat/completions", json=body,
        headers={"authorization": f"Bearer {proxy.key}"},
    )  # fmt: skip
    [row] = proxy.rows()
    cost = row_cost(row)
    assert cost > 0
    assert stream_cost(r.content) == cost
    chunks = sse_objects(r.content)
    usage = [c["usage"] for c in chunks if c.get("usage")]
    if include_usage:
        assert len(usage) == 1 and usage_cost(usage[0]) == cost
        assert usage[0]["completion_tokens"] == 7
    else:
        assert usage == []
    assert r.content.endswith(b"data: [DONE]\n\n")


def test_openai_sdk_reads_the_stream_cost(proxy: RunningProxy) -> None:
    proxy.fake.enqueue(StreamReply(stream_events(["a", "b"], usage_metadata(4, 2))))
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=proxy.key, max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True,
                stream_options={"include_usage": True},
            )
        )  # fmt: skip
    [row] = proxy.rows()
    assert usage_cost(chunks[-1].usage) == row_cost(row) > 0
