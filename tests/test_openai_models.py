"""Gemini models list / get → OpenAI's model list and object."""

from __future__ import annotations

import orjson
import pytest
from openai.types import Model

from proxy.errors import UpstreamError
from proxy.openai.models import gemini_model_to_openai, gemini_models_to_openai
from tests.fakes.gemini import FIXTURES

LISTING = orjson.loads((FIXTURES / "models_list.json").read_bytes())


def test_list() -> None:
    out = gemini_models_to_openai(LISTING)
    assert out["object"] == "list"
    models = [Model.model_validate(m) for m in out["data"]]
    assert [m.id for m in models] == [
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "gemini-2.0-flash",
        "gemini-embedding-001",
    ]
    assert {(m.object, m.owned_by, m.created) for m in models} == {("model", "google", 0)}


@pytest.mark.parametrize(
    ("name", "expected"),
    [("models/gemini-2.5-flash", "gemini-2.5-flash"), ("tunedModels/mine-1", "tunedModels/mine-1")],
    ids=["base", "tuned"],
)
def test_get(name: str, expected: str) -> None:
    assert Model.model_validate(gemini_model_to_openai({"name": name})).id == expected


def test_empty_and_malformed() -> None:
    assert gemini_models_to_openai({}) == {"object": "list", "data": []}
    with pytest.raises(UpstreamError):
        gemini_model_to_openai({"displayName": "no name"})
