"""Shared pieces of the fake's stateful REST resources: ids, times, paging, Google's errors.

Google's JSON conventions the resources follow: int64 fields (``sizeBytes``, batch counts) are
strings, int32 fields (``totalTokenCount``) are numbers, timestamps are RFC 3339 in UTC with a
``Z``, durations are decimal seconds with an ``s`` (``"3600s"``). Request bodies are read in
either spelling (``displayName`` / ``display_name``), as Google's JSON parser accepts both.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import orjson

from tests.fakes.gemini import JsonReply, RecordedRequest

GOOGLE_ORIGIN = "https://generativelanguage.googleapis.com"
VERSIONS = ("v1beta", "v1")  # google-genai 3.x calls /v1 by default; Google's docs say v1beta
_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    500: "INTERNAL",
}
# google.rpc.Status inside a body (an operation's or a batch item's ``error``) carries the gRPC
# code, not the HTTP one.
_GRPC = {
    "CANCELLED": 1,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "INTERNAL": 13,
}
_ID_CHARS = string.ascii_lowercase + string.digits
_DURATION = re.compile(r"(\d+(?:\.\d{1,9})?)s")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Env:
    """What every resource store shares: the clock (tests may freeze or move it) and the origin
    Google names in resource URIs (``uri``, ``downloadUri``, a video's ``uri``)."""

    clock: Callable[[], datetime] = utcnow
    origin: str = GOOGLE_ORIGIN
    # The fake serves on one thread while a test drives it from another (advance(), ...).
    lock: threading.RLock = field(default_factory=threading.RLock)
    page_size: int = 10  # a list call without pageSize gets this many (files.list's default)
    max_page_size: int = 100


@dataclass
class Route:
    """A request's path split for routing: ``/v1beta/files/abc:download`` ->
    prefix "", version "v1beta", parts ["files", "abc"], verb "download"."""

    prefix: str  # "upload" / "download" / ""
    version: str
    parts: list[str] = field(default_factory=list)
    verb: str | None = None


def split_path(req: RecordedRequest) -> Route | None:
    raw = unquote(req.path.split("?", 1)[0]).strip("/")
    segments = raw.split("/")
    prefix = segments.pop(0) if segments and segments[0] in ("upload", "download") else ""
    if not segments or segments[0] not in VERSIONS:
        return None
    version, rest = segments[0], segments[1:]
    verb = None
    if rest and ":" in rest[-1]:
        rest[-1], verb = rest[-1].split(":", 1)
    return Route(prefix, version, rest, verb)


def new_id(length: int = 12) -> str:
    """Lowercase alphanumerics, as Google's ids are (the SDK's t_file_name relies on it)."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(length))


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else None


def parse_duration(text: Any) -> timedelta | None:
    """``"3600s"`` / ``"1.5s"``, as google.protobuf.Duration is written in JSON."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    return timedelta(seconds=float(m[1])) if m else None


def get(body: dict[str, Any], camel: str) -> Any:
    """``body[camel]`` or its snake_case spelling."""
    if camel in body:
        return body[camel]
    return body.get(re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower())


def google_error(
    code: int, message: str, status: str | None = None, headers: dict[str, str] | None = None
) -> JsonReply:
    """Google's error envelope: ``{"error": {"code", "message", "status"}}``."""
    name = status or _STATUS.get(code, "UNKNOWN")
    return JsonReply(
        {"error": {"code": code, "message": message, "status": name}}, code, headers or {}
    )


def rpc_status(status: str, message: str) -> dict[str, Any]:
    """A google.rpc.Status as it appears inside a body (gRPC code)."""
    return {"code": _GRPC[status], "message": message}


def no_route(req: RecordedRequest) -> JsonReply:
    return google_error(404, f"Fake Gemini has no {req.method} {req.path}.")


def json_body(req: RecordedRequest) -> dict[str, Any] | JsonReply:
    """The request's JSON object (an empty body reads as ``{}``), or Google's 400."""
    return json_object(req.body)


def json_object(raw: bytes) -> dict[str, Any] | JsonReply:
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return google_error(400, "Invalid JSON payload received.")
    if not isinstance(body, dict):
        return google_error(400, "Invalid JSON payload received. Expected an object.")
    return body


def page(items: list[dict[str, Any]], query: dict[str, str], key: str, env: Env) -> JsonReply:
    """One page of ``items`` as ``{key: [...], "nextPageToken"}``. Tokens are opaque to clients;
    here they carry the offset, bound to the collection so one list's token fails on another."""
    start = 0
    if token := query.get("pageToken"):
        try:
            kind, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
            start = int(offset) if kind == key else -1
        except ValueError:
            start = -1
        if start < 0:
            return google_error(400, "Invalid page token.")
    try:
        size = int(query.get("pageSize") or env.page_size)
    except ValueError:
        return google_error(400, f"Invalid value at 'page_size': {query.get('pageSize')!r}")
    size = env.page_size if size <= 0 else min(size, env.max_page_size)
    end = start + size
    body: dict[str, Any] = {key: items[start:end]} if items[start:end] else {}
    if end < len(items):
        body["nextPageToken"] = base64.urlsafe_b64encode(f"{key}:{end}".encode()).decode()
    return JsonReply(body)
