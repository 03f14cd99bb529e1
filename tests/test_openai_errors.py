"""Upstream Gemini errors → OpenAI's error envelope, statuses and types."""

from __future__ import annotations

import orjson
import pytest
from openai.types import ErrorObject

from proxy.openai.errors import openai_error_from_upstream, upstream_retry_after
from tests.fakes.gemini import FIXTURES

KEY = "AIzaSyA1234567890abcdefghijklmnopqrstuv"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def gemini(code: int, status: str, message: str, reason: str | None = None) -> bytes:
    error: dict[str, object] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    return orjson.dumps({"error": error})


# (id, upstream status, body, expected (status, type, code, param))
CASES: list[tuple[str, int, bytes, tuple[int, str, str | None, str | None]]] = [
    ("bad_request", 400, fixture("error_400.json"), (400, "invalid_request_error", None, None)),
    (
        "bad_key",
        400,
        fixture("error_bad_key.json"),
        (502, "api_error", "upstream_auth_failed", None),
    ),
    (
        "unauthenticated",
        401,
        gemini(401, "UNAUTHENTICATED", "Request had invalid credentials."),
        (502, "api_error", "upstream_auth_failed", None),
    ),
    (
        "permission_denied",
        403,
        gemini(403, "PERMISSION_DENIED", f"Consumer 'api_key:{KEY}' has been suspended."),
        (502, "api_error", "upstream_auth_failed", None),
    ),
    (
        "model_not_found",
        404,
        gemini(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta."),
        (404, "not_found_error", "model_not_found", "model"),
    ),
    (
        "other_not_found",
        404,
        gemini(404, "NOT_FOUND", "Requested entity was not found."),
        (404, "not_found_error", None, None),
    ),
    (
        "payload_too_large",
        413,
        gemini(413, "INVALID_ARGUMENT", "Request payload size exceeds the limit."),
        (413, "invalid_request_error", None, None),
    ),
    (
        "rate_limited",
        429,
        fixture("error_429.json"),
        (429, "rate_limit_error", "rate_limit_exceeded", None),
    ),
    (
        "internal",
        500,
        gemini(500, "INTERNAL", "An internal error has occurred."),
        (500, "api_error", None, None),
    ),
    ("overloaded", 503, fixture("error_503.json"), (503, "api_error", None, None)),
    (
        "deadline",
        504,
        gemini(504, "DEADLINE_EXCEEDED", "Deadline expired."),
        (504, "api_error", None, None),
    ),
    ("html_body", 502, b"<html>Bad Gateway</html>", (502, "api_error", None, None)),
    ("empty_body", 500, b"", (500, "api_error", None, None)),
    ("json_not_error", 400, b"[1, 2]", (400, "invalid_request_error", None, None)),
    ("not_an_error_status", 302, b"", (502, "api_error", None, None)),
]


@pytest.mark.parametrize(
    ("status", "body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_mapping(
    status: int, body: bytes, expected: tuple[int, str, str | None, str | None]
) -> None:
    out_status, envelope = openai_error_from_upstream(status, body)
    error = ErrorObject.model_validate(envelope["error"])
    assert (out_status, error.type, error.code, error.param) == expected
    assert error.message
    assert KEY not in error.message and "api_key:" not in error.message


def test_bad_key_does_not_blame_the_client() -> None:
    _, envelope = openai_error_from_upstream(400, fixture("error_bad_key.json"))
    message = envelope["error"]["message"]
    assert "API key not valid" not in message and "not a problem with your API key" in message


def test_gemini_message_kept_for_client_errors_and_keys_scrubbed() -> None:
    _, envelope = openai_error_from_upstream(400, fixture("error_400.json"))
    assert "contentz" in envelope["error"]["message"]
    _, envelope = openai_error_from_upstream(400, gemini(400, "INVALID_ARGUMENT", f"bad {KEY}"))
    assert envelope["error"]["message"] == "bad [redacted]"


def test_rate_limit_retry_hint() -> None:
    _, envelope = openai_error_from_upstream(429, fixture("error_429.json"))
    assert "17s" in envelope["error"]["message"]
    assert upstream_retry_after(fixture("error_429.json")) == 17
    assert upstream_retry_after(fixture("error_503.json")) is None
    assert upstream_retry_after(b"not json") is None
