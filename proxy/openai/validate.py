"""Typed readers for an untrusted JSON request body.

Each reader returns the value with its Python type or raises :class:`BadRequest` naming the
parameter (OpenAI's ``param`` field, dotted path such as ``messages[2].content``), so the
translators read like a schema. ``None`` is accepted wherever OpenAI's API accepts ``null`` and
means "not set".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import BadRequest

# Every integer Gemini takes in a request (candidateCount, maxOutputTokens, seed, topK,
# thinkingBudget, outputDimensionality) is an int32: a larger one is a 400 here, not a body the
# proxy cannot even encode (a 500) or a worst case no quota can hold.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "opt_bool",
    "opt_int",
    "opt_number",
    "opt_object",
    "opt_str",
    "opt_text",
    "req_list",
    "req_object",
    "req_str",
]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _wrong(param: str, expected: str, value: Any) -> BadRequest:
    return BadRequest(
        f"Invalid type for '{param}': expected {expected}, got {_type_name(value)}.",
        param=param,
        code="invalid_type",
    )


def req_object(value: Any, param: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _wrong(param, "an object", value)
    return value


def opt_object(value: Any, param: str) -> Mapping[str, Any] | None:
    return None if value is None else req_object(value, param)


def req_list(value: Any, param: str, *, non_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong(param, "an array", value)
    if non_empty and not value:
        raise BadRequest(f"'{param}' must not be empty.", param=param, code="empty_array")
    return value


def req_str(value: Any, param: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _wrong(param, "a string", value)
    if non_empty and not value:
        raise BadRequest(f"'{param}' must not be empty.", param=param, code="empty_string")
    return value


def opt_str(value: Any, param: str) -> str | None:
    return None if value is None else req_str(value, param)


def opt_text(value: Any, param: str, *, max_length: int) -> str | None:
    """A string the proxy stores (OpenAI's ``user``): at most ``max_length`` characters, no NUL
    and valid Unicode, so every database takes the ledger row it lands in."""
    text = opt_str(value, param)
    if text is None:
        return None
    if len(text) > max_length:
        raise _invalid(
            param,
            f"string too long. Expected a string with maximum length {max_length}, but got a "
            f"string with length {len(text)} instead.",
            "string_above_max_length",
        )
    if "\x00" in text or not _encodable(text):
        raise _invalid(
            param, "it must not contain NUL characters or unpaired surrogates.", "invalid_value"
        )
    return text


def unknown_parameter(name: str) -> BadRequest:
    """OpenAI's 400 for a request argument the API does not have."""
    return BadRequest(
        f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter"
    )


def _invalid(param: str, message: str, code: str) -> BadRequest:
    return BadRequest(f"Invalid '{param}': {message}", param=param, code=code)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def opt_bool(value: Any, param: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _wrong(param, "a boolean", value)
    return value


def opt_int(
    value: Any, param: str, *, minimum: int | None = None, maximum: int = INT32_MAX
) -> int | None:
    if value is None:
        return None
    number: int
    # bool is an int subclass in Python but not in JSON; 2.0 is an integer in JSON.
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise _wrong(param, "an integer", value)
    lowest = INT32_MIN if minimum is None else minimum
    if number < lowest:
        message = f"{_short(number)} is less than the minimum of {lowest}."
        raise _invalid(param, message, "integer_below_min_value")
    if number > maximum:
        message = f"{_short(number)} is greater than the maximum of {maximum}."
        raise _invalid(param, message, "integer_above_max_value")
    return number


def _short(number: int) -> str:
    text = str(number)
    return text if len(text) <= 24 else f"{text[:8]}...({len(text)} digits)"


def opt_number(
    value: Any, param: str, minimum: float | None = None, maximum: float | None = None
) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(param, "a number", value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise BadRequest(
            f"Invalid '{param}': {value} is outside the range [{minimum}, {maximum}].",
            param=param,
            code="number_out_of_range",
        )
    return value
