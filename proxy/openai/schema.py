"""JSON Schema for Gemini, and ``response_format`` → response MIME type and schema.

Current Gemini takes standard JSON Schema in ``parametersJsonSchema`` (function declarations)
and ``responseJsonSchema`` (structured output), so schemas pass through nearly untouched rather
than being squeezed into the older OpenAPI-subset ``parameters`` / ``responseSchema`` fields.
The only cleanup is dropping the top-level ``$schema`` dialect marker, which Gemini rejects;
OpenAI's ``strict`` flag lives beside the schema, not in it, and is dropped by the callers
(Gemini always constrains output to a given schema).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import BadRequest
from proxy.openai.validate import opt_object, req_object, req_str
from proxy.wire.gemini import GenerationConfig

__all__ = ["json_schema_for_gemini", "response_format_to_gemini", "text_format_to_gemini"]


def json_schema_for_gemini(schema: Any, param: str) -> dict[str, Any]:
    """A copy of ``schema`` Gemini accepts; ``param`` names it in a 400."""
    obj = req_object(schema, param)
    return {key: value for key, value in obj.items() if key != "$schema"}


def response_format_to_gemini(value: Any) -> GenerationConfig:
    """The generationConfig keys for OpenAI's ``response_format`` (empty for ``text``)."""
    return _format(value, "response_format", flat=False)


def text_format_to_gemini(value: Any, param: str = "text.format") -> GenerationConfig:
    """The same for the Responses API's ``text.format``, where ``name`` and ``schema`` sit
    beside ``type`` instead of under ``json_schema``."""
    return _format(value, param, flat=True)


def _format(value: Any, param: str, *, flat: bool) -> GenerationConfig:
    fmt = opt_object(value, param)
    if fmt is None:
        return {}
    kind = req_str(fmt.get("type"), f"{param}.type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        p = param if flat else f"{param}.json_schema"
        spec: Mapping[str, Any] = fmt if flat else req_object(fmt.get("json_schema"), p)
        req_str(spec.get("name"), f"{p}.name", non_empty=True)
        config: GenerationConfig = {"responseMimeType": "application/json"}
        if spec.get("schema") is not None:
            config["responseJsonSchema"] = json_schema_for_gemini(spec["schema"], f"{p}.schema")
        return config
    raise BadRequest(
        f"Invalid '{param}.type': {kind!r}; expected 'text', 'json_object' or 'json_schema'.",
        param=f"{param}.type",
        code="invalid_value",
    )
