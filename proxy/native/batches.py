"""Batch mode through the proxy: ``models/{m}:batchGenerateContent`` and ``batches`` get / list /
cancel / delete, each batch its tenant's alone (docs/resources.md).

Creating a batch holds its worst case against the tenant's budgets and counts it as spent at
once (a batch outlives any quota hold), then corrects it to the real cost when the reconciler
meters its responses (docs/quotas.md). The creation itself is a $0 ledger row; every response
gets its own row at the batch rates when the batch ends (proxy/pipeline/resources.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..caller import Caller
from ..db.tables import Resource
from ..errors import BadRequest, NotFound, ProxyError, to_response
from ..estimate import CHARS_PER_TOKEN
from ..httputil import parse_json_object, read_body, reply_headers
from ..model_ids import ANY_MODEL, ModelId, model_id
from ..pipeline import MeteredCall, meter_headers, read_whole
from ..pipeline.resources import generated_files
from ..pricing.cost import PricedCall, price_call
from ..quotas.estimate import Estimate, batch_estimate, batch_factor
from ..resources import check_references
from ..services import Services, authenticate
from ..sse import parse_event
from ..upstream import UpstreamResponse
from ..usage import Usage
from .owned import page_size
from .relay import passthrough, start_operation, version_of

__all__ = [
    "after_poll",
    "create_batch",
    "free",
    "gemini_errors",
    "held_detail",
    "held_reply",
    "poll",
    "record",
    "routes",
]

log = logging.getLogger("gemini_meter.resources")

KIND = "batch"
EMBED_METHOD = "asyncBatchEmbedContent"
EMBED_REQUEST = "embedContent"  # what each request of an embeddings batch is
_NAME_ID = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
Handler = Callable[[Request], Awaitable[Response]]


def gemini_errors(handler: Handler) -> Handler:
    """Errors in Gemini's envelope, also under /v1 (where the app's default is OpenAI's)."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ProxyError as exc:
            return to_response(exc, "gemini")

    return wrapped


def field(obj: Any, camel: str, snake: str) -> Any:
    """A request field in either spelling (the REST API takes both)."""
    if not isinstance(obj, Mapping):
        return None
    return obj.get(camel, obj.get(snake))


def inline_requests(batch: Mapping[str, Any]) -> list[Mapping[str, Any]] | str:
    """The batch's inline requests, or the name of its input file; BadRequest otherwise."""
    config = field(batch, "inputConfig", "input_config")
    if not isinstance(config, Mapping):
        raise BadRequest("batch.inputConfig is required.")
    requests, file = config.get("requests"), field(config, "fileName", "file_name")
    if (requests is None) == (file is None):
        raise BadRequest("batch.inputConfig takes exactly one of requests and fileName.")
    if file is not None:
        if not isinstance(file, str) or not file.startswith("files/"):
            raise BadRequest("batch.inputConfig.fileName must name a file (files/...).")
        return file
    inner = requests.get("requests") if isinstance(requests, Mapping) else None
    if not isinstance(inner, list) or not inner:
        raise BadRequest("batch.inputConfig.requests.requests must be a non-empty list.")
    out = []
    for i, item in enumerate(inner):
        req = item.get("request") if isinstance(item, Mapping) else None
        if not isinstance(req, Mapping):
            raise BadRequest(f"batch.inputConfig.requests.requests[{i}].request is required.")
        out.append(req)
    return out


def batch_name(raw: str) -> str:
    """``batches/<id>`` from the path's id, refusing anything that is not a plain id."""
    if not raw or len(raw) > 128 or not set(raw.lower()) <= _NAME_ID:
        raise NotFound(f"Batch batches/{raw[:80]} not found.")
    return f"batches/{raw}"


async def _worst_case(
    svc: Services,
    caller: Caller,
    model: ModelId,
    source: list[Mapping[str, Any]] | str,
    operation: str,
) -> tuple[Estimate, int | None]:
    """The batch's worst case at batch rates, and its request count (None: in a file).

    Google lets nobody download an uploaded file, so a file's requests cannot be read: its
    size stands for them (its text as prompt tokens, as many again as output) — an estimate,
    not a bound, corrected when the batch is metered (docs/quotas.md)."""
    if not isinstance(source, str):
        factor = batch_factor(svc.catalog, model.name)
        est = batch_estimate(
            svc.catalog, model.name, source, batch_factor=factor, operation=operation
        )
        return est, len(source)
    row = await svc.owners.get(source, caller, kind="file")
    if row is None:
        raise NotFound(f"File {source} not found.")
    detail = row.detail or {}
    size = detail.get("sizeBytes", detail.get("bytes"))
    size = int(size) if isinstance(size, int | str) and str(size).isdigit() else 0
    tokens = -(-size // CHARS_PER_TOKEN)
    out = 0 if operation == EMBED_REQUEST else tokens
    usage = Usage(prompt_tokens=tokens, output_tokens=out)
    cost = price_call(svc.catalog, model.name, usage, status=200, at=None, batch=True).cost
    return Estimate(tokens, 0, out, cost), None


async def create_batch(request: Request, model: ModelId, method: str) -> Response:
    """``POST models/{m}:batchGenerateContent`` (or ``:asyncBatchEmbedContent``): the tenant's
    batch, its worst case held."""
    version = version_of(request)
    svc, caller = await authenticate(request)
    body = await read_body(request, svc.settings.max_body_bytes)
    payload = parse_json_object(body)
    batch = payload.get("batch")
    if not isinstance(batch, Mapping):
        raise BadRequest("The request needs a batch object.")
    source = inline_requests(batch)
    if not isinstance(source, str):  # files and caches its requests name: the tenant's own
        for inline in source:
            await check_references(svc.owners, caller, body, inline)
    each = EMBED_REQUEST if method == EMBED_METHOD else "generateContent"
    estimate, count = await _worst_case(svc, caller, model, source, each)
    call = await svc.pipeline.admit(
        caller, route="native", operation="batches.create", model=model, request=payload,
        estimate=estimate,
    )  # fmt: skip
    started = await start_operation(
        call, request, model, method, body, named=lambda n: n.startswith("batches/"),
        what="a batch",
    )  # fmt: skip
    if isinstance(started, Response):
        return started
    reply, content, op, name = started
    call.meter.resource = name
    detail = {
        "tenant": caller.tenant_name, "method": method, "requests": count,
        "input": "file" if isinstance(source, str) else "inline",
    } | held_detail(estimate)  # fmt: skip
    await record(svc, call, version, name, KIND, model, state=_state(op), detail=detail)
    call.meter.detail = {"requests": count}
    return held_reply(svc, call, reply, content, estimate)


def held_reply(
    svc: Services, call: MeteredCall, reply: UpstreamResponse, content: bytes, estimate: Estimate
) -> Response:
    """Close the call that made a batch or a video as a $0 row, its worst case counted as
    spent: it outlives any quota hold, and the reconciler corrects it to the real cost."""
    headers = call.quota_headers
    admission, call.admission = call.admission, None
    result = call.close(200, priced=free(svc, call.meter.operation))
    if admission is not None and svc.quotas is not None:
        svc.quotas.settle(admission, cost_usd=estimate.cost_usd, tokens=estimate.total_tokens)
    out = reply_headers(reply.headers) | meter_headers(call, result) | headers
    return Response(content, status_code=200, headers=out)


async def record(
    svc: Services,
    call: MeteredCall,
    version: str,
    name: str,
    kind: str,
    model: ModelId,
    **fields: Any,
) -> None:
    """Record the batch or operation ``call`` made as its tenant's. If that fails it was made
    upstream but nobody could ever meter it: it is cancelled, and the client refused."""
    try:
        await svc.owners.add(name, kind, call.meter.caller, model=model.name, **fields)
    except ProxyError as exc:
        try:
            reply = await call.send("POST", f"/{version}/{name}:cancel", content=b"{}")
            await reply.aclose()
        except ProxyError:
            pass
        call.close(exc.status_code, error_class="resource_not_recorded")
        raise


def held_detail(estimate: Estimate) -> dict[str, Any]:
    """What a batch or video holds of its tenant's budgets: corrected once it is metered."""
    held = estimate.cost_usd
    return {"heldUsd": None if held is None else str(held), "heldTokens": estimate.total_tokens}


def free(svc: Services, operation: str) -> PricedCall:
    return PricedCall(Decimal(0), True, svc.catalog.info().name, None, None,
                      reason=f"{operation} is not billed")  # fmt: skip


def _state(op: Mapping[str, Any]) -> str | None:
    meta = op.get("metadata")
    state = meta.get("state") if isinstance(meta, Mapping) else None
    return state[:48] if isinstance(state, str) else None


async def _owned(svc: Services, caller: Caller, name: str) -> Resource:
    row = await svc.owners.get(name, caller, kind=KIND)
    if row is None:
        raise NotFound(f"Batch {name} not found.")
    return row


async def after_poll(svc: Services, caller: Caller, row: Resource, op: Mapping[str, Any]) -> None:
    """A batch or video the tenant polled: the files Google made for it become the tenant's
    (so it can download them through the proxy), and a finished one not yet metered is
    metered now, in the background."""
    if op.get("done") is not True:
        return
    files = generated_files(op)
    if files:
        try:
            await svc.owners.adopt(files, "file", caller, detail={"madeFor": row.name})
        except ProxyError:  # the next poll tries again; the reply need not fail for it
            log.warning("could not record the files of %s as its tenant's", row.name)
    if row.metered_at is None:
        svc.reconciler.kick(row.name)


async def poll(
    svc: Services, caller: Caller, row: Resource, model: ModelId, version: str, operation: str
) -> Response:
    """GET the tenant's batch or video operation upstream, passed through as Google answers;
    then :func:`after_poll` on what it said."""
    call = svc.pipeline.open(caller, route="native", operation=operation, model=model)
    call.meter.resource = row.name
    reply = await call.send("GET", f"/{version}/{row.name}")
    response = await passthrough(call, reply)
    op = parse_event(reply.content) if reply.status_code == 200 else None
    if op is not None:
        await after_poll(svc, caller, row, op)
    return response


def _model(row: Resource) -> ModelId:
    return model_id(row.model or "unknown", prefixed=True)


# How long a delete waits for a metering another task or replica is running.
METERING_WAIT = 5.0


async def _metered_soon(svc: Services, caller: Caller, row: Resource) -> Resource:
    """The batch's record once it is metered — by whoever holds its claim now (``claimed_by``:
    polling or metering it), or here once nobody does — or, if it is still running, as it
    stands; at most METERING_WAIT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + METERING_WAIT
    while True:
        row = await svc.owners.get(row.name, caller, kind=KIND) or row
        if row.metered_at is not None or loop.time() >= deadline:
            return row
        if row.claimed_by is None:
            # Nobody is on it (a poll that saw it running may have let go just now): meter
            # it here if it is done; if it is not, it is still running.
            if not await svc.reconciler.reconcile(row.name):
                fresh = await svc.owners.get(row.name, caller, kind=KIND) or row
                if fresh.claimed_by is None and fresh.metered_at is None:
                    return fresh
            continue
        await asyncio.sleep(0.1)


@gemini_errors
async def batch(request: Request) -> Response:
    """GET / DELETE ``batches/{id}``, POST ``batches/{id}:cancel``."""
    version = version_of(request)
    raw = request.path_params["name"]
    ident, _, verb = raw.partition(":")
    svc, caller = await authenticate(request)
    name = batch_name(ident)
    method = request.method
    if (method == "POST") != (verb == "cancel") or (verb and verb != "cancel"):
        raise NotFound(f"Unknown method {method} {name}{':' + verb if verb else ''}.")
    row = await _owned(svc, caller, name)
    model = _model(row)
    if method == "GET":
        return await poll(svc, caller, row, model, version, "batches.get")
    if method == "POST":
        call = svc.pipeline.open(caller, route="native", operation="batches.cancel", model=model)
        call.meter.resource = name
        reply = await call.send("POST", f"/{version}/{name}:cancel", content=b"{}")
        return await passthrough(call, reply)
    if row.metered_at is None:
        # Once deleted upstream its results are gone: it must be metered first — here, or by
        # whoever holds its claim now (the background loop, another replica): wait for that.
        if await svc.reconciler.reconcile(name):
            row = await svc.owners.get(name, caller, kind=KIND) or row
        else:
            row = await _metered_soon(svc, caller, row)
    if row.metered_at is None:
        raise BadRequest(
            f"Batch {name} has not ended or its results are not metered yet: cancel it (or "
            "wait for it to end), then delete it.",
            status_code=400,
        )
    call = svc.pipeline.open(caller, route="native", operation="batches.delete", model=model)
    call.meter.resource = name
    reply = await call.send("DELETE", f"/{version}/{name}")
    if reply.status_code in (200, 404):
        await svc.owners.delete(name)
    return await passthrough(call, reply)


@gemini_errors
async def list_batches(request: Request) -> Response:
    """GET ``batches``: the tenant's own batches, newest first, as Google lists them."""
    version = version_of(request)
    svc, caller = await authenticate(request)
    size = page_size(request.query_params.get("pageSize"))
    page = await svc.owners.page(caller, KIND, size, request.query_params.get("pageToken"))
    call = svc.pipeline.open(caller, route="native", operation="batches.list", model=ANY_MODEL)
    try:
        replies = await asyncio.gather(
            *(call.send("GET", f"/{version}/{row.name}") for row in page.rows)
        )
    except ProxyError as exc:
        call.close(exc.status_code, error_class=type(exc).__name__)
        raise
    ops = []
    for row, reply in zip(page.rows, replies, strict=True):
        content = await read_whole(reply)
        op = parse_event(content) if reply.status_code == 200 else None
        if op is not None:
            ops.append(op)
            await after_poll(svc, caller, row, op)
    body: dict[str, Any] = {"operations": ops}
    if page.next_token:
        body["nextPageToken"] = page.next_token
    result = call.close(200, priced=free(svc, "batches.list"))
    headers = meter_headers(call, result)
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for v in ("v1beta", "v1"):
        out += [
            Route(f"/{v}/batches", list_batches, methods=["GET"]),
            Route(f"/{v}/batches/{{name}}", batch, methods=["GET", "POST", "DELETE"]),
        ]
    return out
