"""Input the proxy used to answer with a 500 (issue 16, item 8) is a 4xx in the route's
envelope: integers no Gemini field holds on the OpenAI routes; dates out of range, NULs and
numbers beyond 64 bits on the reports and the admin API (tests/test_admin.py has those)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from proxy.errors import BadRequest
from proxy.openai.chat import chat_request_to_gemini
from proxy.openai.embeddings import embeddings_request_to_gemini
from tests.conftest import RunningProxy

HUGE = 10**30
MESSAGES = [{"role": "user", "content": "hi"}]

CHAT = [
    ("n", HUGE),
    ("max_tokens", HUGE),
    ("max_completion_tokens", HUGE),
    ("top_k", HUGE),
    ("seed", HUGE),
    ("seed", -HUGE),
    ("n", 2**31),
    ("max_tokens", 2**31),
    ("reasoning_effort", None),  # (valid: a control that the table runs at all)
]


@pytest.mark.parametrize(("param", "value"), CHAT)
def test_integers_beyond_int32_are_refused_by_the_translator(param: str, value: Any) -> None:
    body = {"model": "gemini-2.5-flash", "messages": MESSAGES, param: value}
    if value is None:
        chat_request_to_gemini(body)
        return
    with pytest.raises(BadRequest) as caught:
        chat_request_to_gemini(body)
    assert caught.value.param == param and caught.value.status_code == 400


def test_the_largest_int32_is_accepted() -> None:
    call = chat_request_to_gemini(
        {"model": "gemini-2.5-flash", "messages": MESSAGES, "max_tokens": 2**31 - 1}
    )
    assert call.request["generationConfig"]["maxOutputTokens"] == 2**31 - 1


@pytest.mark.parametrize(
    "extra",
    [{"dimensions": HUGE}, {"user": "u" * 1000}, {"user": "\x00"}],
)
def test_embeddings_refuse_what_no_row_or_field_holds(extra: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        embeddings_request_to_gemini({"model": "gemini-embedding-001", "input": "x", **extra})


@pytest.mark.parametrize(
    "body",
    [
        {"n": HUGE},
        {"max_tokens": HUGE},
        {"seed": -HUGE},
        {"extra_body": {"google": {"thinking_config": {"thinking_budget": HUGE}}}},
        {"user": "x" * 300},
        {"user": "a\x00b"},
    ],
    ids=["n", "max_tokens", "seed", "thinking_budget", "long-user", "nul-user"],
)
def test_chat_over_http_is_a_400_in_openai_envelope(
    start_proxy: Callable[..., RunningProxy], pg_url: str, body: dict[str, Any]
) -> None:
    p = start_proxy(pg_url)
    content = json.dumps({"model": "gemini-2.5-flash", "messages": MESSAGES, **body}).encode()
    r = httpx.post(
        f"{p.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {p.key}", "content-type": "application/json"},
        content=content,
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"]
    assert p.fake.requests == []
