"""Native Gemini routes (/v1beta and /v1): forward bytes, observe usage on the way through."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import BadRequest, NotFound
from ..estimate import estimate_text_tokens, request_text
from ..httputil import forward_headers, parse_json_object, read_body, reply_headers
from ..model_ids import ANY_MODEL, ModelId, model_id
from ..pipeline import Observer, stream
from ..resources import check_references
from ..services import authenticate
from ..sse import JsonArrayDecoder, SSEDecoder
from ..usage import Usage
from . import batches, media
from .relay import passthrough
from .relay import version_of as _version

__all__ = ["get_model", "list_models", "routes"]

METHODS = frozenset(
    {
        "generateContent",
        "streamGenerateContent",
        "countTokens",
        "embedContent",
        "batchEmbedContents",
    }
)


# Model methods that make a stored resource or are priced per item: batches.py, media.py.
RESOURCE_METHODS = {
    "batchGenerateContent": batches.create_batch,
    "asyncBatchEmbedContent": batches.create_batch,
    "predict": media.predict,
    "predictLongRunning": media.predict_long_running,
}


def parse_target(target: str) -> tuple[ModelId, str]:
    """``gemini-2.5-flash:generateContent`` → (model, method), refusing anything else."""
    model, sep, method = target.rpartition(":")
    if not sep:
        raise NotFound(f"Unknown method path {target!r}: expected models/{{model}}:{{method}}.")
    if method not in METHODS:
        raise NotFound(f"Method {method!r} is not supported by the proxy.")
    return model_id(model), method


# Query parameters the upstream may see, per operation: the one allow-list. Everything else is
# dropped, Google's system parameters first of all — ``fields``/``$fields`` (a partial reply
# could leave out usageMetadata: a call billed $0), ``prettyPrint``, ``callback``, ``$alt``,
# ``quotaUser`` — and the client's own ``key`` never goes upstream.
QUERY_ALLOWED: dict[str, frozenset[str]] = {
    "streamGenerateContent": frozenset({"alt"}),
    "listModels": frozenset({"pageSize", "pageToken", "filter"}),
}
# ``alt`` picks the framing the proxy must read usage from: JSON (the default) or, on a
# stream, SSE. Anything else (``proto``, ``media``) would make usage unreadable: refused.
_ALT = {"streamGenerateContent": frozenset({"sse", "json"})}


def upstream_params(request: Request, operation: str) -> list[tuple[str, str]]:
    """The request's query parameters the upstream may see for ``operation`` (QUERY_ALLOWED)."""
    alts = set(request.query_params.getlist("alt"))
    accepted = _ALT.get(operation, frozenset({"json"}))
    if alts - accepted or len(alts) > 1:
        shown = ", ".join(sorted(repr(a[:20]) for a in alts))
        also = " or SSE (alt=sse)" if "sse" in accepted else ""
        raise BadRequest(f"Unsupported alt ({shown}): this route answers JSON{also}.")
    allowed = QUERY_ALLOWED.get(operation, frozenset())
    return [(k, v) for k, v in request.query_params.multi_items() if k in allowed]


async def call_model(request: Request) -> Response:
    version = _version(request)
    target = request.path_params["target"]
    head, _, name = target.rpartition(":")
    resource_method = RESOURCE_METHODS.get(name)
    if resource_method is not None:  # batches, Imagen, Veo: routes of their own modules
        return await resource_method(request, model_id(head), name)
    model, method = parse_target(target)
    svc, caller = await authenticate(request)
    params = upstream_params(request, method)
    body = await read_body(request, svc.settings.max_body_bytes)
    payload = parse_json_object(body)
    await check_references(svc.owners, caller, body, payload)  # another tenant's file: 404
    streamed = method == "streamGenerateContent"
    call = await svc.pipeline.admit(
        caller, route="native", operation=method, model=model, request=payload,
        streamed=streamed,
    )  # fmt: skip
    if method in ("embedContent", "batchEmbedContents"):
        call.meter.estimate(Usage.estimate(estimate_text_tokens(request_text(payload))))
    reply = await call.send(
        "POST",
        f"/{version}/models/{model.segment}:{method}",
        params=params,
        content=body,
        headers=forward_headers(request.headers),
        stream=streamed,
    )
    if streamed and reply.status_code == 200:
        sse = request.query_params.get("alt") == "sse"
        decoder = SSEDecoder() if sse else JsonArrayDecoder()
        return stream(call, reply, Observer(decoder), reply_headers(reply.headers))  # type: ignore[return-value]
    return await passthrough(call, reply)


async def list_models(request: Request) -> Response:
    version = _version(request)
    svc, caller = await authenticate(request)
    params = upstream_params(request, "listModels")
    call = svc.pipeline.open(caller, route="native", operation="listModels", model=ANY_MODEL)
    reply = await call.send("GET", f"/{version}/models", params=params)
    return await passthrough(call, reply)


async def get_model(request: Request) -> Response:
    version = _version(request)
    model = model_id(request.path_params["model"])
    svc, caller = await authenticate(request)
    params = upstream_params(request, "getModel")
    call = await svc.pipeline.admit(
        caller, route="native", operation="getModel", model=model, request={}
    )
    reply = await call.send("GET", f"/{version}/models/{model.segment}", params=params)
    return await passthrough(call, reply)


def routes() -> list[BaseRoute]:
    # GET /v1/models[/{id}] is shared with the OpenAI API and dispatched in app.py.
    return [
        *batches.routes(),
        *media.routes(),
        Route("/v1beta/models", list_models, methods=["GET"]),
        Route("/v1beta/models/{model}", get_model, methods=["GET"]),
        Route("/v1beta/models/{target:path}", call_model, methods=["POST"]),
        Route("/v1/models/{target:path}", call_model, methods=["POST"]),
    ]
