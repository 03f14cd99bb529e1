"""Top-level chat parameters: which are translated, dropped or refused, and the
``generationConfig`` built from the sampling ones.

| OpenAI | generationConfig |
|---|---|
| ``temperature`` (0-2), ``top_p`` (0-1), ``seed`` | ``temperature``, ``topP``, ``seed`` |
| ``top_k`` (an extension some clients send) | ``topK`` |
| ``n`` > 1 | ``candidateCount`` |
| ``max_completion_tokens``, else ``max_tokens`` | ``maxOutputTokens`` |
| ``stop`` (string or list) | ``stopSequences`` |
| ``presence_penalty``, ``frequency_penalty`` (-2-2) | ``presencePenalty``, ``frequencyPenalty`` |
| ``response_format`` | see :mod:`proxy.openai.schema` |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from proxy.errors import BadRequest
from proxy.openai.schema import response_format_to_gemini
from proxy.openai.validate import (
    opt_int,
    opt_number,
    opt_object,
    req_list,
    req_str,
    unknown_parameter,
)
from proxy.wire.gemini import GenerationConfig

__all__ = [
    "DROPPED_PARAMETERS",
    "REFUSED_PARAMETERS",
    "TRANSLATED_PARAMETERS",
    "check_parameters",
    "generation_config",
    "google_extension",
]

TRANSLATED_PARAMETERS: Final = frozenset(
    {
        "model", "messages", "stream", "stream_options", "n", "temperature", "top_p", "top_k",
        "max_tokens", "max_completion_tokens", "stop", "seed", "presence_penalty",
        "frequency_penalty", "reasoning_effort", "response_format", "tools", "tool_choice",
        "user", "safety_identifier", "google", "extra_body",
    }
)  # fmt: skip
# Accepted and ignored: hints or OpenAI-side features with no effect on the generated text.
DROPPED_PARAMETERS: Final = frozenset(
    {
        "parallel_tool_calls", "prediction", "service_tier", "store", "metadata",
        "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "verbosity",
    }
)  # fmt: skip
# Refused (400 naming them) unless null / false / empty: a client relying on them would get a
# silently different answer.
REFUSED_PARAMETERS: Final = frozenset(
    {
        "logit_bias", "logprobs", "top_logprobs", "audio", "functions", "function_call",
        "web_search_options", "moderation", "modalities",
    }
)  # fmt: skip


def _unsupported(name: str, value: Any) -> None:
    if value in (None, False, 0, "", [], {}) or (name == "modalities" and value == ["text"]):
        return
    raise BadRequest(
        f"Unsupported parameter: '{name}' is not supported by this Gemini proxy.",
        param=name,
        code="unsupported_parameter",
    )


def _stop(value: Any) -> list[str]:
    if value is None or isinstance(value, str):
        return [value] if value else []
    items = req_list(value, "stop")
    return [s for i, s in enumerate(items) if req_str(s, f"stop[{i}]")]


def generation_config(body: Mapping[str, Any], n: int) -> GenerationConfig:
    config: GenerationConfig = {}
    if (temperature := opt_number(body.get("temperature"), "temperature", 0, 2)) is not None:
        config["temperature"] = temperature
    if (top_p := opt_number(body.get("top_p"), "top_p", 0, 1)) is not None:
        config["topP"] = top_p
    if (top_k := opt_int(body.get("top_k"), "top_k", minimum=1)) is not None:
        config["topK"] = top_k
    if n > 1:
        config["candidateCount"] = n
    max_tokens = opt_int(body.get("max_tokens"), "max_tokens", minimum=1)
    max_completion = opt_int(body.get("max_completion_tokens"), "max_completion_tokens", minimum=1)
    # The newer name wins when both are set; Gemini's limit, like OpenAI's, covers thinking.
    if (limit := max_completion or max_tokens) is not None:
        config["maxOutputTokens"] = limit
    if stop := _stop(body.get("stop")):
        config["stopSequences"] = stop
    if (seed := opt_int(body.get("seed"), "seed")) is not None:
        config["seed"] = seed
    if (
        presence := opt_number(body.get("presence_penalty"), "presence_penalty", -2, 2)
    ) is not None:
        config["presencePenalty"] = presence
    if (
        frequency := opt_number(body.get("frequency_penalty"), "frequency_penalty", -2, 2)
    ) is not None:
        config["frequencyPenalty"] = frequency
    config.update(response_format_to_gemini(body.get("response_format")))
    return config


def google_extension(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """Google's compat ``extra_body={"google": {...}}`` and the param path naming it."""
    google = opt_object(body.get("google"), "google")
    if google is not None:
        return google, "google"
    extra = opt_object(body.get("extra_body"), "extra_body") or {}
    for key in extra:
        if key != "google":
            raise unknown_parameter(f"extra_body.{key}")
    return opt_object(extra.get("google"), "extra_body.google") or {}, "extra_body.google"


def check_parameters(body: Mapping[str, Any]) -> None:
    """400 for an unknown parameter, or a refused one set to something meaningful."""
    for name, value in body.items():
        if name in REFUSED_PARAMETERS:
            _unsupported(name, value)
        elif name not in TRANSLATED_PARAMETERS and name not in DROPPED_PARAMETERS:
            raise unknown_parameter(name)
