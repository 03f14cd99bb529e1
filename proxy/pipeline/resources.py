"""Metering finished batches and video operations: what the reconciler polls and writes.

A finished batch becomes one ledger row per response (operation ``batchGenerateContent``,
priced at the batch rates), a finished video operation one row priced per second of video
(operation ``predictLongRunning``). Each row goes through the pipeline like any call
(``open`` → observe → ``close`` once) with an id derived from the resource's name and the
response's index, so metering the same resource twice writes its rows once. Results in a file
(a batch's ``responsesFile``) are read line by line as they download, never whole.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from ..caller import Caller
from ..db.tables import Resource
from ..errors import BadRequest, ProxyError, UpstreamError
from ..metering.ledger_event import derived_event_id
from ..model_ids import ModelId, model_id
from ..pricing.cost import price_call
from ..pricing.media import price_video
from ..quotas.estimate import Estimate
from ..redact import scrub_bytes
from ..sse import parse_event
from ..upstream import Upstream
from ..usage import Usage
from .call import CallResult, Pipeline

__all__ = [
    "BATCH_OPERATION",
    "EMBED_OPERATION",
    "VIDEO_OPERATION",
    "ResourceMeter",
    "batch_results",
    "file_lines",
    "generated_files",
    "http_status_of",
    "video_result",
]

log = logging.getLogger("gemini_meter.reconciler")

BATCH_OPERATION = "batchGenerateContent"
EMBED_OPERATION = "asyncBatchEmbedContent"
VIDEO_OPERATION = "predictLongRunning"
ROUTE = "reconciler"
GONE = "x-gone"  # marks the poll of a resource the upstream no longer has
MAX_LINE = 64 * 1024 * 1024  # one response of a results file; a longer line is an error row
# google.rpc.Code (numeric, or its name) -> the HTTP status Google maps it to.
_RPC_HTTP = {
    1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409,
    11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip
_RPC_NAMES = {
    "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip


def http_status_of(error: Any) -> int:
    """The HTTP status of a google.rpc.Status (``{"code", "message", "status"}``)."""
    if not isinstance(error, Mapping):
        return 500
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code if code >= 100 else _RPC_HTTP.get(code, 500)
    status = error.get("status")
    return _RPC_HTTP.get(_RPC_NAMES.get(status, 2), 500) if isinstance(status, str) else 500


# Where inline results are: Google's wire name, and the name google-genai gives embeddings'.
_INLINED = frozenset({"inlinedResponses", "inlinedEmbedContentResponses"})


def batch_results(op: Mapping[str, Any]) -> list[Any] | str | None:
    """A finished batch's inline results (a list), its results file's name, or None."""
    output = None
    response = op.get("response")
    meta = op.get("metadata")
    for holder in (response, meta.get("output") if isinstance(meta, Mapping) else None):
        if isinstance(holder, Mapping) and (
            _INLINED.intersection(holder) or "responsesFile" in holder
        ):
            output = holder
            break
    if output is None:
        return None
    file = output.get("responsesFile")
    if isinstance(file, str) and file.startswith("files/"):
        return file
    inlined = next((output[k] for k in _INLINED if k in output), None)
    inner = inlined.get("inlinedResponses") if isinstance(inlined, Mapping) else inlined
    return inner if isinstance(inner, list) else None


_FILE_IN_URI = re.compile(r"/files/([a-z0-9][a-z0-9-]{0,62})(?=[:/?]|$)")


def generated_files(op: Mapping[str, Any]) -> list[str]:
    """The files Google made for a finished batch (its results file) or video (each video's
    ``uri`` names one), as ``files/<id>``."""
    results = batch_results(op)
    if isinstance(results, str):
        return [results]
    response = op.get("response")
    gen = response.get("generateVideoResponse") if isinstance(response, Mapping) else None
    samples = gen.get("generatedSamples") if isinstance(gen, Mapping) else None
    found = []
    for sample in samples if isinstance(samples, list) else ():
        video = sample.get("video") if isinstance(sample, Mapping) else None
        uri = video.get("uri") if isinstance(video, Mapping) else None
        m = _FILE_IN_URI.search(uri) if isinstance(uri, str) else None
        if m:
            found.append(f"files/{m[1]}")
    return found


def video_result(op: Mapping[str, Any]) -> int:
    """How many videos a finished Veo operation made (filtered ones are not counted)."""
    response = op.get("response")
    gen = response.get("generateVideoResponse") if isinstance(response, Mapping) else None
    samples = gen.get("generatedSamples") if isinstance(gen, Mapping) else None
    return len(samples) if isinstance(samples, list) else 0


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """JSON lines as they download (a line longer than MAX_LINE is cut: an error row)."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        while (nl := buf.find(b"\n")) >= 0:
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            if line.strip():
                yield line
        if len(buf) > MAX_LINE:
            yield bytes(buf[:MAX_LINE])
            buf.clear()
    if bytes(buf).strip():
        yield bytes(buf)


async def file_lines(upstream: Upstream, file: str) -> AsyncIterator[bytes]:
    """The JSON lines of a stored file (a batch's input or results) as it downloads."""
    reply = await upstream.send(
        "GET", f"/download/v1beta/{file}:download", params=[("alt", "media")], stream=True
    )
    response = reply.response
    try:
        if response.status_code != 200:
            # A results file: not metered yet, the claim stays, the next round tries again.
            raise UpstreamError(f"File {file} could not be read ({response.status_code}).")
        async for line in _lines(response.aiter_bytes()):
            yield line
    finally:
        await response.aclose()


@dataclass(slots=True)
class ResourceMeter:
    """The reconciler's ``poll`` and ``meter`` (proxy.resources.reconciler), on the pipeline."""

    pipeline: Pipeline
    flush_timeout: float = 10.0
    # name -> (caller, model, cost, tokens) of a resource being metered: the real use that
    # replaces its held worst case once it is marked metered (settled). Cost None: some of it
    # could not be priced (or the resource vanished): the worst case stays counted.
    _used: dict[str, tuple[Caller, ModelId, Decimal | None, int]] = field(default_factory=dict)

    async def poll(self, row: Resource) -> Mapping[str, Any] | None:
        """The upstream's view of the resource; a 404 reads as done with nothing to meter."""
        try:
            reply = await self.pipeline.upstream.send("GET", f"/v1beta/{row.name}")
        except ProxyError as exc:
            log.warning("polling %s: %s", row.name, type(exc).__name__)
            return None
        response = reply.response
        if response.status_code == 404:
            log.warning("%s is gone upstream: nothing to meter", row.name)
            return {"name": row.name, "done": True, "error": {"code": 404}, GONE: True}
        if response.status_code != 200:
            return None
        return parse_event(scrub_bytes(response.content))

    async def meter(self, row: Resource, op: Mapping[str, Any]) -> bool:
        caller = Caller(row.tenant_id, str((row.detail or {}).get("tenant", "")), row.key_id)
        model = _model(row)
        self._used[row.name] = (caller, model, None if op.get(GONE) else Decimal(0), 0)
        if op.get(GONE):
            pass  # nothing left to read: no rows (poll logged it); the worst case stays counted
        elif row.kind == "operation":
            self._video(caller, row, model, op)
        else:
            await self._batch(caller, row, model, op)
        ledger = self.pipeline.ledger
        # The rows just closed are queued (close submits synchronously): wait for them only.
        return await ledger.wait_durable(ledger.submitted, self.flush_timeout)

    def _count(self, row: Resource, result: CallResult, status: int) -> None:
        caller, model, cost, tokens = self._used[row.name]
        if cost is not None:
            # A billed row without a price (an unknown model): its cost is unknown.
            cost = None if result.cost_usd is None and status == 200 else cost
            cost = None if cost is None else cost + (result.cost_usd or 0)
        self._used[row.name] = (caller, model, cost, tokens + result.usage.total_tokens)

    async def settled(self, row: Resource) -> None:
        """Once ``row`` is marked metered: its held worst case gives way to its real cost.

        Its creation counted the worst case as spent; this counts the difference (a refund,
        usually). Done once, by the replica that marked it: a crash just before leaves the
        worst case counted (the budget errs on the safe side; the ledger is exact)."""
        used = self._used.pop(row.name, None)
        quotas = self.pipeline.quotas
        detail = row.detail or {}
        held_usd, held_tokens = detail.get("heldUsd"), detail.get("heldTokens")
        if used is None or quotas is None or held_usd is None or used[2] is None:
            return
        caller, model, cost, tokens = used
        assert cost is not None
        delta = cost - Decimal(str(held_usd))
        try:
            admission = await quotas.admit(
                caller, model=model, request={}, operation="batches.settle",
                estimate=Estimate(0, 0, 0, Decimal(0)), count_request=False,
            )  # fmt: skip
        except ProxyError as exc:
            log.warning("budget correction of %s not applied: %s", row.name, exc.message)
            return
        quotas.settle(admission, cost_usd=delta, tokens=tokens - int(held_tokens or 0))

    # -- batches --------------------------------------------------------------------------

    async def _batch(
        self, caller: Caller, row: Resource, model: ModelId, op: Mapping[str, Any]
    ) -> None:
        results = batch_results(op)
        if isinstance(results, str):
            index = 0
            async for line in file_lines(self.pipeline.upstream, results):
                try:
                    item = orjson.loads(line)
                except orjson.JSONDecodeError:
                    item = {"error": {"code": 13, "message": "unreadable result line"}}
                self._response(caller, row, model, index, item)
                index += 1
            return
        for index, item in enumerate(results or ()):
            self._response(caller, row, model, index, item)

    def _response(
        self, caller: Caller, row: Resource, model: ModelId, index: int, item: Any
    ) -> None:
        pipe = self.pipeline
        embed = (row.detail or {}).get("method") == EMBED_OPERATION
        operation = EMBED_OPERATION if embed else BATCH_OPERATION
        call = pipe.open(caller, route=ROUTE, operation=operation, model=model)
        meter = call.meter
        meter.resource = row.name
        meter.event_id = derived_event_id(row.name, index)
        item = item if isinstance(item, Mapping) else {}
        detail: dict[str, Any] = {"index": index}
        if isinstance(key := item.get("key"), str):
            detail["key"] = key[:256]
        meter.detail = detail
        response = item.get("response")
        if not isinstance(response, Mapping):
            status = http_status_of(item.get("error"))
            self._count(row, call.close(status, error_class="batch_request_failed"), status)
            return
        if embed:  # an embedding's response counts its tokens as tokenCount, no usageMetadata
            meter.observe_usage(Usage(prompt_tokens=_int(response.get("tokenCount"))))
        else:
            meter.observe(response)
        usage = meter.usage
        assert usage is not None
        priced = price_call(pipe.catalog, model.name, usage, status=200, at=None, batch=True)
        self._count(row, call.close(200, priced=priced), 200)

    # -- videos ---------------------------------------------------------------------------

    def _video(self, caller: Caller, row: Resource, model: ModelId, op: Mapping[str, Any]) -> None:
        pipe = self.pipeline
        call = pipe.open(caller, route=ROUTE, operation=VIDEO_OPERATION, model=model)
        meter = call.meter
        meter.resource = row.name
        meter.event_id = derived_event_id(row.name, 0)
        if "error" in op or "response" not in op:
            status = http_status_of(op.get("error"))
            self._count(row, call.close(status, error_class="video_failed"), status)
            return
        detail = row.detail or {}
        per_video = int(detail.get("durationSeconds") or 0)
        videos = video_result(op)
        seconds = per_video * videos
        meter.detail = {"videos": videos, "videoSeconds": seconds}
        audio = bool(detail.get("audio", True))
        priced = price_video(pipe.catalog, model.name, seconds, audio=audio)
        self._count(row, call.close(200, priced=priced), 200)


def _int(value: Any) -> int:
    """An int64 as Google writes it (a string), or 0."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _model(row: Resource) -> ModelId:
    try:
        return model_id(row.model or "unknown", prefixed=True)
    except BadRequest:
        return model_id("unknown")
