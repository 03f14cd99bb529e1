"""Gemini v1beta request and reply shapes (camelCase), as far as the proxy builds or reads them.

See docs/gemini-protocol.md §2-§6 and ``google.genai.types`` for the full models. Every class is
``total=False``: Gemini omits absent fields, and "absent" means zero / empty.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "BatchEmbedContentsRequest",
    "BatchEmbedContentsResponse",
    "Blob",
    "Candidate",
    "Content",
    "ContentEmbedding",
    "EmbedContentRequest",
    "ErrorBody",
    "ErrorEnvelope",
    "FileData",
    "FunctionCall",
    "FunctionCallingConfig",
    "FunctionDeclaration",
    "FunctionResponse",
    "GenerateContentRequest",
    "GenerateContentResponse",
    "GenerationConfig",
    "ListModelsResponse",
    "ModalityTokenCount",
    "Model",
    "Part",
    "PromptFeedback",
    "ThinkingConfig",
    "Tool",
    "ToolConfig",
    "UsageMetadata",
]

Role = Literal["user", "model"]
FunctionCallingMode = Literal["AUTO", "ANY", "NONE", "VALIDATED"]
ThinkingLevel = Literal["minimal", "low", "medium", "high"]


class Blob(TypedDict):
    mimeType: str
    data: str  # base64


class FileData(TypedDict):
    mimeType: str
    fileUri: str


class FunctionCall(TypedDict, total=False):
    name: str
    args: dict[str, Any]
    id: str


class FunctionResponse(TypedDict, total=False):
    name: str
    response: dict[str, Any]
    id: str


class Part(TypedDict, total=False):
    text: str
    inlineData: Blob
    fileData: FileData
    functionCall: FunctionCall
    functionResponse: FunctionResponse
    executableCode: dict[str, Any]
    codeExecutionResult: dict[str, Any]
    thought: bool
    thoughtSignature: str  # opaque base64; must come back unchanged (Gemini 3)


class Content(TypedDict, total=False):
    role: Role
    parts: list[Part]


class FunctionDeclaration(TypedDict, total=False):
    name: str
    description: str
    parameters: dict[str, Any]  # OpenAPI subset
    parametersJsonSchema: dict[str, Any]  # standard JSON Schema


class Tool(TypedDict, total=False):
    functionDeclarations: list[FunctionDeclaration]
    googleSearch: dict[str, Any]
    codeExecution: dict[str, Any]
    urlContext: dict[str, Any]


class FunctionCallingConfig(TypedDict, total=False):
    mode: FunctionCallingMode
    allowedFunctionNames: list[str]


class ToolConfig(TypedDict, total=False):
    functionCallingConfig: FunctionCallingConfig


class ThinkingConfig(TypedDict, total=False):
    thinkingBudget: int
    includeThoughts: bool
    thinkingLevel: ThinkingLevel


class GenerationConfig(TypedDict, total=False):
    temperature: float
    topP: float
    topK: int
    candidateCount: int
    maxOutputTokens: int
    stopSequences: list[str]
    seed: int
    presencePenalty: float
    frequencyPenalty: float
    responseMimeType: str
    responseSchema: dict[str, Any]
    responseJsonSchema: dict[str, Any]
    responseModalities: list[str]
    thinkingConfig: ThinkingConfig


class GenerateContentRequest(TypedDict, total=False):
    contents: list[Content]
    systemInstruction: Content
    tools: list[Tool]
    toolConfig: ToolConfig
    generationConfig: GenerationConfig
    safetySettings: list[dict[str, str]]
    cachedContent: str


class ModalityTokenCount(TypedDict, total=False):
    modality: str  # TEXT | IMAGE | AUDIO | VIDEO | DOCUMENT
    tokenCount: int


class UsageMetadata(TypedDict, total=False):
    promptTokenCount: int
    cachedContentTokenCount: int
    candidatesTokenCount: int
    thoughtsTokenCount: int
    toolUsePromptTokenCount: int
    totalTokenCount: int
    promptTokensDetails: list[ModalityTokenCount]
    cacheTokensDetails: list[ModalityTokenCount]
    candidatesTokensDetails: list[ModalityTokenCount]
    toolUsePromptTokensDetails: list[ModalityTokenCount]
    trafficType: str


class Candidate(TypedDict, total=False):
    content: Content
    finishReason: str
    index: int
    safetyRatings: list[dict[str, Any]]
    citationMetadata: dict[str, Any]
    groundingMetadata: dict[str, Any]
    avgLogprobs: float


class PromptFeedback(TypedDict, total=False):
    blockReason: str
    safetyRatings: list[dict[str, Any]]


class GenerateContentResponse(TypedDict, total=False):
    """One reply, or one stream event (whose parts are deltas)."""

    candidates: list[Candidate]
    promptFeedback: PromptFeedback
    usageMetadata: UsageMetadata
    modelVersion: str
    responseId: str


class ErrorBody(TypedDict, total=False):
    code: int
    message: str
    status: str  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...
    details: list[dict[str, Any]]  # each with "@type"; ErrorInfo has "reason"


class ErrorEnvelope(TypedDict):
    error: ErrorBody


class EmbedContentRequest(TypedDict, total=False):
    model: str  # "models/{id}"
    content: Content
    taskType: str
    title: str
    outputDimensionality: int


class BatchEmbedContentsRequest(TypedDict):
    requests: list[EmbedContentRequest]


class ContentEmbedding(TypedDict):
    values: list[float]


class BatchEmbedContentsResponse(TypedDict):
    embeddings: list[ContentEmbedding]


class Model(TypedDict, total=False):
    name: str  # "models/{id}"
    baseModelId: str
    version: str
    displayName: str
    description: str
    inputTokenLimit: int
    outputTokenLimit: int
    supportedGenerationMethods: list[str]
    thinking: bool


class ListModelsResponse(TypedDict, total=False):
    models: list[Model]
    nextPageToken: str
