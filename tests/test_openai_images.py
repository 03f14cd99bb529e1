"""OpenAI image generation → Imagen :predict, and predictions back (pure tables; replies checked
with the openai SDK's own ImagesResponse model)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types import ImagesResponse

from proxy.errors import BadRequest, UpstreamError
from proxy.openai.images import (
    ASPECT_RATIOS,
    SIZES,
    ImagesCall,
    aspect_ratio,
    image_count,
    imagen_reply_to_openai,
    images_request_to_imagen,
)

MODEL = "imagen-4.0-generate-001"


def call(**body: Any) -> ImagesCall:
    body.setdefault("model", MODEL)
    body.setdefault("prompt", "a red bicycle")
    return images_request_to_imagen(body)


def predict(**parameters: Any) -> dict[str, Any]:
    return {
        "instances": [{"prompt": "a red bicycle"}],
        "parameters": {"sampleCount": 1, **parameters},
    }


REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("plain", {}, predict()),
    ("n", {"n": 4}, predict(sampleCount=4)),
    ("square", {"size": "1024x1024"}, predict(aspectRatio="1:1")),
    ("dalle3_wide", {"size": "1792x1024"}, predict(aspectRatio="16:9")),
    ("dalle3_tall", {"size": "1024x1792"}, predict(aspectRatio="9:16")),
    ("gpt_image_landscape", {"size": "1536x1024"}, predict(aspectRatio="4:3")),
    ("gpt_image_portrait", {"size": "1024x1536"}, predict(aspectRatio="3:4")),
    ("auto", {"size": "auto"}, predict()),
    ("other_size_nearest", {"size": "1920x1080"}, predict(aspectRatio="16:9")),
    (
        "dropped_hints",
        {
            "quality": "hd",
            "style": "vivid",
            "moderation": "low",
            "background": "opaque",
            "response_format": "b64_json",
            "output_format": "png",
            "user": "u",
            "stream": False,
        },
        predict(),
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_request(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert call(**body).request == expected


def test_call_fields() -> None:
    c = call(n=2, user="alice")
    assert (c.model, c.n, c.user) == (MODEL, 2, "alice")


@pytest.mark.parametrize(("size", "ratio"), sorted(SIZES.items()))
def test_documented_sizes_map_to_their_nearest_ratio(size: str, ratio: str) -> None:
    # The table agrees with the nearest-ratio rule used for any other size.
    w, h = size.split("x")
    assert aspect_ratio(f"{int(w) * 3}x{int(h) * 3}") == ratio and ratio in ASPECT_RATIOS


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("url", {"response_format": "url"}, "response_format"),
    ("too_many", {"n": 5}, "n"),
    ("zero", {"n": 0}, "n"),
    ("jpeg", {"output_format": "jpeg"}, "output_format"),
    ("compression", {"output_compression": 80}, "output_compression"),
    ("transparent", {"background": "transparent"}, "background"),
    ("stream", {"stream": True}, "stream"),
    ("partial_images", {"partial_images": 2}, "partial_images"),
    ("bad_size", {"size": "big"}, "size"),
    ("zero_size", {"size": "0x1024"}, "size"),
    ("empty_prompt", {"prompt": ""}, "prompt"),
    ("unknown", {"negative_prompt": "x"}, "negative_prompt"),
    ("quality_type", {"quality": 1}, "quality"),
]


@pytest.mark.parametrize(("body", "param"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_request_names_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as err:
        call(**body)
    assert err.value.param == param and err.value.status_code == 400


def test_reply() -> None:
    reply = {
        "predictions": [
            {"bytesBase64Encoded": "iVBORw0KGgo=", "mimeType": "image/png"},
            {"raiFilteredReason": "filtered"},
            {
                "bytesBase64Encoded": "iVBORw0KGgoB",
                "mimeType": "image/png",
                "prompt": "a shiny red bicycle",
            },
        ]
    }
    out = ImagesResponse.model_validate(
        orjson.loads(orjson.dumps(imagen_reply_to_openai(reply, created=1700000000)))
    )
    assert out.created == 1700000000 and out.output_format == "png" and out.data is not None
    assert [(d.b64_json, d.revised_prompt, d.url) for d in out.data] == [
        ("iVBORw0KGgo=", None, None),
        ("iVBORw0KGgoB", "a shiny red bicycle", None),
    ]
    assert image_count(reply) == 2


@pytest.mark.parametrize(
    "reply", [{}, {"predictions": []}, {"predictions": [{"raiFilteredReason": "Unsafe prompt."}]}]
)
def test_everything_filtered_is_a_content_policy_400(reply: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as err:
        imagen_reply_to_openai(reply, created=1)
    assert err.value.code == "content_policy_violation" and image_count(reply) == 0


def test_malformed_predictions_are_an_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        imagen_reply_to_openai({"predictions": [{"mimeType": "image/png"}]}, created=1)
