"""Gemini models.list / models.get replies → OpenAI's model list and model object.

``id`` is the Gemini name without its ``models/`` prefix (tuned models keep
``tunedModels/...``), ``owned_by`` is ``"google"``. Gemini gives no creation time, so
``created`` is 0. Gemini pages its list (``nextPageToken``); OpenAI's has no paging, so the
route fetches every page and passes the merged ``models`` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from proxy.errors import UpstreamError
from proxy.wire.openai import Model, ModelList

__all__ = ["gemini_model_to_openai", "gemini_models_to_openai", "model_id"]


def model_id(name: str) -> str:
    return name.removeprefix("models/")


def _model(model: Mapping[str, Any]) -> Model:
    name = model.get("name")
    if not isinstance(name, str) or not name:
        raise UpstreamError("Upstream model object has no 'name'.")
    return {"id": model_id(name), "object": "model", "created": 0, "owned_by": "google"}


def gemini_model_to_openai(model: Mapping[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], _model(model))


def gemini_models_to_openai(reply: Mapping[str, Any]) -> dict[str, Any]:
    models = reply.get("models")
    listing: ModelList = {
        "object": "list",
        "data": [
            _model(m)
            for m in (models if isinstance(models, list) else [])
            if isinstance(m, Mapping)
        ],
    }
    return cast(dict[str, Any], listing)
