"""Request-side helpers shared by the native and OpenAI routes."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request

from .errors import BadRequest, PayloadTooLarge

__all__ = ["forward_headers", "parse_json_object", "read_body", "reply_headers"]

# Request headers the upstream may see. Everything else — the client's credentials first of
# all, cookies, hop-by-hop headers — stays behind.
_FORWARD = ("content-type", "x-goog-api-client", "x-server-timeout")
# Reply headers the client may see ("content headers pass through"); length and encoding are
# recomputed because httpx hands us decoded bytes.
_REPLY = ("content-type", "content-language", "content-disposition", "retry-after")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise BadRequest("Invalid Content-Length header.") from None
        if too_big:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest("Request body is empty; a JSON object is required.")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Malformed JSON in request body: {exc.msg}.") from None
    if not isinstance(obj, dict):
        raise BadRequest("Request body must be a JSON object.")
    return obj


def forward_headers(headers: Headers) -> dict[str, str]:
    out = {name: value for name in _FORWARD if (value := headers.get(name)) is not None}
    out.setdefault("content-type", "application/json")
    return out


def reply_headers(headers: Any) -> dict[str, str]:
    return {name: value for name in _REPLY if (value := headers.get(name)) is not None}
