"""The proxy's error tree. Each class knows its HTTP status and how it looks in both envelopes.

    ProxyError
    ├── BadRequest            400  malformed JSON, wrong types, unsupported parameter
    ├── Unauthenticated       401  missing, unknown or revoked tenant key
    ├── Forbidden             403  admin token wrong, model outside the allowed list
    ├── NotFound              404  unknown route or model
    ├── PayloadTooLarge       413  body over the configured limit
    ├── QuotaExceeded         429  budget, token quota or rate limit refused the call
    ├── UpstreamError
    │   ├── UpstreamUnreachable   502  connection refused / reset before a reply
    │   └── UpstreamTimeout       504  no reply in time
    └── ServiceUnavailable    503  not configured (no upstream key) or shutting down

    TransportError            the upstream connection failed (internal: the upstream client
    ├── ConnectError          retries what it can, then raises UpstreamUnreachable or
    ├── ReadError             UpstreamTimeout; inside a forwarded stream it ends the stream)
    ├── RemoteProtocolError
    └── TransportTimeout
        ├── ConnectTimeout
        └── ReadTimeout

Responses are built in one place, :func:`to_response`, in the envelope of the API the call
came through: OpenAI's ``{"error": {message, type, param, code}}`` on ``/v1/...`` OpenAI routes,
Gemini's ``{"error": {code, message, status}}`` on native routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import orjson
from starlette.responses import Response

from .redact import scrub_bytes

__all__ = [
    "BadRequest",
    "ConnectError",
    "ConnectTimeout",
    "Envelope",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "ProxyError",
    "QuotaExceeded",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "ServiceUnavailable",
    "TransportError",
    "TransportTimeout",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "gemini_status_for",
    "openai_type_for",
    "to_response",
]

Envelope = Literal["openai", "gemini"]

_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def gemini_status_for(http_status: int) -> str:
    return _GEMINI_STATUS.get(http_status, "INTERNAL" if http_status >= 500 else "UNKNOWN")


def openai_type_for(http_status: int) -> str:
    return _OPENAI_TYPE.get(
        http_status, "api_error" if http_status >= 500 else "invalid_request_error"
    )


class ProxyError(Exception):
    status_code: int = 500
    openai_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code or self.openai_code
        self.headers = dict(headers or {})

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": openai_type_for(self.status_code),
                "param": self.param,
                "code": self.code,
            }
        }

    def gemini_body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.status_code,
                "message": self.message,
                "status": gemini_status_for(self.status_code),
            }
        }


class BadRequest(ProxyError):
    status_code = 400


class Unauthenticated(ProxyError):
    status_code = 401
    openai_code = "invalid_api_key"


class Forbidden(ProxyError):
    status_code = 403


class NotFound(ProxyError):
    status_code = 404


class PayloadTooLarge(ProxyError):
    status_code = 413
    openai_code = "payload_too_large"


class QuotaExceeded(ProxyError):
    status_code = 429
    openai_code = "rate_limit_exceeded"


class UpstreamError(ProxyError):
    status_code = 502


class UpstreamUnreachable(UpstreamError):
    status_code = 502
    openai_code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    openai_code = "upstream_timeout"


class ServiceUnavailable(ProxyError):
    status_code = 503


# -- upstream transport failures (never shown to a client as such) --------------------------------
# The class names end up in ledger rows as error_class "upstream_<ClassName>".


class TransportError(Exception):
    """The connection to the upstream failed: refused, reset, cut mid-reply, or timed out."""


class ConnectError(TransportError):
    """No connection could be opened."""


class ReadError(TransportError):
    """The connection broke while the reply was being read."""


class RemoteProtocolError(TransportError):
    """The upstream broke the HTTP protocol (a reply cut short, a malformed chunk)."""


class TransportTimeout(TransportError):
    """A connect or a read took longer than its timeout."""


class ConnectTimeout(TransportTimeout):
    pass


class ReadTimeout(TransportTimeout):
    pass


def to_response(exc: ProxyError, envelope: Envelope) -> Response:
    body = exc.openai_body() if envelope == "openai" else exc.gemini_body()
    return Response(
        scrub_bytes(orjson.dumps(body)),  # a message may echo input: never a key-shaped string
        status_code=exc.status_code,
        media_type="application/json",
        headers=exc.headers,
    )
