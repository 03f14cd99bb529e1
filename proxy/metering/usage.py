"""Token usage of one call, read from Gemini's ``usageMetadata``.

Gemini's counts are cumulative within a stream, so a stream's usage is the LAST
``usageMetadata`` seen, never a sum (see docs/gemini-protocol.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Usage"]


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
    never includes ``thinking_tokens`` (Gemini's candidates exclude thoughts)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    tool_use_prompt_tokens: int = 0
    # Per-modality parts that are priced differently from text.
    prompt_audio_tokens: int = 0
    cached_audio_tokens: int = 0
    output_image_tokens: int = 0
    output_audio_tokens: int = 0
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
        return cls(
            prompt_tokens=_int(md.get("promptTokenCount")),
            cached_tokens=_int(md.get("cachedContentTokenCount")),
            output_tokens=_int(md.get("candidatesTokenCount")),
            thinking_tokens=_int(md.get("thoughtsTokenCount")),
            tool_use_prompt_tokens=_int(md.get("toolUsePromptTokenCount")),
            prompt_audio_tokens=_modality(md.get("promptTokensDetails"), "AUDIO"),
            cached_audio_tokens=_modality(md.get("cacheTokensDetails"), "AUDIO"),
            output_image_tokens=_modality(md.get("candidatesTokensDetails"), "IMAGE"),
            output_audio_tokens=_modality(md.get("candidatesTokensDetails"), "AUDIO"),
        )

    @classmethod
    def estimate(cls, prompt_tokens: int, output_tokens: int = 0) -> Usage:
        return cls(prompt_tokens=prompt_tokens, output_tokens=output_tokens, estimated=True)
