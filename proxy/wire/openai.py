"""OpenAI request, reply, chunk, embeddings, models and error shapes, as the proxy uses them.

The ground truth is the ``openai`` SDK's own types (``openai.types.chat`` and friends): replies
built from these dicts must pass ``ChatCompletion.model_validate`` and its siblings. Request
shapes are documentation of what the translators read; the bodies themselves are untrusted and
validated field by field.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionRequest",
    "Choice",
    "ChoiceDelta",
    "ChunkChoice",
    "CompletionTokensDetails",
    "CompletionUsage",
    "CreateEmbeddingResponse",
    "DeltaToolCall",
    "Embedding",
    "EmbeddingUsage",
    "EmbeddingsRequest",
    "ErrorEnvelope",
    "ErrorObject",
    "FinishReason",
    "GoogleToolCallExtra",
    "Model",
    "ModelList",
    "PromptTokensDetails",
    "ToolCall",
    "ToolCallExtraContent",
    "ToolCallFunction",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


# --- requests (read, never trusted) ---------------------------------------------------------


class ChatCompletionRequest(TypedDict, total=False):
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    stream_options: dict[str, Any]
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    max_completion_tokens: int
    stop: str | list[str]
    seed: int
    presence_penalty: float
    frequency_penalty: float
    reasoning_effort: str
    response_format: dict[str, Any]
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    user: str


class EmbeddingsRequest(TypedDict, total=False):
    model: str
    input: str | list[str]
    dimensions: int
    encoding_format: Literal["float", "base64"]
    user: str


# --- chat replies -----------------------------------------------------------------------------


class ToolCallFunction(TypedDict):
    name: str
    arguments: str  # JSON text


class GoogleToolCallExtra(TypedDict):
    thought_signature: str


class ToolCallExtraContent(TypedDict):
    """Google's compat-layer carrier of a Gemini 3 thought signature on a tool call."""

    google: GoogleToolCallExtra


class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: ToolCallFunction
    extra_content: NotRequired[ToolCallExtraContent]


class ChatCompletionMessage(TypedDict):
    role: Literal["assistant"]
    content: str | None
    refusal: None
    tool_calls: NotRequired[list[ToolCall]]


class Choice(TypedDict):
    index: int
    message: ChatCompletionMessage
    finish_reason: FinishReason
    logprobs: None


class PromptTokensDetails(TypedDict):
    cached_tokens: int
    audio_tokens: int


class CompletionTokensDetails(TypedDict):
    reasoning_tokens: int
    audio_tokens: int


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails
    cost: NotRequired[Any]  # USD as a JSON number in positional notation (orjson.Fragment)


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


# --- chat stream chunks -------------------------------------------------------------------------


class DeltaToolCallFunction(TypedDict):
    name: str
    arguments: str


class DeltaToolCall(TypedDict):
    index: int  # running counter per choice
    id: str
    type: Literal["function"]
    function: DeltaToolCallFunction
    extra_content: NotRequired[ToolCallExtraContent]


class ChoiceDelta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str
    tool_calls: list[DeltaToolCall]


class ChunkChoice(TypedDict):
    index: int
    delta: ChoiceDelta
    finish_reason: FinishReason | None
    logprobs: None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]  # empty on the final usage chunk
    usage: NotRequired[CompletionUsage]


# --- embeddings, models, errors ------------------------------------------------------------------


class Embedding(TypedDict):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(TypedDict):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[Model]


class ErrorObject(TypedDict):
    message: str
    type: str  # invalid_request_error, authentication_error, rate_limit_error, api_error, ...
    param: str | None
    code: str | None


class ErrorEnvelope(TypedDict):
    error: ErrorObject
