"""Token usage of one call, and the one list of token kinds everything else follows.

:class:`Usage` is read from Gemini's ``usageMetadata``. Its fields *are* the list of token
kinds: each field's metadata says which ``usageMetadata`` count feeds it, whether reports sum it,
its label on the tokens metric, and where it lands in OpenAI's usage objects. The ledger
columns, the hourly rollups, the report rows, the metrics and the OpenAI usage objects are all
built from :data:`TOKEN_KINDS`; a new kind is one new field here (and a migration).

Gemini's counts are cumulative within a stream, so a stream's usage is the LAST
``usageMetadata`` seen, never a sum (docs/gemini-protocol.md, "Usage").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "REPORTED_KINDS",
    "TOKEN_KINDS",
    "TokenKind",
    "Usage",
    "openai_usage_counts",
    "sum_usage",
]


@dataclass(frozen=True, slots=True)
class TokenKind:
    name: str  # Usage field, ledger column, report and rollup key
    source: tuple[str, str | None]  # (usageMetadata count, modality or None for the whole count)
    metric: str | None  # label on gemini_meter_tokens_total; None: not exported there
    reported: bool  # summed in rollups and usage reports
    # Where the kind adds up in OpenAI's usage objects: dotted paths, per API.
    chat: tuple[str, ...] = ()
    responses: tuple[str, ...] = ()


def _kind(
    source: tuple[str, str | None],
    metric: str | None = None,
    *,
    reported: bool = False,
    chat: tuple[str, ...] = (),
    responses: tuple[str, ...] = (),
) -> Any:
    meta = {"source": source, "metric": metric, "reported": reported, "chat": chat,
            "responses": responses}  # fmt: skip
    return field(default=0, metadata=meta)


def _int(value: Any) -> int:
    # Absent fields mean zero; anything non-integral is treated as absent rather than
    # trusted, so a malformed reply can never make the meter raise.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def _modality(details: Any, modality: str) -> int:
    if not isinstance(details, list):
        return 0
    return sum(
        _int(d.get("tokenCount"))
        for d in details
        if isinstance(d, Mapping) and d.get("modality") == modality
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens by kind. ``cached_tokens`` is a part of ``prompt_tokens``; ``output_tokens``
    never includes ``thinking_tokens`` (Gemini's candidates exclude thoughts). The audio and
    image kinds are parts of the prompt, cached or output counts, priced apart by some models."""

    prompt_tokens: int = _kind(
        ("promptTokenCount", None), "prompt", reported=True,
        chat=("prompt_tokens",), responses=("input_tokens",),
    )  # fmt: skip
    cached_tokens: int = _kind(
        ("cachedContentTokenCount", None), "cached", reported=True,
        chat=("prompt_tokens_details.cached_tokens",),
        responses=("input_tokens_details.cached_tokens",),
    )  # fmt: skip
    output_tokens: int = _kind(
        ("candidatesTokenCount", None), "output", reported=True,
        chat=("completion_tokens",), responses=("output_tokens",),
    )  # fmt: skip
    thinking_tokens: int = _kind(
        ("thoughtsTokenCount", None), "thinking", reported=True,
        chat=("completion_tokens", "completion_tokens_details.reasoning_tokens"),
        responses=("output_tokens", "output_tokens_details.reasoning_tokens"),
    )  # fmt: skip
    # Tool-use prompt tokens count as prompt in OpenAI's objects, so their sums hold.
    tool_use_prompt_tokens: int = _kind(
        ("toolUsePromptTokenCount", None), "tool_use", reported=True,
        chat=("prompt_tokens",), responses=("input_tokens",),
    )  # fmt: skip
    audio_prompt_tokens: int = _kind(
        ("promptTokensDetails", "AUDIO"), "audio", reported=True,
        chat=("prompt_tokens_details.audio_tokens",),
    )  # fmt: skip
    cached_audio_tokens: int = _kind(("cacheTokensDetails", "AUDIO"))
    # Image and video parts of the prompt: the Live API prices them apart from text
    # (input_image_video); other models bill them at the input rate with the text.
    image_prompt_tokens: int = _kind(("promptTokensDetails", "IMAGE"))
    video_prompt_tokens: int = _kind(("promptTokensDetails", "VIDEO"))
    output_image_tokens: int = _kind(("candidatesTokensDetails", "IMAGE"))
    output_audio_tokens: int = _kind(
        ("candidatesTokensDetails", "AUDIO"), chat=("completion_tokens_details.audio_tokens",)
    )
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return (
            self.prompt_tokens
            + self.output_tokens
            + self.thinking_tokens
            + self.tool_use_prompt_tokens
        )

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any]) -> Usage:
        """Parse a ``usageMetadata`` object (camelCase, as Gemini replies)."""
        counts: dict[str, Any] = {}
        for kind in TOKEN_KINDS:
            name, modality = kind.source
            value = md.get(name)
            counts[kind.name] = _int(value) if modality is None else _modality(value, modality)
        return cls(**counts)

    @classmethod
    def estimate(cls, prompt_tokens: int, output_tokens: int = 0) -> Usage:
        return cls(prompt_tokens=prompt_tokens, output_tokens=output_tokens, estimated=True)

    def counts(self) -> dict[str, int]:
        """Every token kind by name (the ledger's token columns)."""
        return {kind.name: getattr(self, kind.name) for kind in TOKEN_KINDS}

    def __add__(self, other: Usage) -> Usage:
        """Two calls' usage together (one request that made several upstream calls): every
        count added, estimated if either was."""
        counts = {k.name: getattr(self, k.name) + getattr(other, k.name) for k in TOKEN_KINDS}
        return Usage(**counts, estimated=self.estimated or other.estimated)


TOKEN_KINDS: tuple[TokenKind, ...] = tuple(
    TokenKind(f.name, **f.metadata) for f in fields(Usage) if f.name != "estimated"
)
# The kinds the rollups and usage reports sum, then the total.
REPORTED_KINDS: tuple[str, ...] = (*(k.name for k in TOKEN_KINDS if k.reported), "total_tokens")


def sum_usage(usages: Iterable[Usage]) -> Usage:
    """The usage of several upstream calls together (never of one stream's events: those
    counts are cumulative)."""
    total = Usage()
    for usage in usages:
        total = total + usage
    return total


def openai_usage_counts(usage: Usage, api: str) -> dict[str, int]:
    """Each dotted OpenAI usage path of ``api`` ("chat" or "responses") with its count."""
    out: dict[str, int] = {}
    for kind in TOKEN_KINDS:
        for path in getattr(kind, api):
            out[path] = out.get(path, 0) + getattr(usage, kind.name)
    return out
