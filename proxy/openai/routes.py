"""OpenAI-compatible routes: glue between the pure translators and the metered upstream call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import ProxyError
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
from ..httputil import parse_json_object, read_body
from ..metering.call import CallMeter, MeterResult
from ..metering.estimate import estimate_text_tokens
from ..metering.usage import Usage
from ..native.routes import check_model_id
from ..pricing.catalog import normalize_model
from ..redact import scrub_bytes
from ..sse import SSEDecoder, encode_sse, parse_event
from ..streaming import WatchedStream
from ..upstream import UpstreamResponse
from .chat import chat_request_to_gemini, gemini_reply_to_chat, new_completion_id
from .embeddings import embeddings_request_to_gemini, gemini_embeddings_to_openai
from .errors import UpstreamStreamError, openai_error_from_upstream, upstream_retry_after
from .models import gemini_model_to_openai, gemini_models_to_openai
from .stream import ChatStreamTranslator

__all__ = ["get_model", "list_models", "routes"]

_JSON = {"content-type": "application/json"}
_DONE = b"data: [DONE]\n\n"
# Gemini's list is paged; OpenAI's is not. Follow pages up to a bound.
_MAX_MODEL_PAGES = 20


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # Every body here carries what the upstream said: no key-shaped string gets through.
    content = scrub_bytes(orjson.dumps(body))
    return Response(content, status_code=status, headers={**_JSON, **(headers or {})})


def _model_id(model: str) -> str:
    # Check the id as given (less an optional "models/"), before any normalising could hide
    # a path trick such as "../../x".
    model = model.strip().removeprefix("models/")
    check_model_id(model)
    return normalize_model(model)


def _upstream_error(reply: UpstreamResponse, content: bytes) -> Response:
    status, body = openai_error_from_upstream(reply.status_code, content)
    retry = upstream_retry_after(content)
    return _json(body, status, {"retry-after": str(retry)} if retry is not None else None)


def _reply_headers(meter: CallMeter, result: MeterResult) -> dict[str, str]:
    headers = quota_headers(meter)
    headers[OVERHEAD_HEADER] = f"{result.overhead_ms:.3f}"
    if result.cost_usd is not None:
        headers[COST_HEADER] = str(result.cost_usd)
    return headers


def _add_cost(body: dict[str, Any], result: MeterResult) -> None:
    # Some gateways report cost in usage; the exact decimal is in the header.
    if result.cost_usd is not None and isinstance(body.get("usage"), dict):
        body["usage"]["cost"] = float(result.cost_usd)


async def chat_completions(request: Request) -> Response:
    svc, key = await authenticate(request)
    payload = parse_json_object(await read_body(request, svc.settings.max_body_bytes))
    call = chat_request_to_gemini(payload)
    model = _model_id(call.model)
    method = "streamGenerateContent" if call.stream else "generateContent"
    meter = await open_meter(
        svc, key, route="openai", operation=method, model=model, request=call.request,
        streamed=call.stream, end_user=call.user,
    )  # fmt: skip
    reply = await send_metered(
        svc, meter, "POST", f"/v1beta/models/{model}:{method}",
        params=[("alt", "sse")] if call.stream else [], content=orjson.dumps(call.request),
        headers=_JSON, stream=call.stream,
    )  # fmt: skip
    created = int(time.time())
    completion_id = new_completion_id()
    if reply.status_code != 200:
        content = await read_whole(reply)
        meter.close(reply.status_code, error_class=f"upstream_{reply.status_code}")
        return _upstream_error(reply, content)
    if call.stream:
        translator = ChatStreamTranslator(
            model=model, completion_id=completion_id, created=created,
            include_usage=call.include_usage,
        )  # fmt: skip
        return WatchedStream(  # type: ignore[return-value]
            _translate_stream(reply, meter, translator),
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
            | quota_headers(meter),
            on_close=stream_closer(reply, meter),
        )
    obj = parse_event(reply.content) or {}
    meter.observe(obj)
    result = meter.close(200)
    body = gemini_reply_to_chat(obj, model=model, completion_id=completion_id, created=created)
    _add_cost(body, result)
    return _json(body, headers=_reply_headers(meter, result))


async def _translate_stream(
    reply: UpstreamResponse, meter: CallMeter, translator: ChatStreamTranslator
) -> AsyncIterator[bytes]:
    decoder = SSEDecoder()
    try:
        async for chunk in reply.aiter_bytes():
            meter.first_byte()
            out: list[bytes] = []
            for data in decoder.feed(chunk):
                event = parse_event(data)
                if event is None:
                    continue
                meter.observe(event)
                try:
                    out.extend(encode_sse(c) for c in translator.feed(event))
                except UpstreamStreamError as exc:
                    # An error after the 200 went out: tell the client in-band and stop.
                    meter.error_class = "upstream_stream_error"
                    out.append(encode_sse(exc.body))
                    yield scrub_bytes(b"".join(out))
                    return
            if out:
                yield scrub_bytes(b"".join(out))
    except httpx.TransportError as exc:
        meter.error_class = f"upstream_{type(exc).__name__}"
        yield encode_sse(
            {"error": {"message": "The upstream stream was interrupted.", "type": "api_error",
                       "param": None, "code": "upstream_stream_interrupted"}}
        )  # fmt: skip
        return
    yield b"".join(encode_sse(c) for c in translator.finish()) + _DONE


async def embeddings(request: Request) -> Response:
    svc, key = await authenticate(request)
    payload = parse_json_object(await read_body(request, svc.settings.max_body_bytes))
    call = embeddings_request_to_gemini(payload)
    model = _model_id(call.model)
    meter = await open_meter(
        svc, key, route="openai", operation="batchEmbedContents", model=model,
        request=call.request, end_user=call.user,
    )  # fmt: skip
    tokens = estimate_text_tokens(call.inputs)
    meter.estimate(Usage.estimate(tokens))
    # Gemini takes at most 100 texts a batch; more become several upstream calls, one row.
    vectors: list[Any] = []
    for batch in call.batches(model=model):
        reply = await send_metered(
            svc, meter, "POST", f"/v1beta/models/{model}:batchEmbedContents",
            content=orjson.dumps(batch), headers=_JSON,
        )  # fmt: skip
        if reply.status_code != 200:
            meter.close(reply.status_code, error_class=f"upstream_{reply.status_code}")
            return _upstream_error(reply, reply.content)
        vectors.extend((parse_event(reply.content) or {}).get("embeddings") or [])
    try:
        body = gemini_embeddings_to_openai({"embeddings": vectors}, call, prompt_tokens=tokens)
    except ProxyError as exc:  # a malformed upstream reply: metered as what the client got
        meter.close(exc.status_code, error_class="upstream_malformed_reply")
        raise
    result = meter.close(200)
    return _json(body, headers=_reply_headers(meter, result))


async def list_models(request: Request) -> Response:
    svc, key = await authenticate(request)
    meter = svc.metering.open(key, route="openai", operation="listModels", model="*")
    models: list[Any] = []
    params = [("pageSize", "1000")]
    for _ in range(_MAX_MODEL_PAGES):
        reply = await send_metered(svc, meter, "GET", "/v1beta/models", params=params)
        if reply.status_code != 200:
            meter.close(reply.status_code, error_class=f"upstream_{reply.status_code}")
            return _upstream_error(reply, reply.content)
        page = parse_event(reply.content) or {}
        models.extend(page.get("models") or [])
        token = page.get("nextPageToken")
        if not isinstance(token, str) or not token:
            break
        params = [("pageSize", "1000"), ("pageToken", token)]
    meter.close(200)
    return _json(gemini_models_to_openai({"models": models}))


async def get_model(request: Request) -> Response:
    svc, key = await authenticate(request)
    model = _model_id(request.path_params["model"])
    meter = await open_meter(
        svc, key, route="openai", operation="getModel", model=model, request={}
    )
    reply = await send_metered(svc, meter, "GET", f"/v1beta/models/{model}")
    if reply.status_code != 200:
        meter.close(reply.status_code, error_class=f"upstream_{reply.status_code}")
        return _upstream_error(reply, reply.content)
    meter.close(200)
    return _json(gemini_model_to_openai(parse_event(reply.content) or {}))


def routes() -> list[BaseRoute]:
    # GET /v1/models[/{id}] is shared with the native API and dispatched in app.py.
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
