"""OpenAI-compatible routes: glue between the pure translators and the metered-call pipeline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import ProxyError
from ..estimate import estimate_text_tokens
from ..formats import decimal_json
from ..httputil import parse_json_object, read_body
from ..metering.meter import CallMeter
from ..model_ids import ANY_MODEL, ModelId, model_id
from ..pipeline import CallResult, fail, finish, meter_headers, read_whole, stream
from ..services import authenticate
from ..sse import SSEDecoder, encode_sse, parse_event
from ..upstream import UpstreamResponse
from ..usage import Usage
from .chat import chat_request_to_gemini, gemini_reply_to_chat, new_completion_id
from .embeddings import embeddings_request_to_gemini, gemini_embeddings_to_openai
from .errors import UpstreamStreamError, openai_error_from_upstream, upstream_retry_after
from .models import gemini_model_to_openai, gemini_models_to_openai
from .stream import ChatStreamTranslator
from .tokens import encoding_needed
from .tokens import load as load_encoding

__all__ = ["get_model", "list_models", "routes"]

_JSON = {"content-type": "application/json"}
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
_INTERRUPTED = {
    "error": {"message": "The upstream stream was interrupted.", "type": "api_error",
              "param": None, "code": "upstream_stream_interrupted"}
}  # fmt: skip
# Gemini's list is paged; OpenAI's is not. Follow pages up to a bound.
_MAX_MODEL_PAGES = 20


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers={**_JSON, **(headers or {})})


def _model_id(model: str) -> ModelId:
    # Checked as given (less an optional "models/"), before any normalising could hide a path
    # trick such as "../../x".
    return model_id(model, prefixed=True)


def upstream_error(
    reply: UpstreamResponse, content: bytes, _: CallResult | None = None
) -> Response:
    """A Gemini failure in OpenAI's error envelope (every OpenAI route renders failures so)."""
    status, body = openai_error_from_upstream(reply.status_code, content)
    retry = upstream_retry_after(content)
    return _json(body, status, {"retry-after": str(retry)} if retry is not None else None)


def _add_cost(body: dict[str, Any], result: CallResult) -> None:
    # Some gateways report cost in usage; the exact decimal is in the header.
    if result.cost_usd is not None and isinstance(body.get("usage"), dict):
        body["usage"]["cost"] = decimal_json(result.cost_usd)


class ChatStream:
    """Gemini's SSE events in, OpenAI's chat chunks out, usage observed on the way."""

    __slots__ = ("_decoder", "_translator", "done")

    def __init__(self, translator: ChatStreamTranslator) -> None:
        self._decoder = SSEDecoder()
        self._translator = translator
        self.done = False

    def feed(self, chunk: bytes, meter: CallMeter) -> bytes | None:
        out: list[bytes] = []
        for data in self._decoder.feed(chunk):
            event = parse_event(data)
            if event is None:
                continue
            meter.observe(event)
            try:
                out.extend(encode_sse(c) for c in self._translator.feed(event))
            except UpstreamStreamError as exc:
                # An error after the 200 went out: tell the client in-band and stop.
                meter.error_class = "upstream_stream_error"
                out.append(encode_sse(exc.body))
                self.done = True
                break
        return b"".join(out) if out else None

    def interrupted(self) -> bytes:
        return encode_sse(_INTERRUPTED)

    def finish(self) -> bytes:
        return b"".join(encode_sse(c) for c in self._translator.finish()) + _DONE


async def chat_completions(request: Request) -> Response:
    svc, caller = await authenticate(request)
    payload = parse_json_object(await read_body(request, svc.settings.max_body_bytes))
    chat = chat_request_to_gemini(payload)
    model = _model_id(chat.model)
    method = "streamGenerateContent" if chat.stream else "generateContent"
    call = await svc.pipeline.admit(
        caller, route="openai", operation=method, model=model, request=chat.request,
        streamed=chat.stream, end_user=chat.user,
    )  # fmt: skip
    reply = await call.send(
        "POST", f"/v1beta/models/{model.name}:{method}",
        params=[("alt", "sse")] if chat.stream else [], content=orjson.dumps(chat.request),
        headers=_JSON, stream=chat.stream,
    )  # fmt: skip
    created = int(time.time())
    completion_id = new_completion_id()
    if chat.stream and reply.status_code == 200:
        translator = ChatStreamTranslator(
            model=model.name, completion_id=completion_id, created=created,
            include_usage=chat.include_usage,
        )  # fmt: skip
        return stream(call, reply, ChatStream(translator), _SSE)  # type: ignore[return-value]

    def succeeded(_: bytes, reply_body: dict[str, Any] | None, result: CallResult) -> Response:
        body = gemini_reply_to_chat(
            reply_body or {}, model=model.name, completion_id=completion_id, created=created
        )
        _add_cost(body, result)
        return _json(body, headers=meter_headers(call, result))

    return await finish(call, reply, succeeded, upstream_error)


async def embeddings(request: Request) -> Response:
    svc, caller = await authenticate(request)
    payload = parse_json_object(await read_body(request, svc.settings.max_body_bytes))
    if (encoding := encoding_needed(payload.get("input"), "input")) is not None:
        await asyncio.to_thread(load_encoding, encoding)  # token ids: parse the table off-loop
    emb = embeddings_request_to_gemini(payload)
    model = _model_id(emb.model)
    call = await svc.pipeline.admit(
        caller, route="openai", operation="batchEmbedContents", model=model,
        request=emb.request, end_user=emb.user,
    )  # fmt: skip
    tokens = estimate_text_tokens(emb.inputs)
    call.meter.estimate(Usage.estimate(tokens))
    # Gemini takes at most 100 texts a batch; more become several upstream calls, one row.
    vectors: list[Any] = []
    for batch in emb.batches(model=model.name):
        reply = await call.send(
            "POST", f"/v1beta/models/{model.name}:batchEmbedContents",
            content=orjson.dumps(batch), headers=_JSON,
        )  # fmt: skip
        if reply.status_code != 200:
            return await fail(call, reply, upstream_error)
        vectors.extend((parse_event(await read_whole(reply)) or {}).get("embeddings") or [])
    try:
        body = gemini_embeddings_to_openai({"embeddings": vectors}, emb, prompt_tokens=tokens)
    except ProxyError as exc:  # a malformed upstream reply: metered as what the client got
        call.close(exc.status_code, error_class="upstream_malformed_reply")
        raise
    result = call.close(200)
    return _json(body, headers=meter_headers(call, result))


async def list_models(request: Request) -> Response:
    svc, caller = await authenticate(request)
    call = svc.pipeline.open(caller, route="openai", operation="listModels", model=ANY_MODEL)
    models: list[Any] = []
    params = [("pageSize", "1000")]
    for _ in range(_MAX_MODEL_PAGES):
        reply = await call.send("GET", "/v1beta/models", params=params)
        if reply.status_code != 200:
            return await fail(call, reply, upstream_error)
        page = parse_event(await read_whole(reply)) or {}
        models.extend(page.get("models") or [])
        token = page.get("nextPageToken")
        if not isinstance(token, str) or not token:
            break
        params = [("pageSize", "1000"), ("pageToken", token)]
    call.close(200)
    return _json(gemini_models_to_openai({"models": models}))


async def get_model(request: Request) -> Response:
    svc, caller = await authenticate(request)
    model = _model_id(request.path_params["model"])
    call = await svc.pipeline.admit(
        caller, route="openai", operation="getModel", model=model, request={}
    )
    reply = await call.send("GET", f"/v1beta/models/{model.name}")
    if reply.status_code != 200:
        return await fail(call, reply, upstream_error)
    call.close(200)
    return _json(gemini_model_to_openai(parse_event(await read_whole(reply)) or {}))


def routes() -> list[BaseRoute]:
    # GET /v1/models[/{id}] is shared with the native API and dispatched in app.py.
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
