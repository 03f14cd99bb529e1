"""Native Gemini routes (/v1beta and /v1): forward bytes, observe usage on the way through."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import BadRequest, NotFound
from ..forwarding import (
    COST_HEADER,
    OVERHEAD_HEADER,
    authenticate,
    open_meter,
    quota_headers,
    read_whole,
    send_metered,
    stream_closer,
)
from ..httputil import forward_headers, parse_json_object, read_body, reply_headers
from ..metering.call import CallMeter
from ..metering.estimate import estimate_text_tokens, request_text
from ..metering.usage import Usage
from ..redact import StreamScrubber, scrub_bytes
from ..sse import EventDecoder, JsonArrayDecoder, SSEDecoder, parse_event
from ..streaming import WatchedStream
from ..upstream import UpstreamResponse

__all__ = ["check_model_id", "get_model", "list_models", "routes"]

METHODS = frozenset(
    {
        "generateContent",
        "streamGenerateContent",
        "countTokens",
        "embedContent",
        "batchEmbedContents",
    }
)
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

# A model id is one path segment of safe characters: nothing that could climb or leave the
# upstream path the proxy means to call (no '/', no '..' prefix, no scheme, no '%').
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def parse_target(target: str) -> tuple[str, str]:
    """``gemini-2.5-flash:generateContent`` → (model, method), refusing anything else."""
    model, sep, method = target.rpartition(":")
    if not sep:
        raise NotFound(f"Unknown method path {target!r}: expected models/{{model}}:{{method}}.")
    if method not in METHODS:
        raise NotFound(f"Method {method!r} is not supported by the proxy.")
    check_model_id(model)
    return model, method


def check_model_id(model: str) -> None:
    if not _MODEL_ID.fullmatch(model):
        raise BadRequest(f"Invalid model name {model[:80]!r}.")


def _version(request: Request) -> str:
    # Only the two registered prefixes route here: "/v1beta/..." or "/v1/...".
    return "v1beta" if request.url.path.startswith("/v1beta/") else "v1"


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
    model, method = parse_target(request.path_params["target"])
    svc, key = await authenticate(request)
    params = upstream_params(request, method)
    body = await read_body(request, svc.settings.max_body_bytes)
    payload = parse_json_object(body)
    streamed = method == "streamGenerateContent"
    meter = await open_meter(
        svc, key, route="native", operation=method, model=model, request=payload,
        streamed=streamed,
    )  # fmt: skip
    if method in ("embedContent", "batchEmbedContents"):
        meter.estimate(Usage.estimate(estimate_text_tokens(request_text(payload))))
    reply = await send_metered(
        svc,
        meter,
        "POST",
        f"/{version}/models/{model}:{method}",
        params=params,
        content=body,
        headers=forward_headers(request.headers),
        stream=streamed,
    )
    if streamed and reply.status_code == 200:
        sse = request.query_params.get("alt") == "sse"
        return WatchedStream(  # type: ignore[return-value]
            _forward(reply, meter, SSEDecoder() if sse else JsonArrayDecoder()),
            headers=reply_headers(reply.headers) | quota_headers(meter),
            on_close=stream_closer(reply, meter),
        )
    return await finish_plain(reply, meter)


async def finish_plain(reply: UpstreamResponse, meter: CallMeter) -> Response:
    """A whole (non-stream, or failed stream) reply: observe, price, pass through."""
    content = await read_whole(reply)
    status = reply.status_code
    if status == 200:
        obj = parse_event(content)
        if obj is not None:
            meter.observe(obj)
    result = meter.close(status, error_class=None if status == 200 else f"upstream_{status}")
    headers = reply_headers(reply.headers) | quota_headers(meter)
    headers[OVERHEAD_HEADER] = f"{result.overhead_ms:.3f}"
    if result.cost_usd is not None:
        headers[COST_HEADER] = str(result.cost_usd)
    # Google quotes the key in some error messages: no byte of it reaches the client.
    return Response(scrub_bytes(content), status_code=status, headers=headers)


async def _forward(
    reply: UpstreamResponse, meter: CallMeter, decoder: EventDecoder
) -> AsyncIterator[bytes]:
    # The bytes go out as they came, less any key an error event quotes (even one the
    # network split over two chunks: the scrubber holds back a tail that may begin one).
    scrubber = StreamScrubber()
    try:
        async for chunk in reply.aiter_bytes():
            meter.first_byte()
            for data in decoder.feed(chunk):
                event = parse_event(data)
                if event is not None:
                    if "error" in event:
                        meter.error_class = "upstream_stream_error"
                    meter.observe(event)
            if out := scrubber.feed(chunk):
                yield out
    except httpx.TransportError as exc:
        # Nothing can be said to the client once the status went out; the row tells.
        meter.error_class = f"upstream_{type(exc).__name__}"
    if tail := scrubber.flush():
        yield tail


async def list_models(request: Request) -> Response:
    version = _version(request)
    svc, key = await authenticate(request)
    params = upstream_params(request, "listModels")
    meter = svc.metering.open(key, route="native", operation="listModels", model="*")
    reply = await send_metered(svc, meter, "GET", f"/{version}/models", params=params)
    return await finish_plain(reply, meter)


async def get_model(request: Request) -> Response:
    version = _version(request)
    model = request.path_params["model"]
    check_model_id(model)
    svc, key = await authenticate(request)
    params = upstream_params(request, "getModel")
    meter = await open_meter(
        svc, key, route="native", operation="getModel", model=model, request={}
    )
    reply = await send_metered(svc, meter, "GET", f"/{version}/models/{model}", params=params)
    return await finish_plain(reply, meter)


def routes() -> list[BaseRoute]:
    # GET /v1/models[/{id}] is shared with the OpenAI API and dispatched in app.py.
    return [
        Route("/v1beta/models", list_models, methods=["GET"]),
        Route("/v1beta/models/{model}", get_model, methods=["GET"]),
        Route("/v1beta/models/{target:path}", call_model, methods=["POST"]),
        Route("/v1/models/{target:path}", call_model, methods=["POST"]),
    ]
