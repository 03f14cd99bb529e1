"""Imagen and Veo through the proxy.

- ``models/{imagen}:predict``: one call, priced per image the reply holds (images the safety
  filter removed are not billed); its worst case (every image asked for) is held at admission.
- ``models/{veo}:predictLongRunning``: the call that starts a video is a $0 row; the operation
  it names is the tenant's (``GET models/{m}/operations/{id}`` answers 404 to anyone else) and
  is metered once, when done, by the reconciler: seconds of video = the request's
  ``durationSeconds`` (Veo's reply names no duration) × the videos the result holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import BadRequest, NotFound
from ..httputil import forward_headers, parse_json_object, read_body
from ..model_ids import ModelId, model_id
from ..pipeline import MeteredCall
from ..pricing.cost import PricedCall
from ..pricing.media import image_count, price_images, price_video
from ..quotas.estimate import Estimate
from ..services import Services, authenticate
from .batches import gemini_errors, held_detail, held_reply, poll, record
from .relay import passthrough, start_operation, version_of

__all__ = ["imagen_price", "predict", "predict_long_running", "routes", "video_request"]

# Imagen's and Veo's defaults and caps (Gemini API reference: sampleCount 1-4, Imagen 4 by
# default; a Veo video is 8 seconds unless durationSeconds says otherwise).
IMAGEN_DEFAULT_SAMPLES = 4
VEO_DEFAULT_SAMPLES = 1
VEO_DEFAULT_SECONDS = 8
MAX_SAMPLES = 4
MAX_VIDEO_SECONDS = 60


def _int(params: Mapping[str, Any], name: str, default: int, top: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
        raise BadRequest(f"parameters.{name} must be an integer from 1 to {top}.")
    return value


def media_request(payload: Mapping[str, Any]) -> tuple[list[Any], Mapping[str, Any]]:
    """The instances and parameters of a ``:predict`` / ``:predictLongRunning`` body."""
    instances, params = payload.get("instances"), payload.get("parameters") or {}
    if not isinstance(instances, list) or not instances:
        raise BadRequest("instances must be a non-empty list.")
    if not isinstance(params, Mapping):
        raise BadRequest("parameters must be an object.")
    return instances, params


def video_request(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a Veo request commits to: seconds a video, how many, with sound or not."""
    _, params = media_request(payload)
    seconds = _int(params, "durationSeconds", VEO_DEFAULT_SECONDS, MAX_VIDEO_SECONDS)
    count = _int(params, "sampleCount", VEO_DEFAULT_SAMPLES, MAX_SAMPLES)
    audio = params.get("generateAudio", True) is not False
    return {"durationSeconds": seconds, "sampleCount": count, "audio": audio}


def imagen_price(svc: Services, call: MeteredCall, model: ModelId) -> Any:
    """The ``price`` of a ``:predict`` reply: per image made, noted on the call's row."""

    def price(body: dict[str, Any]) -> PricedCall:
        n = image_count(body)
        call.meter.detail = {"images": n}
        return price_images(svc.catalog, model.name, n)

    return price


async def predict(request: Request, model: ModelId, method: str) -> Response:
    """Imagen ``:predict``, priced per generated image."""
    version = version_of(request)
    svc, caller = await authenticate(request)
    body = await read_body(request, svc.settings.max_body_bytes)
    payload = parse_json_object(body)
    instances, params = media_request(payload)
    most = len(instances) * _int(params, "sampleCount", IMAGEN_DEFAULT_SAMPLES, MAX_SAMPLES)
    worst = price_images(svc.catalog, model.name, most).cost
    call = await svc.pipeline.admit(
        caller, route="native", operation="predict", model=model, request=payload,
        estimate=Estimate(0, 0, 0, worst),
    )  # fmt: skip
    reply = await call.send(
        "POST", f"/{version}/models/{model.segment}:{method}", content=body,
        headers=forward_headers(request.headers),
    )  # fmt: skip
    return await passthrough(call, reply, imagen_price(svc, call, model))


async def predict_long_running(request: Request, model: ModelId, method: str) -> Response:
    """Veo ``:predictLongRunning``: the operation is recorded as the tenant's, its worst case
    counted as spent, and it is metered by the reconciler once done."""
    version = version_of(request)
    svc, caller = await authenticate(request)
    body = await read_body(request, svc.settings.max_body_bytes)
    payload = parse_json_object(body)
    video = video_request(payload)
    seconds = video["durationSeconds"] * video["sampleCount"]
    worst = price_video(svc.catalog, model.name, seconds, audio=video["audio"]).cost
    estimate = Estimate(0, 0, 0, worst)
    call = await svc.pipeline.admit(
        caller, route="native", operation="videos.create", model=model, request=payload,
        estimate=estimate,
    )  # fmt: skip
    started = await start_operation(
        call, request, model, method, body, named=lambda n: "/operations/" in n,
        what="a video",
    )  # fmt: skip
    if isinstance(started, Response):
        return started
    reply, content, _op, name = started
    call.meter.resource = name
    detail = {"tenant": caller.tenant_name, **video, **held_detail(estimate)}
    await record(svc, call, version, name, "operation", model, detail=detail)
    call.meter.detail = {
        "videos": video["sampleCount"],
        "durationSeconds": video["durationSeconds"],
    }
    return held_reply(svc, call, reply, content, estimate)


@gemini_errors
async def get_operation(request: Request) -> Response:
    """``GET models/{m}/operations/{id}``: the tenant's own video operation, polled upstream."""
    version = version_of(request)
    model = model_id(request.path_params["model"])
    op_id = request.path_params["op"]
    svc, caller = await authenticate(request)
    name = f"models/{model.segment}/operations/{op_id}"
    row = await svc.owners.get(name, caller, kind="operation")
    if row is None:
        raise NotFound(f"Operation {name[:200]} not found.")
    return await poll(svc, caller, row, model, version, "operations.get")


def routes() -> list[BaseRoute]:
    return [
        Route(f"/{v}/models/{{model}}/operations/{{op}}", get_operation, methods=["GET"])
        for v in ("v1beta", "v1")
    ]
