"""The OpenAI-compatible API end to end: the official openai SDK against a running proxy."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from proxy.estimate import estimate_text_tokens
from tests.conftest import RunningProxy
from tests.fakes.gemini import (
    ErrorReply,
    JsonReply,
    StreamReply,
    fixture,
    stream_events,
    text_reply,
    usage_metadata,
)
from tests.fakes.tiktoken_files import offline_tiktoken

MODEL = "gemini-2.5-flash"


def test_plain_chat(proxy: RunningProxy, client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is a proxy?"}]
    )
    assert isinstance(reply, ChatCompletion)
    assert (
        reply.choices[0].message.content
        == fixture("generate_text")["candidates"][0]["content"]["parts"][0]["text"]
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == MODEL and reply.id.startswith("chatcmpl-")
    u = reply.usage
    assert u is not None
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (12, 17 + 423, 452)
    assert (
        u.completion_tokens_details is not None
        and u.completion_tokens_details.reasoning_tokens == 423
    )
    [up] = proxy.fake.calls("generateContent")
    assert up.path == f"/v1beta/models/{MODEL}:generateContent"
    assert up.json()["contents"] == [{"role": "user", "parts": [{"text": "What is a proxy?"}]}]


def test_multi_turn_with_system_prompt(proxy: RunningProxy, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ],
        temperature=0.2,
        max_tokens=50,
        stop=["\n\n"],
    )
    body = proxy.fake.calls("generateContent")[0].json()
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    cfg = body["generationConfig"]
    assert (cfg["temperature"], cfg["maxOutputTokens"], cfg["stopSequences"]) == (0.2, 50, ["\n\n"])


def _two_calls_reply() -> dict[str, Any]:
    reply = fixture("generate_function_call")
    parts = reply["candidates"][0]["content"]["parts"]
    parts.append({"functionCall": {"name": "get_time", "args": {"tz": "Asia/Ho_Chi_Minh"}}})
    return dict(reply)


def test_parallel_tool_calls_round_trip_keep_the_thought_signature(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {"name": n, "parameters": {"type": "object", "properties": {}}},
        }
        for n in ("get_weather", "get_time")
    ]
    proxy.fake.enqueue(JsonReply(_two_calls_reply()))
    first = client.chat.completions.create(
        model="gemini-3-pro-preview", messages=[{"role": "user", "content": "Weather and time?"}],
        tools=tools, tool_choice="auto",
    )  # fmt: skip
    calls = first.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 2
    assert first.choices[0].finish_reason == "tool_calls"
    assert [tc.function.name for tc in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert calls[0].function.arguments and '"Hanoi"' in calls[0].function.arguments  # type: ignore[union-attr]
    # The app rebuilds the assistant turn from id/name/arguments only, as most apps do.
    client.chat.completions.create(
        model="gemini-3-pro-preview",
        messages=[
            {"role": "user", "content": "Weather and time?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": tc.id, "type": "function",
                 "function": {"name": tc.function.name, "arguments": tc.function.arguments}}  # type: ignore[union-attr]
                for tc in calls
            ]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp": 31}'},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "09:00"},
        ],
        tools=tools,
    )  # fmt: skip
    body = proxy.fake.calls("generateContent")[1].json()
    model_turn, tool_turn = body["contents"][1], body["contents"][2]
    assert model_turn["role"] == "model"
    sig = fixture("generate_function_call")["candidates"][0]["content"]["parts"][0][
        "thoughtSignature"
    ]
    assert model_turn["parts"][0]["thoughtSignature"] == sig
    assert model_turn["parts"][0]["functionCall"]["args"] == {"city": "Hanoi", "unit": "celsius"}
    names = [p["functionResponse"]["name"] for p in tool_turn["parts"]]
    assert names == ["get_weather", "get_time"]
    assert tool_turn["parts"][0]["functionResponse"]["response"] == {"temp": 31}


def test_json_schema_and_image_input(proxy: RunningProxy, client: openai.OpenAI) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Describe"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        ]}],
        response_format={"type": "json_schema", "json_schema": {"name": "d", "schema": {
            "type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"],
        }}},
    )  # fmt: skip
    body = proxy.fake.calls("generateContent")[0].json()
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": png}}
    cfg = body["generationConfig"]
    assert cfg["responseMimeType"] == "application/json"
    schema = cfg.get("responseJsonSchema") or cfg.get("responseSchema")
    assert schema["properties"] == {"label": {"type": "string"}}


def test_stream_with_include_usage(proxy: RunningProxy, client: openai.OpenAI) -> None:
    proxy.fake.enqueue(StreamReply(stream_events(["Hel", "lo"], usage_metadata(9, 2, thoughts=5))))
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert (
        len(usage_chunks) == 1 and usage_chunks[0].choices == [] and chunks[-1] is usage_chunks[0]
    )
    u = usage_chunks[0].usage
    assert u is not None and (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (9, 7, 16)
    [up] = proxy.fake.calls("streamGenerateContent")
    assert up.query == {"alt": "sse"}


async def test_async_stream_delivers_first_delta_before_upstream_finishes(
    proxy: RunningProxy, aclient: openai.AsyncOpenAI
) -> None:
    proxy.fake.enqueue(
        StreamReply(stream_events(["first", " second"], usage_metadata(3, 2)), hold_after=1)
    )
    stream = await aclient.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    seen = ""
    async for chunk in stream:
        seen += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        if seen == "first":
            assert not proxy.fake.stream_done.is_set()
            proxy.fake.release()
    assert seen == "first second"


async def test_async_non_stream(proxy: RunningProxy, aclient: openai.AsyncOpenAI) -> None:
    reply = await aclient.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings(proxy: RunningProxy, encoding: str, client: openai.OpenAI) -> None:
    r = client.embeddings.create(
        model="gemini-embedding-001",
        input=["a" * 40, "b" * 8],
        encoding_format=encoding,  # type: ignore[arg-type]
    )
    assert [d.index for d in r.data] == [0, 1]
    expected = fixture("batch_embed_contents")["embeddings"]
    vector: Any = r.data[0].embedding
    if encoding == "base64":  # asked for explicitly, the SDK hands back the raw string
        raw = base64.b64decode(vector)
        vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert vector == pytest.approx(expected[0]["values"], rel=1e-6)
    assert r.usage.prompt_tokens == 12  # estimated: 48 characters / 4
    [row] = proxy.rows()
    assert row["estimated"] is True and row["prompt_tokens"] == 12 and row["route"] == "openai"


def test_embeddings_from_token_arrays(proxy: RunningProxy, client: openai.OpenAI) -> None:
    # cl100k_base ids of "hello world" and "héllo" (tiktoken.get_encoding("cl100k_base"))
    r = client.embeddings.create(
        model="gemini-embedding-001", input=[[15339, 1917], [71, 19010, 385]]
    )
    assert [d.index for d in r.data] == [0, 1]
    [up] = proxy.fake.calls("batchEmbedContents")
    assert [q["content"]["parts"][0]["text"] for q in up.json()["requests"]] == [
        "hello world",
        "héllo",
    ]
    [row] = proxy.rows()
    assert row["status"] == 200 and row["estimated"] is True
    assert row["prompt_tokens"] == estimate_text_tokens(["hello world", "héllo"])


def test_embeddings_unknown_token_id_is_a_clear_400(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="gemini-embedding-001", input=[[15339], [100261]])
    assert err.value.body["param"] == "input[1]"  # type: ignore[index]
    assert "100261" in err.value.message and "cl100k_base" in err.value.message
    assert proxy.fake.calls("batchEmbedContents") == []


def test_langchain_embeddings_with_defaults(
    proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """LangChain's OpenAIEmbeddings() with its defaults tokenises with tiktoken and sends token
    arrays; the proxy embeds the original text."""
    from langchain_openai import OpenAIEmbeddings

    offline_tiktoken(monkeypatch, tmp_path)
    sent: list[Any] = []
    create = openai.resources.embeddings.Embeddings.create

    def spy(self: Any, **kw: Any) -> Any:
        sent.append(kw["input"])
        return create(self, **kw)

    monkeypatch.setattr(openai.resources.embeddings.Embeddings, "create", spy)
    texts = ["The proxy meters every call.", "Gemini ist schnell — 日本語 🎉"]
    embedder = OpenAIEmbeddings(  # type: ignore[call-arg]  # pydantic aliases
        model="gemini-embedding-001",
        base_url=f"{proxy.url}/v1",
        api_key=proxy.key,
        max_retries=0,
    )
    vectors = embedder.embed_documents(texts)
    assert len(sent) == 1 and all(isinstance(t, int) for a in sent[0] for t in a)
    [up] = proxy.fake.calls("batchEmbedContents")
    assert [q["content"]["parts"][0]["text"] for q in up.json()["requests"]] == texts
    expected = fixture("batch_embed_contents")["embeddings"]
    assert len(vectors) == 2 and vectors[0] == pytest.approx(expected[0]["values"], rel=1e-6)
    [row] = proxy.rows()
    assert row["status"] == 200 and row["operation"] == "batchEmbedContents"


def test_models(proxy: RunningProxy, client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gemini-2.5-flash" in ids and "gemini-3-pro-preview" in ids  # every upstream page
    assert client.models.retrieve("gemini-2.5-pro").id == "gemini-2.5-pro"


# -- errors ------------------------------------------------------------------------------------


def test_bad_key_is_authentication_error(proxy: RunningProxy) -> None:
    bad = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="gm-nope", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "invalid_api_key"  # type: ignore[index]


@pytest.mark.parametrize(
    ("reply", "exc", "kind"),
    [
        (ErrorReply("error_429"), openai.RateLimitError, "rate_limit_error"),
        (ErrorReply(503), openai.InternalServerError, "api_error"),
        (ErrorReply("error_400"), openai.BadRequestError, "invalid_request_error"),
        (ErrorReply(404), openai.NotFoundError, "not_found_error"),
        (ErrorReply("error_bad_key"), openai.InternalServerError, "api_error"),
    ],
    ids=["429", "503", "400", "404", "upstream-key-rejected"],
)
def test_upstream_errors_map_to_openai_classes(
    proxy: RunningProxy, reply: ErrorReply, exc: type[Exception], kind: str, client: openai.OpenAI
) -> None:
    proxy.fake.enqueue(reply, reply, reply)  # survive the proxy's own retries
    with pytest.raises(exc) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    body = err.value.body  # type: ignore[attr-defined]
    assert body["type"] == kind
    assert "AIza" not in str(body)


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": MODEL, "messages": "hi"}, "messages"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature",
        ),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "logit_bias": {"1": 2},
            },
            "logit_bias",
        ),
        ({"model": "../../etc", "messages": [{"role": "user", "content": "x"}]}, None),
    ],
    ids=["messages-type", "temperature-type", "no-model", "unsupported", "model-path"],
)
def test_invalid_requests_are_400_naming_the_parameter(
    proxy: RunningProxy, payload: dict[str, Any], param: str | None
) -> None:
    r = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json=payload,
        headers={"authorization": f"Bearer {proxy.key}"},
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    if param:
        assert err["param"] == param
    assert proxy.fake.requests == []


def test_malformed_json_is_openai_400(proxy: RunningProxy) -> None:
    r = httpx.post(
        f"{proxy.url}/v1/chat/completions", content=b"{oops",
        headers={"authorization": f"Bearer {proxy.key}", "content-type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_mid_stream_upstream_error_reaches_the_sdk(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    proxy.fake.enqueue(StreamReply([fixture("stream_error_midway.sse")]))
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    [row] = proxy.rows()
    assert row["error_class"] == "upstream_stream_error" and row["prompt_tokens"] == 12


# -- metering ----------------------------------------------------------------------------------


def test_openai_and_native_calls_meter_identically(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    usage = usage_metadata(321, 45, thoughts=67, cached=100)
    proxy.fake.enqueue(text_reply("x", usage), text_reply("x", usage))
    # gemini-2.0-flash: a model whose price list has a cached-input rate
    oa = client.chat.completions.with_raw_response.create(
        model="gemini-2.0-flash", messages=[{"role": "user", "content": "hi"}]
    )
    native = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-2.0-flash:generateContent",
        headers={"x-goog-api-key": proxy.key}, json={"contents": [{"parts": [{"text": "hi"}]}]},
    )  # fmt: skip
    rows = proxy.rows(2)
    by_route = {r["route"]: r for r in rows}
    kinds = (
        "prompt_tokens",
        "cached_tokens",
        "output_tokens",
        "thinking_tokens",
        "total_tokens",
        "cost_usd",
    )
    assert {k: by_route["openai"][k] for k in kinds} == {k: by_route["native"][k] for k in kinds}
    assert by_route["openai"]["prompt_tokens"] == 321 and by_route["openai"]["cached_tokens"] == 100
    cost = oa.headers["x-gemini-meter-cost-usd"]
    assert cost == native.headers["x-gemini-meter-cost-usd"] != ""
    parsed = oa.parse()
    assert parsed.usage is not None and parsed.usage.prompt_tokens_details is not None
    assert parsed.usage.prompt_tokens_details.cached_tokens == 100
    assert parsed.usage.model_extra is not None
    assert Decimal(str(parsed.usage.model_extra["cost"])) == Decimal(cost)


def test_tiny_costs_print_in_positional_notation(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    # One prompt token and one output token: a cost below 1e-6, which str(Decimal) writes as
    # "3.000E-7"; the header, the body's usage.cost and the ledger agree in plain decimals.
    proxy.fake.enqueue(text_reply("x", usage_metadata(1, 1)))
    chat = client.chat.completions.with_raw_response.create(
        model="gemini-2.0-flash", messages=[{"role": "user", "content": "hi"}]
    )
    emb = client.embeddings.with_raw_response.create(model="gemini-embedding-001", input="abcd")
    rows = {r["operation"]: r for r in proxy.rows(2)}
    for raw, op in ((chat, "generateContent"), (emb, "batchEmbedContents")):
        header = raw.headers["x-gemini-meter-cost-usd"]
        assert "E" not in header.upper() and Decimal(header) < Decimal("0.000001")
        assert Decimal(header) == Decimal(str(rows[op]["cost_usd"]))
    assert b'"cost":0.0000' in chat.http_response.content  # a JSON number, no exponent


def test_user_is_recorded_as_end_user(proxy: RunningProxy, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], user="alice@example.com"
    )
    [row] = proxy.rows()
    assert row["end_user"] == "alice@example.com"
    assert "alice" not in proxy.fake.calls("generateContent")[0].body.decode()
