"""Imagen (per image) and Veo (per second, metered once by the reconciler) through the proxy,
with REST clients (google-genai refuses both in Gemini-API mode); their pure pricing, traced to
the seeds' lines; text-to-speech priced at the audio-output rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.tables import Resource
from proxy.pricing.catalog import Catalog
from proxy.pricing.cost import price_call
from proxy.pricing.media import image_count, price_images, price_video
from proxy.usage import Usage
from tests.conftest import RunningProxy, run_sync
from tests.fakes.gemini import JsonReply, text_response

GEMINI = Catalog.load("gemini-api")
WITH_VERTEX = Catalog.load("gemini-api", None, "vertex-ai")
FAST = {"reconcile_interval": 0.05, "reconcile_repoll": 0.05}


# -- pure pricing ---------------------------------------------------------------------------

IMAGES = [
    # (catalog, model, images, cost, the seed line the rate comes from)
    (GEMINI, "imagen-3.0-generate-002", 4, "0.12", "seeds/000_601105fe334b0f1f.txt:90"),
    (GEMINI, "imagen-3", 1, "0.03", "seeds/000_601105fe334b0f1f.txt:90"),
    (GEMINI, "imagen-3.0-generate-002", 0, "0", "seeds/000_601105fe334b0f1f.txt:90"),
    (WITH_VERTEX, "imagen-4.0-generate-001", 2, "0.08", "seeds/004_8191c03ed1050dc1.txt:303"),
    (WITH_VERTEX, "imagen-4.0-ultra-generate-001", 3, "0.18", "seeds/004_8191c03ed1050dc1.txt:301"),
    (WITH_VERTEX, "imagen-4.0-fast-generate-001", 4, "0.08", "seeds/004_8191c03ed1050dc1.txt:304"),
]


@pytest.mark.parametrize(("catalog", "model", "n", "cost", "source"), IMAGES)
def test_images_are_priced_per_image(
    catalog: Catalog, model: str, n: int, cost: str, source: str
) -> None:
    priced = price_images(catalog, model, n)
    assert priced.priced and priced.cost == Decimal(cost)
    assert priced.detail is not None and priced.detail.lines[0].source.startswith(source)


VIDEOS = [
    # (catalog, model, seconds, audio, cost, seed line)
    (GEMINI, "veo-2.0-generate-001", 8, True, "2.80", "seeds/000_601105fe334b0f1f.txt:101"),
    (GEMINI, "veo-2.0-generate-001", 5, False, "1.75", "seeds/000_601105fe334b0f1f.txt:101"),
    (WITH_VERTEX, "veo-3.0-generate-001", 8, True, "3.20", "seeds/004_8191c03ed1050dc1.txt:327"),
    (
        WITH_VERTEX,
        "veo-3.1-generate-preview",
        6,
        False,
        "1.20",
        "seeds/004_8191c03ed1050dc1.txt:324",
    ),
    (
        WITH_VERTEX,
        "veo-3.1-fast-generate-001",
        8,
        True,
        "1.20",
        "seeds/004_8191c03ed1050dc1.txt:325",
    ),
]


@pytest.mark.parametrize(("catalog", "model", "seconds", "audio", "cost", "source"), VIDEOS)
def test_videos_are_priced_per_second(
    catalog: Catalog, model: str, seconds: int, audio: bool, cost: str, source: str
) -> None:
    priced = price_video(catalog, model, seconds, audio=audio)
    assert priced.priced and priced.cost == Decimal(cost), priced.reason
    assert priced.detail is not None and priced.detail.lines[0].source.startswith(source)


def test_what_cannot_be_priced_per_item_is_unpriced_never_zero() -> None:
    unknown = price_images(GEMINI, "imagen-9", 2)
    assert not unknown.priced and unknown.cost is None and "unknown model" in (unknown.reason or "")
    tokens = price_images(GEMINI, "gemini-2.5-flash", 1)
    assert not tokens.priced and "no per-image" in (tokens.reason or "")
    veo3 = price_video(GEMINI, "veo-3.0-generate-001", 8)  # not on the Gemini API list
    assert not veo3.priced
    fallback = price_video(WITH_VERTEX, "veo-3.0-generate-001", 8)
    assert fallback.priced and fallback.price_list == "vertex-ai"
    failed = price_images(GEMINI, "imagen-3", 4, status=400)
    assert failed.priced and failed.cost == 0


@pytest.mark.parametrize(
    ("reply", "n"),
    [
        ({"predictions": [{"bytesBase64Encoded": "AA==", "mimeType": "image/png"}] * 3}, 3),
        ({"predictions": [{"bytesBase64Encoded": "AA=="}, {"raiFilteredReason": "x"}]}, 1),
        ({}, 0),
        ({"predictions": "nope"}, 0),
        ({"predictions": [None, 3, {"bytesBase64Encoded": 5}]}, 0),
    ],
)
def test_image_count_counts_the_images_made(reply: dict[str, Any], n: int) -> None:
    assert image_count(reply) == n


# -- through the proxy ----------------------------------------------------------------------


def wait_rows(
    proxy: RunningProxy, check: Callable[[dict[str, Any]], bool], n: int = 1
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        rows = [r for r in proxy.rows(0) if check(r)]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_imagen_predict_is_priced_per_image_made(proxy: RunningProxy) -> None:
    proxy.fake.resources.media.filtered = 1
    body = {"instances": [{"prompt": "a red fox"}], "parameters": {"sampleCount": 3}}
    with httpx.Client(base_url=proxy.url, headers={"x-goog-api-key": proxy.key}) as http:
        reply = http.post("/v1beta/models/imagen-3.0-generate-002:predict", json=body)
        assert reply.status_code == 200 and image_count(reply.json()) == 2
        assert Decimal(reply.headers["x-gemini-meter-cost-usd"]) == Decimal("0.06")
        bad = http.post("/v1beta/models/imagen-3.0-generate-002:predict", json={"instances": []})
        assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
        wrong = http.post("/v1beta/models/gemini-2.5-flash:predict", json=body)
        assert wrong.status_code == 404  # Google's answer, passed through
    rows = wait_rows(proxy, lambda r: r["operation"] == "predict", 2)
    ok = next(r for r in rows if r["status"] == 200)
    assert ok["cost_usd"] == Decimal("0.06") and ok["detail"] == {"images": 2} and ok["priced"]
    assert next(r for r in rows if r["status"] == 404)["cost_usd"] == 0


def test_veo_is_metered_once_when_done_and_its_operation_is_the_tenants(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    proxy = start_proxy(sqlite_url, **FAST)
    media = proxy.fake.resources.media
    media.polls_until_done = None
    body = {
        "instances": [{"prompt": "waves"}],
        "parameters": {"durationSeconds": 6, "sampleCount": 2},
    }
    with httpx.Client(base_url=proxy.url, headers={"x-goog-api-key": proxy.key}) as http:
        started = http.post("/v1beta/models/veo-2.0-generate-001:predictLongRunning", json=body)
        assert started.status_code == 200
        name = started.json()["name"]
        assert http.get(f"/v1beta/{name}").json() == {"name": name}  # running
        other = proxy.new_key("team-b")
        foreign = http.get(f"/v1beta/{name}", headers={"x-goog-api-key": other})
        assert foreign.status_code == 404 and foreign.json()["error"]["status"] == "NOT_FOUND"
        assert http.get(f"/v1/{name}").status_code == 200  # under /v1 too
        media.filtered = 1  # one of the two videos is filtered: not billed
        media.finish(name)
        rows = wait_rows(proxy, lambda r: r["operation"] == "predictLongRunning")
        done = http.get(f"/v1beta/{name}").json()
        assert done["done"] is True
    options = genai_types.HttpOptions(base_url=proxy.url)  # google-genai polls it under /v1
    with genai.Client(api_key=proxy.key, http_options=options) as sdk:
        pending = genai_types.GenerateVideosOperation(name=name)  # type: ignore[call-arg]
        op = sdk.operations.get(pending)
        assert op.done and op.result and op.result.generated_videos
        assert len(op.result.generated_videos) == 1
    created = [r for r in proxy.rows(0) if r["operation"] == "videos.create"]
    assert len(created) == 1 and created[0]["cost_usd"] == 0 and created[0]["resource"] == name
    [row] = rows
    assert row["resource"] == name and row["detail"] == {"videos": 1, "videoSeconds": 6}
    [video] = done["response"]["generateVideoResponse"]["generatedSamples"]
    file = "files/" + video["video"]["uri"].split("/files/")[1].split(":")[0]
    assert [r["resource"] for r in proxy.rows(0) if r["operation"] == "videos.create"] == [name]
    assert file_owner(proxy, file) == file_owner(proxy, name) is not None  # the tenant's file
    assert row["cost_usd"] == Decimal("2.1") and row["route"] == "reconciler"  # 6 s x $0.35
    time.sleep(0.3)
    assert len([r for r in proxy.rows(0) if r["operation"] == "predictLongRunning"]) == 1


def file_owner(proxy: RunningProxy, name: str) -> int | None:
    async def get() -> int | None:
        engine = make_engine(proxy.settings.database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                row = await session.get(Resource, name)
                return None if row is None else row.tenant_id
        finally:
            await engine.dispose()

    return run_sync(get)


def test_a_failed_video_costs_nothing(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    proxy = start_proxy(sqlite_url, **FAST)
    proxy.fake.resources.media.video_error = {"code": 3, "message": "bad prompt"}
    body = {"instances": [{"prompt": "x"}]}
    with httpx.Client(base_url=proxy.url, headers={"x-goog-api-key": proxy.key}) as http:
        reply = http.post("/v1beta/models/veo-2.0-generate-001:predictLongRunning", json=body)
        assert reply.status_code == 200
        bad = http.post(
            "/v1beta/models/veo-2.0-generate-001:predictLongRunning",
            json={"instances": [{"prompt": "x"}], "parameters": {"durationSeconds": 0}},
        )
        assert bad.status_code == 400 and "durationSeconds" in bad.json()["error"]["message"]
    [row] = wait_rows(proxy, lambda r: r["operation"] == "predictLongRunning")
    assert row["status"] == 400 and row["cost_usd"] == 0 and row["error_class"] == "video_failed"


# -- text-to-speech -------------------------------------------------------------------------


TTS = "gemini-2.5-flash-preview-tts"
# The seeds price no text-to-speech model: an operator adds its price (illustrative numbers).
TTS_PRICE = """
models:
  - price_list: gemini-api
    id: gemini-2.5-flash-preview-tts
    name: Gemini 2.5 Flash Preview TTS
    input_modalities: [text]
    rates:
      input:        {usd: "0.50", covers: [text], source: "ai.google.dev pricing (test)"}
      output:       {usd: "10.00", source: "ai.google.dev pricing (test)"}
      output_audio: {usd: "10.00", source: "ai.google.dev pricing (test)"}
"""


def speak(proxy: RunningProxy) -> dict[str, Any]:
    usage = {
        "promptTokenCount": 10,
        "candidatesTokenCount": 400,
        "totalTokenCount": 410,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}],
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 400}],
    }
    proxy.fake.enqueue(JsonReply(text_response("", usage, model=TTS)), action="generateContent")
    body = {
        "contents": [{"parts": [{"text": "Say hello"}]}],
        "generationConfig": {"responseModalities": ["AUDIO"]},
    }
    with httpx.Client(base_url=proxy.url, headers={"x-goog-api-key": proxy.key}) as http:
        reply = http.post(f"/v1beta/models/{TTS}:generateContent", json=body)
    assert reply.status_code == 200
    [row] = wait_rows(proxy, lambda r: r["operation"] == "generateContent")
    return row


def test_speech_is_unpriced_without_a_price_never_zero(proxy: RunningProxy) -> None:
    row = speak(proxy)
    assert row["output_audio_tokens"] == 400 and not row["priced"] and row["cost_usd"] is None


def test_speech_is_priced_at_the_audio_output_rate(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str, tmp_path: Path
) -> None:
    overrides = tmp_path / "prices.yaml"
    overrides.write_text(TTS_PRICE)
    row = speak(start_proxy(sqlite_url, price_overrides=overrides))
    catalog = Catalog.load("gemini-api", overrides, "vertex-ai")
    usage = Usage(prompt_tokens=10, output_tokens=400, output_audio_tokens=400)
    expected = price_call(catalog, TTS, usage, status=200, at=None)
    assert expected.priced and expected.detail is not None
    assert [(line.kind, line.tokens) for line in expected.detail.lines] == [
        ("input", 10),
        ("output_audio", 400),
    ]
    assert row["output_audio_tokens"] == 400 and row["cost_usd"] == expected.cost
    assert row["cost_usd"] == Decimal("0.004005")  # 10 x $0.50 + 400 x $10.00 per million


# -- OpenAI's images API → Imagen ------------------------------------------------------------


@pytest.mark.parametrize("base", ["/v1", "/v1beta/openai"])
def test_openai_images_generate_with_imagen_priced_per_image(
    proxy: RunningProxy, base: str
) -> None:
    with openai.OpenAI(base_url=f"{proxy.url}{base}", api_key=proxy.key, max_retries=0) as client:
        raw = client.images.with_raw_response.generate(
            model="imagen-3.0-generate-002", prompt="a lighthouse", n=2, size="1792x1024",
            user="end-user-7",
        )  # fmt: skip
        images = raw.parse()
        assert images.data and len(images.data) == 2 and images.data[0].b64_json
        assert Decimal(raw.headers["x-gemini-meter-cost-usd"]) == Decimal("0.06")
        with pytest.raises(openai.BadRequestError) as err:
            client.images.generate(model="imagen-3.0-generate-002", prompt="x", n=9)
        assert err.value.code == "integer_above_max_value"
    [up] = proxy.fake.calls("predict")
    assert up.json() == {
        "instances": [{"prompt": "a lighthouse"}],
        "parameters": {"sampleCount": 2, "aspectRatio": "16:9"},
    }
    [row] = wait_rows(proxy, lambda r: r["operation"] == "predict")
    assert row["route"] == "openai" and row["detail"] == {"images": 2}
    assert row["cost_usd"] == Decimal("0.06") and row["end_user"] == "end-user-7"


def test_openai_images_all_filtered_is_a_content_policy_error_at_no_cost(
    proxy: RunningProxy,
) -> None:
    proxy.fake.resources.media.filtered = 4
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=proxy.key, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as err:
            client.images.generate(model="imagen-3.0-generate-002", prompt="x", n=1)
        assert err.value.code == "content_policy_violation"
        with pytest.raises(openai.NotFoundError):  # Google's 404 in OpenAI's envelope
            client.images.generate(model="gemini-2.5-flash", prompt="x")
    rows = wait_rows(proxy, lambda r: r["operation"] == "predict", 2)
    assert all(r["cost_usd"] == 0 for r in rows)
