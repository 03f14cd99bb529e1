"""POST /v1/responses end to end: the openai SDK, the OpenAI Agents SDK and LangChain's
``ChatOpenAI(use_responses_api=True)`` against a running proxy in front of the fake Gemini; each
call's ledger row and cost checked against what the client was told."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import agents
import httpx
import openai
import pydantic
import pytest

from tests.conftest import RunningProxy
from tests.costs import row_cost, stream_cost, usage_cost
from tests.fakes.gemini import (
    JsonReply,
    StreamReply,
    fixture,
    stream_events,
    text_reply,
    usage_metadata,
)

MODEL = "gemini-2.5-flash"
SIGNATURE = fixture("generate_function_call")["candidates"][0]["content"]["parts"][0][
    "thoughtSignature"
]
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}


def function_call_reply() -> JsonReply:
    reply = fixture("generate_function_call")
    reply["modelVersion"] = MODEL
    return JsonReply(reply)


# -- openai SDK ----------------------------------------------------------------------------------


def test_plain_response_with_reasoning_tokens_and_cost(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="What is a proxy?", instructions="Be brief.",
        reasoning={"effort": "low"}, max_output_tokens=500,
    )  # fmt: skip
    response = raw.parse()
    assert response.status == "completed" and response.id.startswith("resp_")
    assert (
        response.output_text
        == fixture("generate_text")["candidates"][0]["content"]["parts"][0]["text"]
    )
    u = response.usage
    assert u is not None
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (12, 17 + 423, 452)
    assert u.output_tokens_details.reasoning_tokens == 423
    [up] = proxy.fake.calls("generateContent")
    body = up.json()
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}
    assert body["generationConfig"]["maxOutputTokens"] == 500
    [row] = proxy.rows()
    assert (row["route"], row["operation"], row["status"]) == ("openai", "generateContent", 200)
    assert (row["prompt_tokens"], row["output_tokens"], row["thinking_tokens"]) == (12, 17, 423)
    header = raw.headers["x-gemini-meter-cost-usd"]
    assert Decimal(header) == usage_cost(u) == row_cost(row) > 0


def test_streamed_response_ends_with_the_calls_cost(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    proxy.fake.enqueue(StreamReply(stream_events(["Hel", "lo"], usage_metadata(9, 2, thoughts=5))))
    with client.responses.stream(model=MODEL, input="hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_text.delta") == 2 and kinds[-1] == "response.completed"
    assert final.output_text == "Hello"
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 5
    [up] = proxy.fake.calls("streamGenerateContent")
    assert up.query == {"alt": "sse"}
    [row] = proxy.rows()
    assert row["streamed"] is True and (row["prompt_tokens"], row["output_tokens"]) == (9, 2)
    assert usage_cost(final.usage) == row_cost(row) > 0


def test_stream_carries_its_cost_in_an_sse_comment(proxy: RunningProxy) -> None:
    """The cost header a whole reply has, for a stream: a comment line clients skip."""
    proxy.fake.enqueue(StreamReply(stream_events(["a", "b"], usage_metadata(9, 2))))
    with httpx.stream(
        "POST", f"{proxy.url}/v1/responses",
        json={"model": MODEL, "input": "hi", "stream": True},
        headers={"authorization": f"Bearer {proxy.key}"},
    ) as r:  # fmt: skip
        body = r.read()
    [row] = proxy.rows()
    assert stream_cost(body) == row_cost(row) > 0
    assert body.index(b": x-gemini-meter-cost-usd") < body.index(b"event: response.completed")


def test_tool_round_trip_keeps_the_thought_signature(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    proxy.fake.enqueue(function_call_reply(), text_reply("It is 31°C in Hanoi."))
    first = client.responses.create(model=MODEL, input="Weather in Hanoi?", tools=[WEATHER])
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and '"Hanoi"' in call.arguments
    conversation: Any = [
        {"role": "user", "content": "Weather in Hanoi?"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "31°C"},
    ]
    second = client.responses.create(
        model=MODEL,
        input=conversation,
        tools=[WEATHER],
        tool_choice="auto",
    )
    assert second.output_text == "It is 31°C in Hanoi."
    bodies = [c.json() for c in proxy.fake.calls("generateContent")]
    assert bodies[0]["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    model_turn, tool_turn = bodies[1]["contents"][1:]
    assert model_turn["parts"][0]["thoughtSignature"] == SIGNATURE
    assert tool_turn["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"result": "31°C"},
    }
    rows = proxy.rows(2)
    assert [r["prompt_tokens"] for r in rows] == [86, 12]
    assert all(row_cost(r) > 0 for r in rows)
    assert [usage_cost(first.usage), usage_cost(second.usage)] == [row_cost(r) for r in rows]


class Label(pydantic.BaseModel):
    label: str


def test_json_schema_output_is_parsed(proxy: RunningProxy, client: openai.OpenAI) -> None:
    proxy.fake.enqueue(text_reply('{"label": "cat"}'))
    parsed = client.responses.parse(model=MODEL, input="Label this.", text_format=Label)
    assert parsed.output_parsed == Label(label="cat")
    config = proxy.fake.calls("generateContent")[0].json()["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["properties"] == {
        "label": {"title": "Label", "type": "string"}
    }
    [row] = proxy.rows()
    assert usage_cost(parsed.usage) == row_cost(row)


async def test_async_plain_and_streamed(proxy: RunningProxy, aclient: openai.AsyncOpenAI) -> None:
    plain = await aclient.responses.create(model=MODEL, input="hi")
    assert plain.output_text
    proxy.fake.enqueue(StreamReply(stream_events(["x", "y"], usage_metadata(4, 2))))
    events = [e async for e in await aclient.responses.create(model=MODEL, input="hi", stream=True)]
    completed = events[-1]
    assert completed.type == "response.completed"
    rows = proxy.rows(2)
    assert [r["streamed"] for r in rows] == [False, True]
    assert usage_cost(plain.usage) == row_cost(rows[0])
    assert usage_cost(completed.response.usage) == row_cost(rows[1]) > 0


def test_mid_stream_error_fails_the_response_and_meters_what_came(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    proxy.fake.enqueue(StreamReply([fixture("stream_error_midway.sse")]))
    events = list(client.responses.create(model=MODEL, input="hi", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None
    assert events[-1].response.error.code == "server_error"
    assert not any(e.type == "response.completed" for e in events)
    [row] = proxy.rows()
    assert row["error_class"] == "upstream_stream_error" and row["prompt_tokens"] == 12


def test_web_search_is_google_search_grounding(proxy: RunningProxy, client: openai.OpenAI) -> None:
    client.responses.create(model=MODEL, input="news?", tools=[{"type": "web_search"}])
    assert proxy.fake.calls("generateContent")[0].json()["tools"] == [{"googleSearch": {}}]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
        ({"background": True}, "background"),
    ],
    ids=["previous_response_id", "hosted-tool", "background"],
)
def test_refused_parameters_are_400s_naming_them(
    proxy: RunningProxy, extra: dict[str, Any], param: str
) -> None:
    r = httpx.post(
        f"{proxy.url}/v1/responses", json={"model": MODEL, "input": "hi", **extra},
        headers={"authorization": f"Bearer {proxy.key}"},
    )  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert proxy.fake.requests == []


def test_stored_responses_are_not_found_and_say_why(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.retrieve("resp_123")
    assert "resp_123" in err.value.message and "does not store" in err.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_123")
    bad = httpx.get(f"{proxy.url}/v1/responses/resp_123", headers={"authorization": "Bearer no"})
    assert bad.status_code == 401  # the key is checked first


# -- OpenAI Agents SDK and LangChain ---------------------------------------------------------


def enqueue_tool_round_trip(proxy: RunningProxy, streamed: bool) -> None:
    """Gemini calls get_weather(Hanoi), then answers with the result."""
    if streamed:
        proxy.fake.enqueue(
            StreamReply([fixture("generate_function_call")]),
            StreamReply(stream_events(["It is ", "31 degrees."], usage_metadata(120, 5))),
        )
    else:
        proxy.fake.enqueue(function_call_reply(), text_reply("It is 31 degrees."))


@pytest.mark.parametrize("streamed", [False, True])
async def test_agents_sdk_agent_runs_a_tool(proxy: RunningProxy, streamed: bool) -> None:
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str, unit: str) -> str:
        """Weather for a city."""
        seen.append(city)
        return f"31 degrees {unit} in {city}"

    enqueue_tool_round_trip(proxy, streamed)
    async with openai.AsyncOpenAI(
        base_url=f"{proxy.url}/v1", api_key=proxy.key, max_retries=0
    ) as client:
        model = agents.OpenAIResponsesModel(model=MODEL, openai_client=client)
        agent = agents.Agent(name="w", instructions="Be brief.", tools=[get_weather], model=model)
        config = agents.RunConfig(tracing_disabled=True)
        if streamed:
            result: Any = agents.Runner.run_streamed(agent, "Weather in Hanoi?", run_config=config)
            async for _ in result.stream_events():
                pass
        else:
            result = await agents.Runner.run(agent, "Weather in Hanoi?", run_config=config)
    assert result.final_output == "It is 31 degrees."
    assert seen == ["Hanoi"]
    action = "streamGenerateContent" if streamed else "generateContent"
    second = proxy.fake.calls(action)[1].json()
    assert second["contents"][-1]["parts"][0]["functionResponse"]["response"] == {
        "result": "31 degrees celsius in Hanoi"
    }
    rows = proxy.rows(2)
    assert [r["status"] for r in rows] == [200, 200] and all(row_cost(r) > 0 for r in rows)
    assert result.context_wrapper.usage.input_tokens == sum(r["prompt_tokens"] for r in rows)


@pytest.mark.parametrize("streamed", [False, True])
def test_langchain_chat_openai_on_the_responses_api(proxy: RunningProxy, streamed: bool) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    enqueue_tool_round_trip(proxy, streamed)
    llm = ChatOpenAI(
        model=MODEL, use_responses_api=True, base_url=f"{proxy.url}/v1",
        api_key=proxy.key, max_retries=0, streaming=streamed,
    ).bind_tools([WEATHER])  # fmt: skip
    messages: list[Any] = [HumanMessage("Weather in Hanoi?")]
    ai = llm.invoke(messages)
    [tool_call] = ai.tool_calls
    assert tool_call["args"] == {"city": "Hanoi", "unit": "celsius"}
    messages += [ai, ToolMessage("31 degrees", tool_call_id=tool_call["id"])]
    answer = llm.invoke(messages)
    assert answer.text == "It is 31 degrees."
    action = "streamGenerateContent" if streamed else "generateContent"
    second = proxy.fake.calls(action)[1].json()
    assert second["contents"][1]["parts"][0]["thoughtSignature"] == SIGNATURE
    rows = proxy.rows(2)
    assert all(r["status"] == 200 and row_cost(r) > 0 for r in rows)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == rows[1]["prompt_tokens"]
