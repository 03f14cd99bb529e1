"""OpenAI embeddings request → batchEmbedContents, and the reply back (pure tables)."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import orjson
import pytest
from openai.types import CreateEmbeddingResponse

from proxy.errors import BadRequest, UpstreamError
from proxy.estimate import estimate_text_tokens
from proxy.openai.embeddings import (
    EmbeddingsCall,
    embeddings_request_to_gemini,
    gemini_embeddings_to_openai,
)
from tests.fakes.gemini import FIXTURES

BATCH = orjson.loads((FIXTURES / "batch_embed_contents.json").read_bytes())


def call(**body: Any) -> EmbeddingsCall:
    body.setdefault("model", "gemini-embedding-001")
    body.setdefault("input", ["first", "second"])
    return embeddings_request_to_gemini(body)


def entry(text: str, model: str = "models/gemini-embedding-001", **extra: Any) -> dict[str, Any]:
    return {"model": model, "content": {"parts": [{"text": text}]}, **extra}


# (id, body fields, expected batchEmbedContents body)
REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("string", {"input": "hello"}, {"requests": [entry("hello")]}),
    ("list", {}, {"requests": [entry("first"), entry("second")]}),
    (
        "prefixed_model",
        {"model": "models/text-embedding-004", "input": "a"},
        {"requests": [entry("a", "models/text-embedding-004")]},
    ),
    (
        "dimensions",
        {"input": "a", "dimensions": 256},
        {"requests": [entry("a", outputDimensionality=256)]},
    ),
    ("token_array", {"input": [15339, 1917]}, {"requests": [entry("hello world")]}),
    (
        "token_arrays",
        {"input": [[15339, 1917], [71, 19010, 385]]},
        {"requests": [entry("hello world"), entry("héllo")]},
    ),
    (
        "nulls",
        {"input": "a", "dimensions": None, "encoding_format": None, "user": None},
        {"requests": [entry("a")]},
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_request(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert call(**body).request == expected


def test_call_fields() -> None:
    c = call(input="a", dimensions=8, encoding_format="base64", user="u-1")
    assert (c.model, c.inputs, c.dimensions, c.encoding_format, c.user) == (
        "gemini-embedding-001",
        ["a"],
        8,
        "base64",
        "u-1",
    )
    assert call().encoding_format == "float"


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("token_id_unknown", {"input": [15339, 100261]}, "input"),
    ("token_arrays_mixed", {"input": [[15339], "text"]}, "input[1]"),
    ("token_array_empty", {"input": [[15339], []]}, "input[1]"),
    ("empty_list", {"input": []}, "input"),
    ("empty_string", {"input": ""}, "input"),
    ("missing_input", {"input": None}, "input"),
    ("non_string_item", {"input": ["a", {"x": 1}]}, "input[1]"),
    ("bad_encoding", {"encoding_format": "binary"}, "encoding_format"),
    ("dimensions_zero", {"dimensions": 0}, "dimensions"),
    ("dimensions_type", {"dimensions": "256"}, "dimensions"),
    ("missing_model", {"model": None}, "model"),
    ("unknown_parameter", {"task_type": "RETRIEVAL_QUERY"}, "task_type"),
]


@pytest.mark.parametrize(("body", "param"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_request(body: dict[str, Any], param: str) -> None:
    full: dict[str, Any] = {"model": "gemini-embedding-001", "input": "a", **body}
    with pytest.raises(BadRequest) as info:
        embeddings_request_to_gemini({k: v for k, v in full.items() if v is not None})
    assert info.value.param == param
    assert info.value.status_code == 400


def test_unknown_token_id_message_names_id_and_encoding() -> None:
    with pytest.raises(BadRequest, match="token id 100261 does not exist in cl100k_base"):
        embeddings_request_to_gemini({"model": "m", "input": [[15339], [100261]]})


def test_reply_float() -> None:
    out = CreateEmbeddingResponse.model_validate(
        gemini_embeddings_to_openai(BATCH, call(), prompt_tokens=4)
    )
    assert out.model == "gemini-embedding-001"
    assert [(d.index, d.object, d.embedding) for d in out.data] == [
        (0, "embedding", [0.011, -0.022, 0.033, -0.044]),
        (1, "embedding", [-0.055, 0.066, -0.077, 0.088]),
    ]
    assert (out.usage.prompt_tokens, out.usage.total_tokens) == (4, 4)


def test_reply_base64_is_little_endian_float32() -> None:
    out = gemini_embeddings_to_openai(BATCH, call(encoding_format="base64"), prompt_tokens=4)
    for item, source in zip(out["data"], BATCH["embeddings"], strict=True):
        raw = base64.b64decode(item["embedding"])
        values = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert values == pytest.approx(source["values"], rel=1e-6)
    # The OpenAI SDK's model takes the string as is; its client decodes it.
    CreateEmbeddingResponse.model_construct(**out)


def test_reply_normalised_when_dimensions_given() -> None:
    out = gemini_embeddings_to_openai(BATCH, call(dimensions=4), prompt_tokens=4)
    for item in out["data"]:
        assert math.fsum(v * v for v in item["embedding"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "reply",
    [{}, {"embeddings": [{"values": [0.1]}]}, {"embeddings": [{"values": [0.1]}, {"values": "x"}]}],
    ids=["missing", "too_few", "not_numbers"],
)
def test_reply_malformed_is_upstream_error(reply: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError):
        gemini_embeddings_to_openai(reply, call(), prompt_tokens=1)


def test_batches_respect_gemini_limit() -> None:
    c = call(input=[f"t{i}" for i in range(250)])
    batches = c.batches()
    assert [len(b["requests"]) for b in batches] == [100, 100, 50]
    assert [r for b in batches for r in b["requests"]] == c.request["requests"]


def test_batches_take_the_routes_model() -> None:
    c = call(model="Models/Gemini-Embedding-001", input=["a"])
    [batch] = c.batches(model="gemini-embedding-001")
    assert batch == {"requests": [entry("a")]}
    assert c.request["requests"][0]["model"] == "models/gemini-embedding-001"


@pytest.mark.parametrize(
    ("texts", "expected"),
    [([], 0), ([""], 0), (["a"], 1), (["abcd"], 1), (["abcde"], 2), (["abcd", "abcdefgh"], 3)],
    ids=["none", "empty", "one_char", "four_chars", "five_chars", "summed_per_text"],
)
def test_estimate_tokens(texts: list[str], expected: int) -> None:
    # One rule for both APIs: the native batchEmbedContents route estimates the same way.
    assert estimate_text_tokens(texts) == expected
