"""A call's cost, worked by hand from the seed, in the reply header, the ledger and the report."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import orjson

from tests.conftest import RunningProxy
from tests.fakes.gemini import JsonReply, text_response
from tests.test_native import run_sync_main

# gemini-2.0-flash on the gemini-api list (seeds/000 § Gemini 2.0 Flash), per 1M tokens:
# input $0.10, audio input $0.70, cached input $0.025, output $0.40.
USAGE = {
    "promptTokenCount": 1200,
    "cachedContentTokenCount": 400,
    "candidatesTokenCount": 500,
    "totalTokenCount": 1700,
    "promptTokensDetails": [
        {"modality": "TEXT", "tokenCount": 900},
        {"modality": "AUDIO", "tokenCount": 300},
    ],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 400}],
}
EXPECTED = (
    Decimal(900 - 400) * Decimal("0.10")  # text input not served from the cache
    + Decimal(300) * Decimal("0.70")  # audio input
    + Decimal(400) * Decimal("0.025")  # cached text input, instead of the input rate
    + Decimal(500) * Decimal("0.40")  # output
) / 1_000_000  # = 0.00047


def test_cost_in_header_ledger_and_report(
    start_proxy: Callable[..., RunningProxy], db_url: str, monkeypatch: Any
) -> None:
    assert Decimal("0.00047") == EXPECTED
    p = start_proxy(db_url)
    p.fake.enqueue(JsonReply(text_response("ok", USAGE, model="gemini-2.0-flash")))
    r = httpx.post(
        f"{p.url}/v1beta/models/gemini-2.0-flash:generateContent",
        headers={"x-goog-api-key": p.key},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert Decimal(r.headers["x-gemini-meter-cost-usd"]) == EXPECTED
    [row] = p.rows()
    assert row["cost_usd"] == EXPECTED and row["priced"] is True
    assert (row["price_list"], row["price_version"]) == ("gemini-api", "2025-05-07")

    monkeypatch.setenv("GEMINI_METER_DATABASE_URL", db_url)
    out = _capture(monkeypatch, ["usage", "--format", "json"])
    [line] = orjson.loads(out)
    assert Decimal(line["cost_usd"]) == EXPECTED and line["unpriced"] == 0


def test_unknown_model_is_unpriced_not_free(proxy: RunningProxy) -> None:
    r = httpx.post(
        f"{proxy.url}/v1beta/models/my-private-model:generateContent",
        headers={"x-goog-api-key": proxy.key},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert r.status_code == 200
    assert "x-gemini-meter-cost-usd" not in r.headers
    [row] = proxy.rows()
    assert row["cost_usd"] is None and row["priced"] is False
    metrics = httpx.get(f"{proxy.url}/metrics").text
    assert 'gemini_meter_unpriced_calls_total{model="my-private-model"}' in metrics


def _capture(monkeypatch: Any, argv: list[str]) -> str:
    import io
    import sys

    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    assert run_sync_main(argv) == 0
    monkeypatch.undo()
    return buf.getvalue()
