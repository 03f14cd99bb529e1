"""OpenAI-compatible routes: glue between the pure translators and the metered-call pipeline.

Every route is served under ``/v1`` and under ``/v1beta/openai``, Google's own
OpenAI-compatible base path, so apps written for that endpoint change only the host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import NotFound, ProxyError
from ..estimate import estimate_text_tokens, request_text
from ..formats import decimal_json
from ..httputil import parse_json_object, read_body
from ..model_ids import ANY_MODEL, ModelId, model_id
from ..pipeline import CallResult, MeteredCall, fail, finish, meter_headers, read_whole, stream
from ..pricing.cost import PricedCall
from ..pricing.media import price_images
from ..quotas.estimate import Estimate
from ..resources import check_references
from ..services import authenticate
from ..sse import parse_event
from ..upstream import UpstreamResponse
from ..usage import Usage
from .chat import chat_request_to_gemini, gemini_reply_to_chat, new_completion_id
from .completions import (
    CompletionsStreamTranslator,
    completions_request_to_gemini,
    gemini_replies_to_completion,
    new_text_completion_id,
)
from .embeddings import embeddings_request_to_gemini, gemini_embeddings_to_openai
from .errors import openai_error_from_upstream, upstream_retry_after
from .images import image_count, imagen_reply_to_openai, images_request_to_imagen
from .models import gemini_model_to_openai, gemini_models_to_openai
from .responses import gemini_reply_to_response, new_response_id, responses_request_to_gemini
from .responses_stream import ResponsesStreamTranslator
from .stream import ChatStreamTranslator
from .streams import ChatStream, CompletionsStream, PromptStreams, ResponsesStream
from .tokens import encoding_needed
from .tokens import load as load_encoding

__all__ = ["GOOGLE_BASE", "get_model", "list_models", "routes"]

# Google's OpenAI-compatible base path: served exactly as /v1.
GOOGLE_BASE = "/v1beta/openai"

_JSON = {"content-type": "application/json"}
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}
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


class _Translated(Protocol):
    """What the routes read of a translated generate request (chat, Responses, completions)."""

    @property
    def model(self) -> str: ...
    @property
    def stream(self) -> bool: ...
    @property
    def user(self) -> str | None: ...


C = TypeVar("C", bound=_Translated)


async def _admit(
    request: Request,
    translate: Callable[[dict[str, Any]], C],
    admission_request: Callable[[C], Mapping[str, Any]],
    tokens_in: str | None = None,
) -> tuple[C, ModelId, MeteredCall]:
    """Authenticate, read and translate the body, admit the call against the tenant's quotas.
    ``tokens_in``: the field that may hold token ids to decode (their table loads off-loop)."""
    svc, caller = await authenticate(request)
    body = await read_body(request, svc.settings.max_body_bytes)
    payload = parse_json_object(body)
    if tokens_in and (encoding := encoding_needed(payload.get(tokens_in), tokens_in)):
        await asyncio.to_thread(load_encoding, encoding)
    translated = translate(payload)
    model = _model_id(translated.model)
    # A file URI or cached content of another tenant's: 404, as if it did not exist.
    await check_references(svc.owners, caller, body, admission_request(translated))
    call = await svc.pipeline.admit(
        caller, route="openai", operation=_method(translated.stream), model=model,
        request=admission_request(translated), streamed=translated.stream,
        end_user=translated.user,
    )  # fmt: skip
    return translated, model, call


def _method(streamed: bool) -> str:
    return "streamGenerateContent" if streamed else "generateContent"


async def _generate(
    call: MeteredCall, model: ModelId, body: Mapping[str, Any], streamed: bool
) -> UpstreamResponse:
    return await call.send(
        "POST", f"/v1beta/models/{model.name}:{_method(streamed)}",
        params=[("alt", "sse")] if streamed else [], content=orjson.dumps(body),
        headers=_JSON, stream=streamed,
    )  # fmt: skip


async def chat_completions(request: Request) -> Response:
    chat, model, call = await _admit(request, chat_request_to_gemini, lambda c: c.request)
    reply = await _generate(call, model, chat.request, chat.stream)
    created = int(time.time())
    completion_id = new_completion_id()
    if chat.stream and reply.status_code == 200:
        translator = ChatStreamTranslator(
            model=model.name, completion_id=completion_id, created=created,
            include_usage=chat.include_usage,
        )  # fmt: skip
        return stream(call, reply, ChatStream(call, translator), _SSE)  # type: ignore[return-value]

    def succeeded(_: bytes, reply_body: dict[str, Any] | None, result: CallResult) -> Response:
        body = gemini_reply_to_chat(
            reply_body or {}, model=model.name, completion_id=completion_id, created=created
        )
        _add_cost(body, result)
        return _json(body, headers=meter_headers(call, result))

    return await finish(call, reply, succeeded, upstream_error)


async def responses(request: Request) -> Response:
    rc, model, call = await _admit(request, responses_request_to_gemini, lambda c: c.request)
    reply = await _generate(call, model, rc.request, rc.stream)
    created = int(time.time())
    response_id = new_response_id()
    if rc.stream and reply.status_code == 200:
        translator = ResponsesStreamTranslator(
            rc, model=model.name, response_id=response_id, created_at=created
        )
        handler = ResponsesStream(call, translator)
        return stream(call, reply, handler, _SSE, head=handler.head())  # type: ignore[return-value]

    def succeeded(_: bytes, reply_body: dict[str, Any] | None, result: CallResult) -> Response:
        body = gemini_reply_to_response(
            reply_body or {}, rc, model=model.name, response_id=response_id,
            created_at=created, cost=result.cost_usd,
        )  # fmt: skip
        return _json(body, headers=meter_headers(call, result))

    return await finish(call, reply, succeeded, upstream_error)


async def stored_response(request: Request) -> Response:
    """GET / DELETE /v1/responses/{id} and its sub-routes: nothing is stored, so nothing is
    found — said in OpenAI's words, with the way out."""
    await authenticate(request)
    response_id = request.path_params["response_id"][:80]
    raise NotFound(
        f"Response with id {response_id!r} not found: this Gemini proxy does not store "
        "responses (see 'store' and 'previous_response_id' in its docs); send the whole "
        "conversation in 'input' instead."
    )


async def completions(request: Request) -> Response:
    comp, model, call = await _admit(
        request, completions_request_to_gemini, lambda c: c.admission_request, "prompt"
    )
    created = int(time.time())
    completion_id = new_text_completion_id()
    if comp.stream:
        first = await _generate(call, model, comp.requests[0], True)
        if first.status_code != 200:
            return await fail(call, first, upstream_error)
        translator = CompletionsStreamTranslator(
            model=model.name, completion_id=completion_id, created=created, n=comp.n,
            include_usage=comp.include_usage,
        )  # fmt: skip
        handler = CompletionsStream(call, translator)
        reply: UpstreamResponse = first
        if len(comp.requests) > 1:
            reply = PromptStreams(
                first,
                lambda prompt: _generate(call, model, comp.requests[prompt], True),
                len(comp.requests),
                handler,
            )
        return stream(call, reply, handler, _SSE)  # type: ignore[return-value]
    # One call per prompt, in turn: each reply is metered before the next call goes out, so a
    # failure part-way still bills the prompts answered (one row, their usages added).
    replies: list[dict[str, Any]] = []
    for prompt, body in enumerate(comp.requests):
        upstream = await _generate(call, model, body, False)
        if upstream.status_code != 200:
            return await fail(call, upstream, upstream_error)
        replies.append(parse_event(await read_whole(upstream)) or {})
        call.meter.observe(replies[-1], prompt)
    result = call.close(200)
    body = gemini_replies_to_completion(
        replies, comp, model=model.name, completion_id=completion_id, created=created,
        cost=result.cost_usd,
    )  # fmt: skip
    return _json(body, headers=meter_headers(call, result))


async def embeddings(request: Request) -> Response:
    emb, model, call = await _admit_embeddings(request)
    tokens = estimate_text_tokens(emb.inputs)
    call.meter.estimate(Usage.estimate(tokens))
    # Gemini takes at most 100 texts a batch; more become several upstream calls, one row.
    vectors: list[Any] = []
    for part, batch in enumerate(emb.batches(model=model.name)):
        reply = await call.send(
            "POST", f"/v1beta/models/{model.name}:batchEmbedContents",
            content=orjson.dumps(batch), headers=_JSON,
        )  # fmt: skip
        if reply.status_code != 200:
            return await fail(call, reply, upstream_error)
        # Billed once answered, even if a later batch fails.
        call.meter.observe_usage(Usage.estimate(estimate_text_tokens(request_text(batch))), part)
        vectors.extend((parse_event(await read_whole(reply)) or {}).get("embeddings") or [])
    try:
        body = gemini_embeddings_to_openai({"embeddings": vectors}, emb, prompt_tokens=tokens)
    except ProxyError as exc:  # a malformed upstream reply: metered as what the client got
        call.close(exc.status_code, error_class="upstream_malformed_reply")
        raise
    result = call.close(200)
    return _json(body, headers=meter_headers(call, result))


async def _admit_embeddings(request: Request) -> tuple[Any, ModelId, MeteredCall]:
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
    return emb, model, call


async def images_generations(request: Request) -> Response:
    """``/v1/images/generations`` → Imagen ``:predict``: one call, priced per image made; the
    worst case (every image asked for) is held at admission."""
    svc, caller = await authenticate(request)
    payload = parse_json_object(await read_body(request, svc.settings.max_body_bytes))
    ic = images_request_to_imagen(payload)
    model = _model_id(ic.model)
    worst = price_images(svc.catalog, model.name, ic.n).cost
    call = await svc.pipeline.admit(
        caller, route="openai", operation="predict", model=model, request=ic.request,
        end_user=ic.user, estimate=Estimate(0, 0, 0, worst),
    )  # fmt: skip
    reply = await call.send(
        "POST", f"/v1beta/models/{model.name}:predict", content=orjson.dumps(ic.request),
        headers=_JSON,
    )  # fmt: skip
    created = int(time.time())

    def price(body: dict[str, Any]) -> PricedCall:
        n = image_count(body)
        call.meter.detail = {"images": n}
        return price_images(svc.catalog, model.name, n)

    def succeeded(_: bytes, reply_body: dict[str, Any] | None, result: CallResult) -> Response:
        body = imagen_reply_to_openai(reply_body or {}, created=created)
        return _json(body, headers=meter_headers(call, result))

    return await finish(call, reply, succeeded, upstream_error, price=price)


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
    """The OpenAI routes under /v1 and under Google's base path. GET /v1/models[/{id}] is
    shared with the native API and dispatched in app.py; under Google's path it is OpenAI's."""
    out: list[BaseRoute] = []
    for base in ("/v1", GOOGLE_BASE):
        stored = f"{base}/responses/{{response_id}}"
        out += [
            Route(f"{base}/chat/completions", chat_completions, methods=["POST"]),
            Route(f"{base}/embeddings", embeddings, methods=["POST"]),
            Route(f"{base}/responses", responses, methods=["POST"]),
            Route(stored, stored_response, methods=["GET", "DELETE"]),
            Route(f"{stored}/cancel", stored_response, methods=["POST"]),
            Route(f"{stored}/input_items", stored_response, methods=["GET"]),
            Route(f"{base}/completions", completions, methods=["POST"]),
            Route(f"{base}/images/generations", images_generations, methods=["POST"]),
        ]
    return [
        *out,
        Route(f"{GOOGLE_BASE}/models", list_models, methods=["GET"]),
        Route(f"{GOOGLE_BASE}/models/{{model}}", get_model, methods=["GET"]),
    ]
