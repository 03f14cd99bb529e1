"""Gemini error replies → OpenAI's error envelope, statuses and types.

| Gemini | OpenAI status, type, code |
|---|---|
| reason ``API_KEY_INVALID``, any 401 or 403 | 502 ``api_error``, ``upstream_auth_failed`` |
| 400, 413 and other 4xx | same status, ``invalid_request_error`` (Gemini's message kept) |
| 404 | 404 ``not_found_error``, ``model_not_found`` when it is about a model |
| 429 | 429 ``rate_limit_error``, ``rate_limit_exceeded`` |
| 500 / 503 / 504 / other 5xx | same status, ``api_error`` |
| unparseable body, non-error status | by status; a generic message |

A rejected upstream key is the proxy's problem, not the client's: it must not look like the
client's key is wrong (OpenAI clients treat 401 as "fix your key" and do not retry), so it is a
502 and its message, which can quote the key, is never passed on. Echoed messages are scrubbed
(proxy.redact: the upstream keys, and anything shaped like a Google API key or a key quote).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import orjson

from proxy.errors import ProxyError, openai_type_for
from proxy.redact import scrub

__all__ = [
    "UpstreamStreamError",
    "check_stream_event",
    "openai_error_from_gemini",
    "openai_error_from_upstream",
    "unknown_openai_route",
    "upstream_retry_after",
]

_AUTH_MESSAGE: Final = (
    "Upstream authentication failed: the proxy's Gemini credentials were rejected. "
    "This is not a problem with your API key; contact the proxy's operator."
)


class UpstreamStreamError(Exception):
    """An ``{"error": ...}`` event inside a stream whose HTTP status was already 200.

    ``status`` and ``body`` are the OpenAI mapping (as from :func:`openai_error_from_gemini`);
    the route sends ``data: <body as JSON>`` and ends the stream without ``[DONE]``: the OpenAI
    SDK raises ``APIError`` with the message on such an event.
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


def check_stream_event(event: Mapping[str, Any]) -> None:
    """Raise :class:`UpstreamStreamError` (the OpenAI mapping) for an ``{"error": ...}`` event."""
    error = event.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, Mapping) else None
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        raise UpstreamStreamError(
            *openai_error_from_gemini(status, error if isinstance(error, Mapping) else None)
        )


def _envelope(
    message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _reasons(error: Mapping[str, Any]) -> set[str]:
    details = error.get("details")
    return {
        d["reason"]
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, Mapping) and isinstance(d.get("reason"), str)
    }


def _retry_seconds(error: Mapping[str, Any]) -> int | None:
    details = error.get("details")
    for d in details if isinstance(details, list) else []:
        delay = d.get("retryDelay") if isinstance(d, Mapping) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0, math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None


def openai_error_from_gemini(
    status: int, error: Mapping[str, Any] | None
) -> tuple[int, dict[str, Any]]:
    """Map an HTTP status and Gemini's parsed ``error`` object (None if there was none)."""
    err: Mapping[str, Any] = error or {}
    raw = err.get("message")
    message = scrub(raw) if isinstance(raw, str) and raw else f"Upstream error (HTTP {status})."
    if (
        status in (401, 403)
        or err.get("status") in ("UNAUTHENTICATED", "PERMISSION_DENIED")
        or any(r.startswith("API_KEY_") for r in _reasons(err))
    ):
        return 502, _envelope(_AUTH_MESSAGE, "api_error", code="upstream_auth_failed")
    if status == 429:
        retry = _retry_seconds(err)
        hint = f" Retry after {retry}s." if retry is not None else " Retry later."
        return 429, _envelope(
            "Upstream rate limit or quota exceeded." + hint,
            "rate_limit_error",
            code="rate_limit_exceeded",
        )
    if status == 404:
        about_model = "model" in message.lower()
        return 404, _envelope(
            message,
            "not_found_error",
            param="model" if about_model else None,
            code="model_not_found" if about_model else None,
        )
    if 400 <= status < 600:
        return status, _envelope(message, openai_type_for(status))
    return 502, _envelope(f"Unexpected upstream reply (HTTP {status}).", "api_error")


def openai_error_from_upstream(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """``(status, OpenAI error envelope)`` for a non-200 Gemini reply; any body is handled."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    return openai_error_from_gemini(status, error if isinstance(error, Mapping) else None)


def upstream_retry_after(body: bytes) -> int | None:
    """Seconds from Gemini's ``RetryInfo.retryDelay``, for a ``Retry-After`` header."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    return _retry_seconds(error) if isinstance(error, Mapping) else None


def unknown_openai_route(
    method: str, path: str, status: int = 404, headers: Mapping[str, str] | None = None
) -> ProxyError:
    """A request to a route this proxy does not serve (404, or 405 for a wrong method), worded
    as OpenAI words it — ``Invalid URL (POST /v1/...)`` — so the client sees which route."""
    return ProxyError(
        f"Invalid URL ({method} {path[:200]}): this Gemini proxy does not serve that route "
        "(docs/openai-compat.md lists the OpenAI routes it serves).",
        status_code=status,
        headers=headers,
    )
