"""The OpenAI Agents SDK and LangChain's ``ChatOpenAI(use_responses_api=True)`` run a tool round
trip over the Responses translation: a mock transport plays the route (request → Gemini body → a
Gemini reply → response object or stream events), so the clients' own parsing of both forms is
what is tested. The metered route's tests come with the route."""

from __future__ import annotations

import itertools
from typing import Any

import agents
import httpx2
import openai
import orjson
import pytest

from proxy.openai.responses import (
    ItemIds,
    gemini_reply_to_response,
    responses_request_to_gemini,
)
from proxy.openai.responses_stream import ResponsesStreamTranslator, encode_event

pytestmark = pytest.mark.e2e  # real clients (in process, over a mock transport)

MODEL = "gemini-2.5-flash"
SIGNATURE = "CiQBVKhc7vB1mZ3xQ0m2Hn8sZQk1oE5q9yN0cFq3n6y0xg=="


def gemini_reply(contents: list[dict[str, Any]]) -> dict[str, Any]:
    """What Gemini would answer: call the tool first, then use its result."""
    last = contents[-1]["parts"]
    if any("functionResponse" in p for p in last):
        result = last[0]["functionResponse"]["response"]["result"]
        parts: list[dict[str, Any]] = [{"text": f"It is {result}."}]
    else:
        parts = [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": SIGNATURE,
            }
        ]
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 5},
    }


class FakeRoute:
    def __init__(self) -> None:
        self.gemini_bodies: list[dict[str, Any]] = []
        counter = itertools.count(1)
        self.ids = ItemIds(item=lambda prefix: f"{prefix}_{next(counter)}")

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/responses"
        call = responses_request_to_gemini(orjson.loads(request.content))
        self.gemini_bodies.append(call.request)
        reply = gemini_reply(call.request["contents"])
        if not call.stream:
            body = gemini_reply_to_response(
                reply, call, model=MODEL, response_id="resp_1", created_at=1, ids=self.ids
            )
            return httpx2.Response(200, content=orjson.dumps(body))
        t = ResponsesStreamTranslator(
            call, model=MODEL, response_id="resp_1", created_at=1, ids=self.ids
        )
        events = [*t.start(), *t.feed(reply), *t.finish()]
        content = b"".join(encode_event(e) for e in events)
        return httpx2.Response(200, content=content, headers={"content-type": "text/event-stream"})


@agents.function_tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("streamed", [False, True])
async def test_agent_runs_a_tool_round_trip(streamed: bool) -> None:
    route = FakeRoute()
    client = openai.AsyncOpenAI(
        base_url="http://proxy.test/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(route)),
    )
    model = agents.OpenAIResponsesModel(model=MODEL, openai_client=client)
    agent = agents.Agent(name="a", instructions="Be brief.", tools=[get_weather], model=model)
    config = agents.RunConfig(tracing_disabled=True)
    if streamed:
        result: Any = agents.Runner.run_streamed(agent, "Weather in Paris?", run_config=config)
        async for _ in result.stream_events():
            pass
    else:
        result = await agents.Runner.run(agent, "Weather in Paris?", run_config=config)
    assert result.final_output == "It is sunny in Paris."
    first, second = route.gemini_bodies
    assert first["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert first["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    # The SDK sent the call back as a function_call item: the signature rode in its call_id.
    assert second["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"result": "sunny in Paris"},
                    }
                }
            ],
        },
    ]
    assert result.context_wrapper.usage.input_tokens == 40  # two calls of 20


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("streamed", [False, True])
def test_langchain_chat_openai_with_responses_api(streamed: bool) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    route = FakeRoute()
    llm = ChatOpenAI(
        model=MODEL,
        use_responses_api=True,
        base_url="http://proxy.test/v1",
        api_key="k",  # type: ignore[arg-type]
        max_retries=0,
        streaming=streamed,
        http_client=httpx2.Client(transport=httpx2.MockTransport(route)),
    ).bind_tools([WEATHER_TOOL])
    messages: list[Any] = [HumanMessage("Weather in Paris?")]
    ai = llm.invoke(messages)
    [tool_call] = ai.tool_calls
    assert tool_call["name"] == "get_weather" and tool_call["args"] == {"city": "Paris"}
    messages += [ai, ToolMessage("sunny in Paris", tool_call_id=tool_call["id"])]
    answer = llm.invoke(messages)
    assert answer.text == "It is sunny in Paris."
    assert route.gemini_bodies[1]["contents"][1]["parts"][0]["thoughtSignature"] == SIGNATURE
