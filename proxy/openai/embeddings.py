"""Embeddings: OpenAI ``/v1/embeddings`` request → Gemini ``batchEmbedContents``, and back.

- ``input``: a string, a list of strings, or token ids (one array or a list of arrays, as
  LangChain's ``OpenAIEmbeddings()`` sends by default), decoded back to text with the client's
  tiktoken encoding (:mod:`proxy.openai.tokens`).
- ``dimensions`` → ``outputDimensionality`` on every request. Gemini normalises only full-size
  vectors, while OpenAI clients assume unit vectors (dot product = cosine similarity), so
  vectors are L2-normalised here when ``dimensions`` was given.
- ``encoding_format``: ``float`` (default) or ``base64`` (the packed little-endian float32 bytes,
  as OpenAI sends; the OpenAI Python SDK asks for it by default and decodes it).
- ``user`` is recorded, never sent. Gemini's ``taskType`` and ``title`` are left unset.
- Gemini returns no token counts: ``usage.prompt_tokens`` comes from the caller, either
  countTokens or ``metering.estimate.estimate_text_tokens``, and the ledger row is then
  marked estimated.
- Gemini takes at most 100 requests per batch: :meth:`EmbeddingsCall.batches` splits the body;
  the route concatenates the replies' ``embeddings`` in order.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from proxy.errors import BadRequest, UpstreamError
from proxy.metering.ledger_event import END_USER_MAX_LENGTH
from proxy.openai.tokens import decode_token_arrays, is_token_input, token_arrays
from proxy.openai.validate import (
    opt_int,
    opt_str,
    opt_text,
    req_list,
    req_object,
    req_str,
    unknown_parameter,
)
from proxy.wire.gemini import BatchEmbedContentsRequest, EmbedContentRequest
from proxy.wire.openai import CreateEmbeddingResponse, Embedding

__all__ = [
    "GEMINI_BATCH_LIMIT",
    "EmbeddingsCall",
    "embeddings_request_to_gemini",
    "gemini_embeddings_to_openai",
]

GEMINI_BATCH_LIMIT: Final = 100
_FIELDS: Final = frozenset({"model", "input", "dimensions", "encoding_format", "user"})


@dataclass(frozen=True)
class EmbeddingsCall:
    model: str  # as the client gave it
    inputs: list[str]
    encoding_format: Literal["float", "base64"]
    dimensions: int | None
    user: str | None  # recorded in the ledger, never sent upstream
    request: dict[str, Any]  # the whole batchEmbedContents body

    def batches(
        self, *, model: str | None = None, limit: int = GEMINI_BATCH_LIMIT
    ) -> list[dict[str, Any]]:
        """The body split into batchEmbedContents bodies of at most ``limit`` requests.

        ``model``: the normalised model id the route posts to; each request must name the
        same model as the URL, so pass it when it may differ from :attr:`model`."""
        requests: list[dict[str, Any]] = self.request["requests"]
        if model is not None:
            resource = f"models/{model.removeprefix('models/')}"
            requests = [{**r, "model": resource} for r in requests]
        return [{"requests": requests[i : i + limit]} for i in range(0, len(requests), limit)]


def _inputs(value: Any) -> list[str]:
    if is_token_input(value):
        return decode_token_arrays(token_arrays(value, "input"))
    if isinstance(value, str):
        items: list[Any] = [value]
    else:
        items = req_list(value, "input", non_empty=True)
    texts = [
        req_str(v, "input" if isinstance(value, str) else f"input[{i}]")
        for i, v in enumerate(items)
    ]
    if not all(texts):
        raise BadRequest(
            "'input' must not contain empty strings.", param="input", code="invalid_value"
        )
    return texts


def embeddings_request_to_gemini(body: Any) -> EmbeddingsCall:
    """Validate an OpenAI embeddings request and build the batchEmbedContents body."""
    obj = req_object(body, "body")
    for name in obj:
        if name not in _FIELDS:
            raise unknown_parameter(name)
    model = req_str(obj.get("model"), "model", non_empty=True)
    inputs = _inputs(obj.get("input"))
    dimensions = opt_int(obj.get("dimensions"), "dimensions", minimum=1)
    encoding = opt_str(obj.get("encoding_format"), "encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest(
            f"Invalid 'encoding_format': {encoding!r}; expected 'float' or 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    user = opt_text(obj.get("user"), "user", max_length=END_USER_MAX_LENGTH)
    # The id as the routes normalise it (no path, lower case): each request must name the
    # model the URL names.
    resource = f"models/{model.strip().rsplit('/', 1)[-1].strip().lower()}"
    requests: list[EmbedContentRequest] = []
    for text in inputs:
        item: EmbedContentRequest = {"model": resource, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            item["outputDimensionality"] = dimensions
        requests.append(item)
    batch: BatchEmbedContentsRequest = {"requests": requests}
    return EmbeddingsCall(
        model=model,
        inputs=inputs,
        encoding_format=cast(Literal["float", "base64"], encoding),
        dimensions=dimensions,
        user=user,
        request=cast(dict[str, Any], batch),
    )


def _values(embedding: Any, index: int) -> list[float]:
    values = embedding.get("values") if isinstance(embedding, Mapping) else None
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise UpstreamError(f"Upstream embedding {index} has no numeric 'values'.")
    return [float(v) for v in values]


def _normalised(values: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(v * v for v in values))
    return [v / norm for v in values] if norm > 0 else values


def gemini_embeddings_to_openai(
    reply: Mapping[str, Any], call: EmbeddingsCall, *, prompt_tokens: int
) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse`` for a batchEmbedContents reply (or the
    concatenation of the replies to :meth:`EmbeddingsCall.batches`)."""
    embeddings = reply.get("embeddings")
    if not isinstance(embeddings, list) or len(embeddings) != len(call.inputs):
        got = len(embeddings) if isinstance(embeddings, list) else 0
        raise UpstreamError(f"Upstream returned {got} embeddings for {len(call.inputs)} inputs.")
    data: list[Embedding] = []
    for i, embedding in enumerate(embeddings):
        values = _values(embedding, i)
        if call.dimensions is not None:
            values = _normalised(values)
        vector: list[float] | str = values
        if call.encoding_format == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": vector})
    response: CreateEmbeddingResponse = {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return cast(dict[str, Any], response)
