"""POST /v1/completions end to end: the openai SDK, LangChain's ``OpenAI`` LLM and what
llama-index's ``OpenAILike`` sends, against a running proxy; one ledger row per request, its
prompts' usages added up."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from proxy.pricing.catalog import Catalog
from proxy.pricing.cost import price_call
from proxy.usage import Usage
from tests.conftest import RunningProxy
from tests.costs import row_cost, sse_objects, stream_cost, usage_cost
from tests.fakes.gemini import (
    ErrorReply,
    StreamReply,
    fixture,
    stream_events,
    text_reply,
    usage_metadata,
)

MODEL = "gemini-2.5-flash"
FIXTURE_TEXT = fixture("generate_text")["candidates"][0]["content"]["parts"][0]["text"]


def priced(proxy: RunningProxy, *usages: Usage) -> Decimal:
    """What the proxy's catalog charges for these replies' usage together."""
    s = proxy.settings
    catalog = Catalog.load(s.price_list, s.price_overrides, s.price_list_fallback or None)
    cost = price_call(catalog, MODEL, sum(usages, Usage()), status=200, at=None).cost
    assert cost is not None
    return cost


def post(proxy: RunningProxy, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/completions", json=body, headers={"authorization": f"Bearer {proxy.key}"}
    )


def test_string_prompt(proxy: RunningProxy, client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model=MODEL, prompt="Say hi", max_tokens=50, stop=["\n"], temperature=0.3
    )
    reply = raw.parse()
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert [(c.index, c.text, c.finish_reason) for c in reply.choices] == [
        (0, FIXTURE_TEXT, "stop")
    ]
    [up] = proxy.fake.calls("generateContent")
    body = up.json()
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hi"}]}]
    assert body["generationConfig"] == {
        "maxOutputTokens": 50, "stopSequences": ["\n"], "temperature": 0.3,
    }  # fmt: skip
    [row] = proxy.rows()
    assert (row["route"], row["operation"], row["prompt_tokens"]) == (
        "openai",
        "generateContent",
        12,
    )
    cost = Decimal(raw.headers["x-gemini-meter-cost-usd"])
    assert cost == usage_cost(reply.usage) == row_cost(row) > 0


@pytest.mark.parametrize("database", ["sqlite_url", "pg_url"])
def test_prompts_are_one_call_each_and_one_row(
    start_proxy: Callable[..., RunningProxy], request: pytest.FixtureRequest, database: str
) -> None:
    proxy = start_proxy(request.getfixturevalue(database))
    usages = [usage_metadata(10, 4, thoughts=3), usage_metadata(20, 6)]
    proxy.fake.enqueue(
        text_reply("one", usages[0]), text_reply("two", usages[1]), action="generateContent"
    )
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=proxy.key, max_retries=0) as client:
        reply = client.completions.create(model=MODEL, prompt=["First", "Second"], n=1)
    assert [(c.index, c.text) for c in reply.choices] == [(0, "one"), (1, "two")]
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (30, 13)
    sent = [
        c.json()["contents"][0]["parts"][0]["text"] for c in proxy.fake.calls("generateContent")
    ]
    assert sent == ["First", "Second"]
    [row] = proxy.rows()
    assert (row["prompt_tokens"], row["output_tokens"], row["thinking_tokens"]) == (30, 10, 3)
    expected = priced(proxy, *(Usage.from_metadata(u) for u in usages))
    assert row_cost(row) == expected == usage_cost(reply.usage)


def test_n_candidates_per_prompt(proxy: RunningProxy) -> None:
    two = fixture("generate_text")
    two["candidates"].append({**two["candidates"][0], "index": 1})
    proxy.fake.enqueue(text_reply("a"), action="generateContent")
    r = post(proxy, {"model": MODEL, "prompt": "hi", "n": 2, "best_of": 2})
    assert r.status_code == 200, r.text
    assert proxy.fake.calls("generateContent")[0].json()["generationConfig"] == {
        "candidateCount": 2
    }
    # The reply had one candidate: the second choice is there, filtered, as OpenAI orders them.
    assert [(c["index"], c["finish_reason"]) for c in r.json()["choices"]] == [
        (0, "stop"),
        (1, "content_filter"),
    ]


def test_a_failed_prompt_still_bills_the_prompts_answered(proxy: RunningProxy) -> None:
    usage = usage_metadata(10, 4)
    proxy.fake.enqueue(text_reply("one", usage), ErrorReply("error_400"), action="generateContent")
    r = post(proxy, {"model": MODEL, "prompt": ["First", "Second"]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    [row] = proxy.rows()
    assert row["status"] == 400 and row["error_class"] == "upstream_400"
    assert (row["prompt_tokens"], row["output_tokens"]) == (10, 4)
    assert row_cost(row) == priced(proxy, Usage.from_metadata(usage)) > 0  # Google billed the first


def test_streamed_prompts_in_turn_with_usage_and_cost(proxy: RunningProxy) -> None:
    usages = [usage_metadata(5, 2), usage_metadata(7, 3, thoughts=4)]
    proxy.fake.enqueue(
        StreamReply(stream_events(["a", "b"], usages[0])),
        StreamReply(stream_events(["c", "d"], usages[1])),
        action="streamGenerateContent",
    )
    with httpx.stream(
        "POST", f"{proxy.url}/v1/completions",
        json={"model": MODEL, "prompt": ["x", "y"], "stream": True,
              "stream_options": {"include_usage": True}},
        headers={"authorization": f"Bearer {proxy.key}"},
    ) as r:  # fmt: skip
        raw = r.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = sse_objects(raw)
    text = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk["choices"]:
            text[choice["index"]] += choice["text"]
    assert text == {0: "ab", 1: "cd"}
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and usage["prompt_tokens"] == 12
    assert usage["completion_tokens"] == 2 + 3 + 4
    [row] = proxy.rows()
    assert row["streamed"] is True and row["prompt_tokens"] == 12
    expected = priced(proxy, *(Usage.from_metadata(u) for u in usages))
    assert row_cost(row) == expected == usage_cost(usage) == stream_cost(raw)


def test_a_later_streamed_prompt_failing_ends_the_stream_with_its_error(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    usage = usage_metadata(5, 2)
    proxy.fake.enqueue(
        StreamReply(stream_events(["a"], usage)), ErrorReply("error_400"),
        action="streamGenerateContent",
    )  # fmt: skip
    texts: list[str] = []
    with pytest.raises(openai.APIError, match="Invalid JSON payload"):
        for chunk in client.completions.create(model=MODEL, prompt=["x", "y"], stream=True):
            texts += [c.text for c in chunk.choices]
    assert "a" in texts
    [row] = proxy.rows()
    assert row["error_class"] == "upstream_400" and row["prompt_tokens"] == 5
    assert row_cost(row) == priced(proxy, Usage.from_metadata(usage)) > 0


async def test_a_client_leaving_mid_prompts_is_billed_for_what_ran(proxy: RunningProxy) -> None:
    first = usage_metadata(5, 2)
    proxy.fake.enqueue(
        StreamReply(stream_events(["a", "b"], first)),
        StreamReply(stream_events(["c", "d"], usage_metadata(7, 3)), hold_after=1),
        action="streamGenerateContent",
    )
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "POST", f"{proxy.url}/v1/completions",
            json={"model": MODEL, "prompt": ["x", "y", "z"], "stream": True},
            headers={"authorization": f"Bearer {proxy.key}"},
        ) as r,
    ):  # fmt: skip
        seen = b""
        async for chunk in r.aiter_bytes():
            seen += chunk
            if b'"text":"c"' in seen:
                break  # the second prompt is streaming: leave
    [row] = proxy.rows()
    assert row["error_class"] == "client_disconnected" and row["status"] == 200
    # the first prompt's whole usage and the second's so far (its first event: prompt only)
    assert (row["prompt_tokens"], row["output_tokens"]) == (5 + 7, 2)
    assert row_cost(row) > priced(proxy, Usage.from_metadata(first))
    await proxy.fake.await_until(lambda: proxy.fake.cancelled >= 1, within=5)
    proxy.fake.release()
    assert len(proxy.fake.calls("streamGenerateContent")) == 2  # the third never went out


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"suffix": "!"}, "suffix"), ({"echo": True}, "echo"), ({"logprobs": 2}, "logprobs"),
     ({"prompt": ""}, "prompt"), ({"best_of": 3}, "best_of")],
)  # fmt: skip
def test_refused_parameters(proxy: RunningProxy, extra: dict[str, Any], param: str) -> None:
    r = post(proxy, {"model": MODEL, "prompt": "hi", **extra})
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert proxy.fake.requests == []


def test_token_id_prompts_are_decoded(proxy: RunningProxy) -> None:
    r = post(proxy, {"model": MODEL, "prompt": [[15339, 1917]]})  # cl100k_base "hello world"
    assert r.status_code == 200
    [up] = proxy.fake.calls("generateContent")
    assert up.json()["contents"][0]["parts"] == [{"text": "hello world"}]


# -- LangChain and llama-index ---------------------------------------------------------------


def test_langchain_openai_llm(proxy: RunningProxy) -> None:
    from langchain_openai import OpenAI

    llm = OpenAI(
        model=MODEL,
        base_url=f"{proxy.url}/v1",
        api_key=proxy.key,
        max_retries=0,
    )
    assert llm.invoke("Say hi") == FIXTURE_TEXT
    proxy.fake.enqueue(StreamReply(stream_events(["H", "i"], usage_metadata(3, 1))))
    assert "".join(llm.stream("Say hi")) == "Hi"
    body = proxy.fake.calls("generateContent")[0].json()
    assert body["generationConfig"]["maxOutputTokens"] == 256
    rows = proxy.rows(2)
    assert [r["operation"] for r in rows] == ["generateContent", "streamGenerateContent"]
    assert all(r["status"] == 200 and row_cost(r) > 0 for r in rows)


# Recorded from llama-index-llms-openai-like 0.8.1 (OpenAILike with its defaults,
# is_chat_model=False): it pins openai<3, so it cannot share this environment with the Agents SDK
# (openai 3); these are its exact bodies for complete() and stream_complete().
LLAMA_COMPLETE = {"model": MODEL, "prompt": "Say hi", "stream": False, "temperature": 0.1}
LLAMA_STREAM = {"model": MODEL, "prompt": "Say hi", "stream": True, "temperature": 0.1}


def test_llama_index_openai_like_requests(proxy: RunningProxy) -> None:
    whole = post(proxy, LLAMA_COMPLETE)
    assert whole.status_code == 200
    assert whole.json()["choices"][0]["text"] == FIXTURE_TEXT
    # No max_tokens: the model's own limit applies, not OpenAI's default of 16.
    assert "maxOutputTokens" not in proxy.fake.calls("generateContent")[0].json().get(
        "generationConfig", {}
    )
    proxy.fake.enqueue(StreamReply(stream_events(["H", "i"], usage_metadata(3, 1))))
    streamed = post(proxy, LLAMA_STREAM)
    chunks = sse_objects(streamed.content)
    assert "".join(c["text"] for chunk in chunks for c in chunk["choices"]) == "Hi"
    assert all("usage" not in chunk for chunk in chunks)  # no stream_options: no usage chunk
    rows = proxy.rows(2)
    assert all(row_cost(r) > 0 for r in rows)
