"""Gemini's Batch mode, faked.

``POST models/{m}:batchGenerateContent`` (and ``:asyncBatchEmbedContent``) with
``{"batch": {"displayName", "inputConfig": {"requests": {"requests": [{"request", "metadata"}]}}
| {"fileName": "files/x"}}}`` answers a long-running operation named ``batches/<id>`` whose
``metadata`` is the batch (``state`` ``BATCH_STATE_PENDING`` -> ``RUNNING`` -> ``SUCCEEDED``, or
``FAILED`` / ``CANCELLED`` / ``EXPIRED``; ``batchStats``; ``output`` once done).
``GET batches/<id>`` polls it, ``GET batches`` lists ``{"operations": [...]}``,
``POST batches/<id>:cancel`` and ``DELETE batches/<id>`` answer ``{}``.

Results: inline requests come back in ``output.inlinedResponses.inlinedResponses[]`` (each a
``response`` with its own ``usageMetadata``, or an ``error``, plus the request's ``metadata``);
a file input comes back as ``output.responsesFile`` (``files/<id>``, JSON lines ``{"key",
"response"}`` in input order), downloadable through the Files API.

Progress: each ``GET batches/<id>`` counts a poll; after ``polls_per_state`` polls in a state
the batch moves on (``None``: only ``advance()`` / ``finish()`` move it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from tests.fakes.caches import Caches, estimate_tokens, file_uris, with_cached
from tests.fakes.files import Files, missing_file
from tests.fakes.gemini import JsonReply, RecordedRequest, text_response, usage_metadata
from tests.fakes.rest import (
    Env,
    Route,
    get,
    google_error,
    json_body,
    new_id,
    no_route,
    page,
    rfc3339,
    rpc_status,
)

_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
PENDING, RUNNING = "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"
SUCCEEDED, FAILED = "BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED"
CANCELLED, EXPIRED = "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"
TERMINAL = {SUCCEEDED, FAILED, CANCELLED, EXPIRED}
_END_ERRORS = {
    FAILED: ("INTERNAL", "The batch failed."),
    CANCELLED: ("CANCELLED", "The batch was cancelled."),
    EXPIRED: ("DEADLINE_EXCEEDED", "The batch expired before it was processed."),
}
# (model id, request, index) -> a GenerateContentResponse (or embedding reply), or {"error": ...}
Responder = Callable[[str, dict[str, Any], int], dict[str, Any]]


@dataclass
class Item:
    request: dict[str, Any] | None
    key: str | None = None  # a file input line's "key"
    metadata: Any = None  # an inline request's "metadata"
    error: dict[str, Any] | None = None  # a file line that did not parse


@dataclass
class Batch:
    name: str  # "batches/abc"
    model: str  # "models/gemini-2.5-flash"
    embed: bool
    items: list[Item]
    from_file: bool
    created: datetime
    display_name: str | None = None
    priority: Any = None
    state: str = PENDING
    updated: datetime | None = None
    ended: datetime | None = None
    polls: int = 0  # polls in the current state
    results: list[dict[str, Any]] = field(default_factory=list)
    responses_file: str | None = None

    def stats(self) -> dict[str, str]:
        n = len(self.items)
        if self.state in (PENDING, RUNNING):
            counts = {"requestCount": n, "pendingRequestCount": n}
        else:
            ok = sum("response" in r for r in self.results)
            counts = {
                "requestCount": n,
                "successfulRequestCount": ok,
                "failedRequestCount": len(self.results) - ok,
            }
        return {k: str(v) for k, v in counts.items() if v}  # int64 as strings; zeros omitted

    def output(self) -> dict[str, Any]:
        if self.responses_file:
            return {"responsesFile": self.responses_file}
        return {"inlinedResponses": {"inlinedResponses": self.results}} if self.results else {}

    def operation(self) -> dict[str, Any]:
        kind = "EmbedContentBatch" if self.embed else "GenerateContentBatch"
        meta: dict[str, Any] = {"@type": _TYPE + kind, "model": self.model}
        if self.display_name:
            meta["displayName"] = self.display_name
        meta["createTime"] = rfc3339(self.created)
        if self.ended:
            meta["endTime"] = rfc3339(self.ended)
        meta["updateTime"] = rfc3339(self.updated or self.created)
        meta |= {"batchStats": self.stats(), "state": self.state, "name": self.name}
        if self.priority is not None:
            meta["priority"] = str(self.priority)
        op: dict[str, Any] = {"name": self.name, "metadata": meta}
        if self.state == SUCCEEDED and (out := self.output()):
            meta["output"] = out
            op["response"] = {"@type": _TYPE + kind + "Output"} | out
        if self.state in TERMINAL:
            op["done"] = True
        if self.state in _END_ERRORS:
            op["error"] = rpc_status(*_END_ERRORS[self.state])
        return op


def _embedding(tokens: int, index: int) -> dict[str, Any]:
    values = [round(((index + 1) * (d + 3)) % 17 / 17 - 0.5, 6) for d in range(8)]
    return {"embedding": {"values": values}, "tokenCount": str(tokens)}


class Batches:
    def __init__(self, env: Env, files: Files, caches: Caches) -> None:
        self.env, self.files, self.caches = env, files, caches
        self.batches: dict[str, Batch] = {}
        self.polls_per_state: int | None = 1
        self.final_state = SUCCEEDED  # where automatic progress ends
        self.responder: Responder | None = None  # None: a short text reply per request

    # -- control from tests ---------------------------------------------------------------

    def advance(self, name: str, to: str | None = None) -> Batch:
        """One step on (pending -> running -> ``final_state``), or straight ``to`` a state."""
        with self.env.lock:
            b = self.batches[name]
            if b.state in TERMINAL:
                return b
            nxt = to or (RUNNING if b.state == PENDING else self.final_state)
            now = self.env.clock()
            b.state, b.polls, b.updated = nxt, 0, now
            if nxt in TERMINAL:
                b.ended = now
            if nxt == SUCCEEDED:
                self._run(b)
            return b

    def finish(self, name: str, state: str = SUCCEEDED) -> Batch:
        return self.advance(name, to=state)

    # -- results --------------------------------------------------------------------------

    def _run(self, b: Batch) -> None:
        model_id = b.model.removeprefix("models/")
        for i, item in enumerate(b.items):
            result = {"error": item.error} if item.error else self._respond(b, item, model_id, i)
            if item.metadata is not None:
                result["metadata"] = item.metadata
            b.results.append(result)
        if b.from_file:
            lines = [
                ({"key": it.key} if it.key is not None else {}) | r
                for it, r in zip(b.items, b.results, strict=True)
            ]
            data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
            f = self.files.add(
                data, "application/jsonl", source="GENERATED", display_name=f"{b.name} results"
            )
            b.responses_file = f.name

    def _respond(self, b: Batch, item: Item, model_id: str, index: int) -> dict[str, Any]:
        request = item.request or {}
        model = str(get(request, "model") or model_id).removeprefix("models/")
        refused = next(filter(None, map(self.files.check_uri, file_uris(request))), None)
        refused = refused or (None if b.embed else self.caches.check_use(request, model))
        if refused is not None:
            err = refused.body["error"]
            return {"error": rpc_status(err["status"], err["message"])}
        if self.responder is not None:
            reply = self.responder(model, request, index)
            return {"error": reply["error"]} if "error" in reply else {"response": reply}
        parts = [get(request, k) for k in ("content", "contents", "systemInstruction")]
        prompt = max(1, estimate_tokens(parts, self.files))
        if b.embed:
            return {"response": _embedding(prompt, index)}
        text = f"Fake batch reply {index + 1}."
        usage = usage_metadata(prompt, max(1, len(text) // 4))
        if cached := self.caches.cached_tokens(request):
            usage = with_cached(usage, cached)
        return {"response": text_response(text, usage, model=model)}

    # -- routes ---------------------------------------------------------------------------

    @staticmethod
    def action(method: str, route: Route) -> str | None:
        if route.parts[:1] != ["batches"]:
            return None
        if len(route.parts) == 1:
            return "batches.list" if method == "GET" and not route.verb else None
        if route.verb == "cancel":
            return "batches.cancel" if method == "POST" else None
        return {"GET": "batches.get", "DELETE": "batches.delete"}.get(method)

    def serve(self, req: RecordedRequest, route: Route) -> JsonReply:
        if req.action in ("batchGenerateContent", "asyncBatchEmbedContent"):
            return self._create(req, route)
        if req.action == "batches.list":
            ops = [
                b.operation()
                for b in sorted(self.batches.values(), key=lambda b: b.created, reverse=True)
            ]
            return page(ops, req.query, "operations", self.env)
        if req.action is None or len(route.parts) != 2:
            return no_route(req)
        b = self.batches.get(f"batches/{route.parts[1]}")
        if b is None:
            return google_error(404, f"Batch batches/{route.parts[1]} not found.")
        if req.action == "batches.delete":  # forgets the batch; it does not cancel it
            del self.batches[b.name]
            return JsonReply({})
        if req.action == "batches.cancel":
            if b.state in TERMINAL:
                return google_error(
                    400, f"Batch {b.name} is already {b.state}.", "FAILED_PRECONDITION"
                )
            self.advance(b.name, CANCELLED)
            return JsonReply({})
        if self.polls_per_state is not None and b.state not in TERMINAL:
            b.polls += 1
            while b.polls >= self.polls_per_state and b.state not in TERMINAL:
                self.advance(b.name)  # 0 polls a state: the first poll finds the batch done
        return JsonReply(b.operation())

    def _create(self, req: RecordedRequest, route: Route) -> JsonReply:
        body = json_body(req)
        if isinstance(body, JsonReply):
            return body
        batch = get(body, "batch")
        config = get(batch, "inputConfig") if isinstance(batch, dict) else None
        if not isinstance(config, dict):
            return google_error(400, "batch.input_config is required.")
        requests, file_name = get(config, "requests"), get(config, "fileName")
        if (requests is None) == (file_name is None):
            return google_error(
                400, "batch.input_config takes exactly one of requests and file_name."
            )
        items = self._items(requests) if file_name is None else self._file_items(str(file_name))
        if isinstance(items, JsonReply):
            return items
        if not items:
            return google_error(400, "The batch has no requests.")
        assert isinstance(batch, dict)
        name = f"batches/{new_id(20)}"
        b = Batch(
            name,
            f"models/{route.parts[1]}",
            req.action == "asyncBatchEmbedContent",
            items,
            file_name is not None,
            self.env.clock(),
            get(batch, "displayName"),
            get(batch, "priority"),
        )
        self.batches[name] = b
        return JsonReply(b.operation())

    @staticmethod
    def _items(requests: Any) -> list[Item] | JsonReply:
        inner = get(requests, "requests") if isinstance(requests, dict) else None
        if not isinstance(inner, list) or not all(
            isinstance(r, dict) and isinstance(get(r, "request"), dict) for r in inner
        ):
            return google_error(
                400,
                "batch.input_config.requests.requests must be a list of "
                '{"request": {...}, "metadata": {...}}.',
            )
        return [Item(get(r, "request"), metadata=get(r, "metadata")) for r in inner]

    def _file_items(self, file_name: str) -> list[Item] | JsonReply:
        f = self.files.lookup(file_name)
        if f is None:
            return missing_file(file_name)
        items = []
        for line in f.data.splitlines():
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            obj = obj if isinstance(obj, dict) else {}
            request = get(obj, "request")
            if not isinstance(request, dict):
                status = rpc_status("INVALID_ARGUMENT", 'Each line must be {"key", "request"}.')
                items.append(Item(None, key=obj.get("key"), error=status))
            else:
                items.append(Item(request, key=obj.get("key")))
        return items
