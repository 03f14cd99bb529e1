"""Images: ``POST /v1/images/generations`` → Imagen ``:predict``, and the predictions back.

- ``prompt`` → ``instances[0].prompt``; ``n`` (1-4) → ``parameters.sampleCount`` (Imagen makes
  at most 4 a request: more is a 400).
- ``size`` ``WxH`` → ``parameters.aspectRatio``, the nearest of 1:1, 3:4, 4:3, 9:16, 16:9
  (:data:`SIZES` lists OpenAI's sizes); ``auto`` or absent → Imagen's default (1:1). The pixel
  size is Imagen's own.
- ``response_format`` ``b64_json`` or absent → ``data[].b64_json``; ``url`` is a 400 (the proxy
  hosts no files).
- ``quality``, ``style``, ``moderation`` and a ``background`` other than ``transparent`` are
  dropped; ``output_format`` ``png`` or absent is Imagen's PNG. ``jpeg`` / ``webp``,
  ``output_compression``, a transparent ``background``, ``stream`` and ``partial_images`` are
  a 400 naming them.
- ``user`` → the ledger's end user, never sent.

The reply: ``{"created", "data": [{"b64_json", "revised_prompt"?}]}``; Imagen reports no token
usage (it is priced per image: :func:`image_count`). Predictions Imagen filtered carry a
``raiFilteredReason`` instead of bytes and are left out; if every one was, the call is a 400
``content_policy_violation``, as OpenAI answers a refused prompt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from proxy.errors import BadRequest, UpstreamError
from proxy.metering.ledger_event import END_USER_MAX_LENGTH
from proxy.openai.validate import (
    opt_bool,
    opt_int,
    opt_str,
    opt_text,
    req_object,
    req_str,
    unknown_parameter,
)
from proxy.pricing.media import image_count

__all__ = [
    "ASPECT_RATIOS",
    "SIZES",
    "ImagesCall",
    "aspect_ratio",
    "image_count",
    "imagen_reply_to_openai",
    "images_request_to_imagen",
]

ASPECT_RATIOS: Final = ("1:1", "3:4", "4:3", "9:16", "16:9")
# OpenAI's documented sizes and what they become (any other WxH: the nearest ratio).
SIZES: Final = {
    "256x256": "1:1",
    "512x512": "1:1",
    "1024x1024": "1:1",
    "1536x1024": "4:3",
    "1024x1536": "3:4",
    "1792x1024": "16:9",
    "1024x1792": "9:16",
}
MAX_IMAGES: Final = 4
_FIELDS: Final = frozenset(
    {
        "model", "prompt", "n", "size", "response_format", "quality", "style", "user",
        "output_format", "output_compression", "background", "moderation", "stream",
        "partial_images",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ImagesCall:
    model: str  # as the client gave it; the routes normalise it
    n: int
    user: str | None  # recorded in the ledger, never sent upstream
    request: dict[str, Any]  # the :predict body


def aspect_ratio(size: str) -> str:
    """Imagen's aspect ratio for an OpenAI ``size`` (``WxH``); a 400 names ``size`` otherwise."""
    if size in SIZES:
        return SIZES[size]
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise BadRequest(
            f"Invalid 'size': {size!r}; expected 'auto' or WIDTHxHEIGHT, such as '1024x1024'.",
            param="size",
            code="invalid_value",
        )
    ratio = math.log(int(width) / int(height))

    def distance(candidate: str) -> float:
        w, h = candidate.split(":")
        return abs(math.log(int(w) / int(h)) - ratio)

    return min(ASPECT_RATIOS, key=distance)


def _refuse(name: str, why: str) -> BadRequest:
    return BadRequest(
        f"Unsupported parameter: '{name}' {why}.", param=name, code="unsupported_parameter"
    )


def images_request_to_imagen(body: Any) -> ImagesCall:
    """Validate an OpenAI image generation request and build the Imagen ``:predict`` body."""
    obj = req_object(body, "body")
    for name in obj:
        if name not in _FIELDS:
            raise unknown_parameter(name)
    model = req_str(obj.get("model"), "model", non_empty=True)
    prompt = req_str(obj.get("prompt"), "prompt", non_empty=True)
    n = opt_int(obj.get("n"), "n", minimum=1) or 1
    if n > MAX_IMAGES:
        raise BadRequest(
            f"Invalid 'n': {n}; Imagen makes at most {MAX_IMAGES} images a request.",
            param="n",
            code="integer_above_max_value",
        )
    fmt = opt_str(obj.get("response_format"), "response_format") or "b64_json"
    if fmt != "b64_json":
        raise BadRequest(
            f"Unsupported 'response_format': {fmt!r}; this Gemini proxy returns images as "
            "'b64_json' only (it hosts no files to link to).",
            param="response_format",
            code="unsupported_value",
        )
    if (opt_str(obj.get("output_format"), "output_format") or "png") != "png":
        raise _refuse("output_format", "other than 'png' is not supported: Imagen returns PNG")
    if obj.get("output_compression") is not None:
        raise _refuse("output_compression", "is not supported: Imagen returns PNG")
    if opt_str(obj.get("background"), "background") == "transparent":
        raise _refuse("background", "'transparent' is not supported by Imagen")
    if opt_bool(obj.get("stream"), "stream"):
        raise _refuse("stream", "is not supported for images by this Gemini proxy")
    if opt_int(obj.get("partial_images"), "partial_images"):
        raise _refuse("partial_images", "is not supported for images by this Gemini proxy")
    for hint in ("quality", "style", "moderation"):
        opt_str(obj.get(hint), hint)  # validated, then dropped
    parameters: dict[str, Any] = {"sampleCount": n}
    size = opt_str(obj.get("size"), "size")
    if size is not None and size != "auto":
        parameters["aspectRatio"] = aspect_ratio(size)
    return ImagesCall(
        model=model,
        n=n,
        user=opt_text(obj.get("user"), "user", max_length=END_USER_MAX_LENGTH),
        request={"instances": [{"prompt": prompt}], "parameters": parameters},
    )


def _predictions(reply: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    predictions = reply.get("predictions")
    return (
        [p for p in predictions if isinstance(p, Mapping)] if isinstance(predictions, list) else []
    )


def imagen_reply_to_openai(reply: Mapping[str, Any], *, created: int) -> dict[str, Any]:
    """OpenAI's ``ImagesResponse`` for a ``:predict`` reply."""
    data: list[dict[str, Any]] = []
    reasons: list[str] = []
    for prediction in _predictions(reply):
        image = prediction.get("bytesBase64Encoded")
        if isinstance(image, str) and image:
            item: dict[str, Any] = {"b64_json": image}
            revised = prediction.get("prompt")  # Imagen's rewritten prompt, when it made one
            if isinstance(revised, str) and revised:
                item["revised_prompt"] = revised
            data.append(item)
        elif isinstance(prediction.get("raiFilteredReason"), str):
            reasons.append(prediction["raiFilteredReason"])
    if not data:
        if reasons or not _predictions(reply):  # Imagen answers {} when it filtered them all
            why = f": {reasons[0]}" if reasons else ""
            raise BadRequest(
                f"The image request was refused by Imagen's safety filters{why}",
                param="prompt",
                code="content_policy_violation",
            )
        raise UpstreamError("Upstream returned predictions without images.")
    return {"created": created, "data": data, "output_format": "png"}
