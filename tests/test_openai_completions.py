"""Legacy completions request → Gemini bodies, replies → text_completion, stream chunks
(pure tables; replies checked with the openai SDK's own Completion model)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from openai._models import construct_type
from openai.types import Completion

from proxy.errors import BadRequest
from proxy.openai.completions import (
    CompletionsCall,
    CompletionsStreamTranslator,
    completions_request_to_gemini,
    gemini_replies_to_completion,
)
from proxy.openai.errors import UpstreamStreamError
from proxy.pricing.catalog import Catalog
from proxy.quotas.estimate import estimate_call

MODEL = "gemini-2.5-flash"


def call(**body: Any) -> CompletionsCall:
    body.setdefault("model", MODEL)
    body.setdefault("prompt", "Say hi")
    return completions_request_to_gemini(body)


def turn(text: str, **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        body["generationConfig"] = config
    return body


# (id, request fields, expected Gemini bodies, one per prompt)
REQUESTS: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    ("string", {}, [turn("Say hi")]),
    ("list", {"prompt": ["a", "b"]}, [turn("a"), turn("b")]),
    ("token_ids", {"prompt": [15339, 1917]}, [turn("hello world")]),
    ("token_arrays", {"prompt": [[15339], [1917]]}, [turn("hello"), turn(" world")]),
    (
        # What LangChain's OpenAI LLM sends with its defaults.
        "langchain_defaults",
        {
            "prompt": ["Say hi"],
            "frequency_penalty": 0,
            "logprobs": None,
            "max_tokens": 256,
            "n": 1,
            "presence_penalty": 0,
            "seed": None,
            "temperature": 0.7,
            "top_p": 1,
        },
        [
            turn(
                "Say hi",
                temperature=0.7,
                topP=1,
                maxOutputTokens=256,
                presencePenalty=0,
                frequencyPenalty=0,
            )
        ],
    ),
    (
        "n_stop_seed",
        {"n": 2, "best_of": 2, "stop": ["\n"], "seed": 7, "user": "u", "echo": False},
        [turn("Say hi", candidateCount=2, stopSequences=["\n"], seed=7)],
    ),
    ("stream", {"stream": True, "stream_options": {"include_usage": True}}, [turn("Say hi")]),
]


@pytest.mark.parametrize(
    ("body", "expected"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_request(body: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert call(**body).requests == expected


def test_call_fields() -> None:
    c = call(prompt=["a", "b"], n=3, stream=True, stream_options={"include_usage": True}, user="u")
    assert (c.model, c.stream, c.include_usage, c.user, c.n, c.prompts) == (
        MODEL, True, True, "u", 3, ["a", "b"],
    )  # fmt: skip
    assert call(stream_options={"include_usage": True}).include_usage is False  # not streaming


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("suffix", {"suffix": "end"}, "suffix"),
    ("logprobs", {"logprobs": 3}, "logprobs"),
    ("echo", {"echo": True}, "echo"),
    ("best_of", {"best_of": 3}, "best_of"),
    ("best_of_not_n", {"best_of": 2, "n": 3}, "best_of"),
    ("logit_bias", {"logit_bias": {"50256": -100}}, "logit_bias"),
    ("unknown", {"messages": []}, "messages"),
    ("empty_prompt", {"prompt": ""}, "prompt"),
    ("empty_in_list", {"prompt": ["a", ""]}, "prompt[1]"),
    ("no_prompt", {"prompt": None}, "prompt"),
    ("empty_list", {"prompt": []}, "prompt"),
    ("non_string", {"prompt": ["a", {"x": 1}]}, "prompt[1]"),
    ("bad_token", {"prompt": [[15339], [100261]]}, "prompt[1]"),
    ("n_zero", {"n": 0}, "n"),
    ("temperature", {"temperature": 5}, "temperature"),
]


@pytest.mark.parametrize(("body", "param"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_request_names_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as err:
        call(**body)
    assert err.value.param == param and err.value.status_code == 400


def reply(*candidates: tuple[str, str], usage: tuple[int, int, int] = (4, 2, 0)) -> dict[str, Any]:
    prompt, output, thoughts = usage
    return {
        "candidates": [
            {
                "index": j,
                "content": {
                    "role": "model",
                    "parts": [{"text": "hmm", "thought": True}, {"text": t}],
                },
                "finishReason": f,
            }
            for j, (t, f) in enumerate(candidates)
        ],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "thoughtsTokenCount": thoughts,
        },
    }


def completion(
    replies: list[dict[str, Any]], c: CompletionsCall, cost: Decimal | None = None
) -> Completion:
    body = gemini_replies_to_completion(
        replies, c, model=MODEL, completion_id="cmpl-1", created=1700000000, cost=cost
    )
    return Completion.model_validate(orjson.loads(orjson.dumps(body)))


def test_reply_orders_choices_prompt_then_candidate_and_sums_usage() -> None:
    c = call(prompt=["a", "b"], n=2)
    out = completion(
        [
            reply(("a0", "STOP"), ("a1", "MAX_TOKENS"), usage=(4, 2, 10)),
            reply(("b0", "SAFETY"), usage=(5, 3, 0)),  # one candidate short
        ],
        c,
        cost=Decimal("3.000E-7"),
    )
    assert (out.id, out.object, out.model, out.created) == (
        "cmpl-1",
        "text_completion",
        MODEL,
        1700000000,
    )
    assert [(ch.index, ch.text, ch.finish_reason, ch.logprobs) for ch in out.choices] == [
        (0, "a0", "stop", None),
        (1, "a1", "length", None),
        (2, "b0", "content_filter", None),
        (3, "", "content_filter", None),
    ]
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (
        9,
        15,
        24,
    )
    assert out.usage.model_extra == {"cost": 3e-7}


def test_stream_chunks() -> None:
    t = CompletionsStreamTranslator(
        model=MODEL, completion_id="cmpl-1", created=1, n=1, include_usage=True
    )
    chunks = [
        *t.feed(
            {
                "candidates": [{"content": {"parts": [{"text": "Hel"}]}}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
            }
        ),
        *t.feed(
            {
                "candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
            }
        ),
        *t.feed(
            {
                "candidates": [
                    {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"}
                ],
                "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1},
            },
            prompt=1,
        ),
        *t.finish(Decimal("0.0000010000")),
    ]
    assert t.finish() == []
    # As the SDK reads streamed chunks (construct_type: no validation, finish_reason may be null).
    parsed: list[Completion] = [
        construct_type(type_=Completion, value=orjson.loads(orjson.dumps(c)))  # type: ignore[misc]
        for c in chunks
    ]
    got = [(ch.index, ch.text, ch.finish_reason) for c in parsed for ch in c.choices]
    assert got == [
        (0, "Hel", None),
        (0, "lo", None),
        (0, "", "stop"),
        (1, "b", None),
        (1, "", "length"),
    ]
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and (usage["prompt_tokens"], usage["completion_tokens"]) == (
        7,
        3,
    )
    assert b'"cost":0.0000010000' in orjson.dumps(chunks[-1])


def test_stream_finish_closes_open_choices_without_usage_chunk() -> None:
    t = CompletionsStreamTranslator(
        model=MODEL, completion_id="c", created=1, n=2, include_usage=False
    )
    t.feed(
        {
            "candidates": [
                {"index": 1, "content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}
            ]
        }
    )
    [last] = t.finish()
    assert [(ch["index"], ch["finish_reason"]) for ch in last["choices"]] == [(0, "stop")]


def test_stream_error_event_raises_mapped_error() -> None:
    t = CompletionsStreamTranslator(
        model=MODEL, completion_id="c", created=1, n=1, include_usage=True
    )
    t.feed(
        {
            "candidates": [{"content": {"parts": [{"text": "x"}]}}],
            "usageMetadata": {"promptTokenCount": 2},
        }
    )
    with pytest.raises(UpstreamStreamError) as err:
        t.feed({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
    assert err.value.status == 429 and t.usage is not None and t.usage.prompt_tokens == 2


@pytest.mark.parametrize(
    ("body", "prompt_tokens", "max_output"),
    # prompt: every prompt's text and each turn's role ("user"), 4 characters a token
    [
        ({"prompt": ["a" * 40, "b" * 8], "n": 2, "max_tokens": 10}, (48 + 8) // 4, 2 * 2 * 10),
        ({"prompt": "a" * 40, "max_tokens": 7}, (40 + 4) // 4, 7),
        # no max_tokens: each prompt's call may write the model's whole output limit
        ({"prompt": ["a", "b", "c"]}, 4, 3 * 65_536),
    ],
)
def test_the_quota_holds_the_worst_case_of_every_prompt(
    body: dict[str, Any], prompt_tokens: int, max_output: int
) -> None:
    est = estimate_call(Catalog.load(), MODEL, call(**body).admission_request)
    assert (est.prompt_tokens, est.max_output_tokens) == (prompt_tokens, max_output)
