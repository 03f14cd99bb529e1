"""Gemini's context caches (``cachedContents``), faked, and what naming one does to a generate call.

A cache holds ``usageMetadata.totalTokenCount`` tokens from ``createTime`` until ``expireTime``
(create takes ``ttl`` or ``expireTime``, default one hour; patch moves it; delete ends it). A
generateContent naming ``cachedContent`` gets ``cachedContentTokenCount`` (and that many more
``promptTokenCount``) in its usage. Google refuses a cache it does not hold, or one past its
expiry, with 403 "CachedContent not found (or permission denied)".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tests.fakes.files import Files
from tests.fakes.gemini import JsonReply, RecordedRequest, StreamReply
from tests.fakes.rest import (
    Env,
    Route,
    get,
    google_error,
    json_body,
    new_id,
    no_route,
    page,
    parse_duration,
    parse_time,
    rfc3339,
)

DEFAULT_TTL = timedelta(hours=1)
MIN_CACHE_TOKENS = 1024  # Google's minimum for Gemini 2.5 Flash; others ask more
IMAGE_TOKENS = 258
_NOT_FOUND = "CachedContent not found (or permission denied)"
_UPDATABLE = {"ttl", "expireTime", "expire_time"}


def _media_tokens(mime: str, size: int) -> int:
    return IMAGE_TOKENS if mime.startswith("image/") else math.ceil(size / 4)


def estimate_tokens(value: Any, files: Files) -> int:
    """A fixed, documented stand-in for Google's tokenizer, so tests can predict counts: each
    ``text`` costs ceil(len / 4), each image 258, other inline or file data ceil(bytes / 4)."""
    if isinstance(value, list):
        return sum(estimate_tokens(v, files) for v in value)
    if not isinstance(value, dict):
        return 0
    blob, ref = get(value, "inlineData"), get(value, "fileData")
    if isinstance(blob, dict):
        data = get(blob, "data")
        size = len(data) * 3 // 4 if isinstance(data, str) else 0
        return _media_tokens(str(get(blob, "mimeType")), size)
    if isinstance(ref, dict):
        f = files.lookup(str(get(ref, "fileUri")))
        return _media_tokens(f.mime_type, len(f.data)) if f else 0
    text = value.get("text")
    own = math.ceil(len(text) / 4) if isinstance(text, str) else 0
    return own + sum(estimate_tokens(v, files) for k, v in value.items() if k != "text")


def file_uris(value: Any) -> Iterator[str]:
    """Every ``fileData.fileUri`` in a request body, at any depth."""
    if isinstance(value, list):
        for v in value:
            yield from file_uris(v)
    elif isinstance(value, dict):
        ref = get(value, "fileData")
        if isinstance(ref, dict) and isinstance(uri := get(ref, "fileUri"), str):
            yield uri
        for v in value.values():
            yield from file_uris(v)


def with_cached(usage: dict[str, Any], tokens: int) -> dict[str, Any]:
    """``usage`` as Google reports it when ``tokens`` of the prompt came from a cache."""
    return usage | {
        "promptTokenCount": usage.get("promptTokenCount", 0) + tokens,
        "totalTokenCount": usage.get("totalTokenCount", 0) + tokens,
        "cachedContentTokenCount": tokens,
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
    }


@dataclass
class Cache:
    name: str  # "cachedContents/abc123"
    model: str  # "models/gemini-2.5-flash"
    tokens: int
    created: datetime
    updated: datetime
    expire: datetime
    display_name: str | None = None

    def resource(self) -> dict[str, Any]:
        res: dict[str, Any] = {"name": self.name, "model": self.model}
        if self.display_name:
            res["displayName"] = self.display_name
        return res | {
            "createTime": rfc3339(self.created),
            "updateTime": rfc3339(self.updated),
            "expireTime": rfc3339(self.expire),
            "usageMetadata": {"totalTokenCount": self.tokens},
        }


class Caches:
    def __init__(self, env: Env, files: Files) -> None:
        self.env, self.files = env, files
        self.caches: dict[str, Cache] = {}
        self.min_tokens = MIN_CACHE_TOKENS

    def lookup(self, name: str) -> Cache | None:
        name = name if name.startswith("cachedContents/") else f"cachedContents/{name}"
        c = self.caches.get(name)
        if c is not None and self.env.clock() >= c.expire:
            del self.caches[name]  # Google drops a cache at its expiry
            return None
        return c

    # -- use in generateContent -----------------------------------------------------------

    def check_use(self, body: dict[str, Any], model: str | None) -> JsonReply | None:
        """Google's refusal of a generate request's ``cachedContent``, if any."""
        ref = get(body, "cachedContent")
        if not ref:
            return None
        c = self.lookup(str(ref))
        if c is None:
            return google_error(403, _NOT_FOUND)
        if model and c.model != f"models/{model}":
            return google_error(
                400,
                f"Model used by GenerateContent request (models/{model}) and "
                f"CachedContent ({c.model}) has to be the same.",
            )
        if any(get(body, k) for k in ("systemInstruction", "tools", "toolConfig")):
            return google_error(
                400,
                "CachedContent can not be used with GenerateContent request "
                "setting system_instruction, tools or tool_config.\n\nProposed "
                "fix: move those values to CachedContent from GenerateContent "
                "request.",
            )
        return None

    def cached_tokens(self, body: dict[str, Any]) -> int:
        ref = get(body, "cachedContent")
        c = self.lookup(str(ref)) if ref else None
        return c.tokens if c else 0

    def amend(self, reply: Any, tokens: int) -> Any:
        """A generate reply (JSON or stream) whose usage counts ``tokens`` cached ones."""
        match reply:
            case JsonReply(body=dict() as body) if "usageMetadata" in body:
                usage = with_cached(body["usageMetadata"], tokens)
                return JsonReply(body | {"usageMetadata": usage}, reply.status, reply.headers)
            case StreamReply(events=events):
                amended = [
                    e | {"usageMetadata": with_cached(e["usageMetadata"], tokens)}
                    if isinstance(e, dict) and "usageMetadata" in e
                    else e
                    for e in events
                ]
                return StreamReply(
                    amended,
                    reply.delay,
                    reply.status,
                    reply.close_early,
                    reply.hold_after,
                    reply.headers,
                )
        return reply

    # -- routes ---------------------------------------------------------------------------

    @staticmethod
    def action(method: str, route: Route) -> str | None:
        if route.parts[:1] != ["cachedContents"] or route.verb:
            return None
        if len(route.parts) == 1:
            return {"POST": "cachedContents.create", "GET": "cachedContents.list"}.get(method)
        verbs = {
            "GET": "cachedContents.get",
            "PATCH": "cachedContents.patch",
            "DELETE": "cachedContents.delete",
        }
        return verbs.get(method) if len(route.parts) == 2 else None

    def serve(self, req: RecordedRequest, route: Route) -> JsonReply:
        if req.action == "cachedContents.create":
            return self._create(req)
        if req.action == "cachedContents.list":
            live = [c.resource() for c in list(self.caches.values()) if self.lookup(c.name)]
            return page(live, req.query, "cachedContents", self.env)
        if req.action is None or len(route.parts) != 2:
            return no_route(req)
        c = self.lookup(route.parts[1])
        if c is None:
            return google_error(403, _NOT_FOUND)
        if req.action == "cachedContents.delete":
            del self.caches[c.name]
            return JsonReply({})
        if req.action == "cachedContents.patch":
            return self._patch(req, c)
        return JsonReply(c.resource())

    def _expiry(self, body: dict[str, Any], now: datetime) -> datetime | JsonReply:
        ttl, expire = get(body, "ttl"), get(body, "expireTime")
        if ttl is not None and expire is not None:
            return google_error(400, "Only one of ttl and expire_time may be set.")
        if ttl is not None:
            delta = parse_duration(ttl)
            if delta is None or delta <= timedelta(0):
                return google_error(
                    400, f"Invalid value at 'ttl' ({ttl!r}): a positive duration such as \"3600s\"."
                )
            return now + delta
        if expire is not None:
            at = parse_time(expire)
            if at is None or at <= now:
                return google_error(
                    400,
                    f"Invalid value at 'expire_time' ({expire!r}): an RFC 3339 time in the future.",
                )
            return at
        return now + DEFAULT_TTL

    def _create(self, req: RecordedRequest) -> JsonReply:
        body = json_body(req)
        if isinstance(body, JsonReply):
            return body
        model = get(body, "model")
        if not isinstance(model, str) or not model:
            return google_error(400, "CachedContent.model is required.")
        now = self.env.clock()
        expire = self._expiry(body, now)
        if isinstance(expire, JsonReply):
            return expire
        for uri in file_uris(body):
            if refused := self.files.check_uri(uri):
                return refused
        parts = [get(body, k) for k in ("contents", "systemInstruction", "tools", "toolConfig")]
        tokens = estimate_tokens(parts, self.files)
        if tokens < self.min_tokens:
            return google_error(
                400,
                f"Cached content is too small. total_token_count={tokens}, "
                f"min_total_token_count={self.min_tokens}",
            )
        name = f"cachedContents/{new_id()}"
        model = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        c = Cache(name, model, tokens, now, now, expire, get(body, "displayName"))
        self.caches[name] = c
        return JsonReply(c.resource())

    def _patch(self, req: RecordedRequest, c: Cache) -> JsonReply:
        body = json_body(req)
        if isinstance(body, JsonReply):
            return body
        # google-genai sends no updateMask (caches.update); REST clients may. Only expiry moves.
        mask = {f.strip() for f in req.query.get("updateMask", "").split(",") if f.strip()}
        if mask - _UPDATABLE:
            return google_error(
                400,
                f"Only the expiration (ttl or expire_time) can be updated, "
                f"not {sorted(mask - _UPDATABLE)}.",
            )
        fields = {k: v for k, v in body.items() if k in _UPDATABLE and (not mask or k in mask)}
        if not fields:
            return google_error(400, "Nothing to update: set ttl or expire_time.")
        now = self.env.clock()
        expire = self._expiry(fields, now)
        if isinstance(expire, JsonReply):
            return expire
        c.expire, c.updated = expire, now
        return JsonReply(c.resource())
