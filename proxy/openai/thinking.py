"""``reasoning_effort`` and Google's ``thinking_config`` passthrough → Gemini ``thinkingConfig``.

| reasoning_effort | Gemini 2.5 ``thinkingBudget`` | Gemini 3 ``thinkingLevel`` |
|---|---|---|
| ``none``, ``minimal`` | 0 (128 on 2.5 Pro, which cannot turn thinking off) | ``low`` |
| ``low`` | 1024 | ``low`` |
| ``medium`` | 8192 | ``high`` |
| ``high``, ``xhigh``, ``max`` | 24576 | ``high`` |

The budgets are the ones Google's own OpenAI-compatible layer uses. Gemini 3 models (id
starting ``gemini-3``) take a level instead of a budget; ``medium`` rounds up because Gemini 3
Pro accepts only ``low`` and ``high``.

Google's compat form ``extra_body={"google": {"thinking_config": {...}}}`` (which the OpenAI SDK
merges into the body as a top-level ``google`` key; the doubly nested ``extra_body.google`` seen
in Google's examples is accepted too) passes ``thinking_budget``, ``thinking_level`` and
``include_thoughts`` through unchanged. Setting it together with ``reasoning_effort`` is a 400,
as on Google's layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from proxy.errors import BadRequest
from proxy.openai.validate import opt_bool, opt_int, opt_object, opt_str
from proxy.wire.gemini import ThinkingConfig, ThinkingLevel

__all__ = ["is_gemini3", "thinking_config"]

_BUDGETS: Final = {
    "none": 0,
    "minimal": 0,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": 24576,
}
_LEVELS: Final[dict[str, ThinkingLevel]] = {
    "none": "low",
    "minimal": "low",
    "low": "low",
    "medium": "high",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
_PRO_25_MIN_BUDGET: Final = 128
_LEVEL_VALUES: Final[dict[str, ThinkingLevel]] = {
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
}


def _model_id(model: str) -> str:
    return model.removeprefix("models/").lower()


def is_gemini3(model: str) -> bool:
    return _model_id(model).startswith("gemini-3")


def _from_effort(effort: str, model: str, param: str) -> ThinkingConfig:
    if effort not in _BUDGETS:
        raise BadRequest(
            f"Invalid '{param}': {effort!r}; expected one of {', '.join(_BUDGETS)}.",
            param=param,
            code="invalid_value",
        )
    if is_gemini3(model):
        return {"thinkingLevel": _LEVELS[effort]}
    budget = _BUDGETS[effort]
    if budget == 0 and _model_id(model).startswith("gemini-2.5-pro"):
        budget = _PRO_25_MIN_BUDGET
    return {"thinkingBudget": budget}


def _from_google(spec: Mapping[str, Any], param: str) -> ThinkingConfig:
    config: ThinkingConfig = {}
    for key, value in spec.items():
        p = f"{param}.{key}"
        if key in ("thinking_budget", "thinkingBudget"):
            budget = opt_int(value, p, minimum=-1)  # -1: dynamic thinking
            if budget is not None:
                config["thinkingBudget"] = budget
        elif key in ("include_thoughts", "includeThoughts"):
            include = opt_bool(value, p)
            if include is not None:
                config["includeThoughts"] = include
        elif key in ("thinking_level", "thinkingLevel"):
            level = opt_str(value, p)
            if level is not None:
                if level.lower() not in _LEVEL_VALUES:
                    raise BadRequest(
                        f"Invalid '{p}': {level!r}; expected one of {', '.join(_LEVEL_VALUES)}.",
                        param=p,
                        code="invalid_value",
                    )
                config["thinkingLevel"] = _LEVEL_VALUES[level.lower()]
        else:
            raise BadRequest(f"Unrecognized parameter '{p}'.", param=p, code="unknown_parameter")
    return config


def thinking_config(
    effort: Any,
    google_thinking: Any,
    google_param: str,
    model: str,
    effort_param: str = "reasoning_effort",
) -> ThinkingConfig | None:
    """The ``thinkingConfig`` for the request, or None to leave the model's default.
    ``effort_param`` names the effort in a 400 (``reasoning.effort`` on the Responses API)."""
    level = opt_str(effort, effort_param)
    spec = opt_object(google_thinking, google_param)
    if level is not None and spec is not None:
        raise BadRequest(
            f"Set either '{effort_param}' or '{google_param}', not both.",
            param=effort_param,
            code="invalid_value",
        )
    if spec is not None:
        return _from_google(spec, google_param)
    return None if level is None else _from_effort(level, model, effort_param)
