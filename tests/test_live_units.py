"""Pure parts of the Live relay: the upstream URL, a turn's worst case, its close reason."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.live.messages import MAX_CLOSE_REASON_BYTES, close_reason
from proxy.pricing.catalog import Catalog
from proxy.quotas.estimate import DEFAULT_MAX_OUTPUT_TOKENS, estimate_tokens
from proxy.upstream.live import live_url

CATALOG = Catalog.load("gemini-api", None, "vertex-ai")
PATH = "/ws/google.ai.generativelanguage.{}.GenerativeService.BidiGenerateContent"


@pytest.mark.parametrize(
    ("base", "version", "url"),
    [
        ("https://generativelanguage.googleapis.com", "v1beta",
         "wss://generativelanguage.googleapis.com" + PATH.format("v1beta")),
        ("https://gw.internal:8443/", "v1", "wss://gw.internal:8443" + PATH.format("v1")),
        ("http://127.0.0.1:9000", "v1alpha", "ws://127.0.0.1:9000" + PATH.format("v1alpha")),
        ("https://gw.internal/prefix", "v1beta",
         "wss://gw.internal/prefix" + PATH.format("v1beta")),
    ],
)  # fmt: skip
def test_live_url_derives_from_the_upstream_base_url(base: str, version: str, url: str) -> None:
    assert live_url(base, version) == url


@pytest.mark.parametrize(
    ("prompt", "audio", "config", "out", "usd"),
    [
        # gemini-2.0-flash-live (000:63): text in 0.35, audio in 2.1, dearest output audio 8.5.
        (1000, 0, {"generationConfig": {"maxOutputTokens": 100}}, 100, "0.0012"),
        (1000, 1000, {"generation_config": {"max_output_tokens": 100}}, 100, "0.00295"),
        (0, 0, {"generationConfig": {"maxOutputTokens": 10}}, 10, "0.000085"),
        (0, 0, {}, DEFAULT_MAX_OUTPUT_TOKENS, None),  # no cap in the setup: the model's/default
    ],
)  # fmt: skip
def test_a_turns_worst_case(
    prompt: int, audio: int, config: dict[str, object], out: int, usd: str | None
) -> None:
    est = estimate_tokens(
        CATALOG, "gemini-2.0-flash-live-001", prompt, audio, config, "bidiGenerateContent"
    )
    assert (est.prompt_tokens, est.audio_tokens, est.max_output_tokens) == (prompt, audio, out)
    if usd is not None:
        assert est.cost_usd == Decimal(usd)
    else:
        assert est.cost_usd == Decimal(out) * Decimal("8.5") / 1_000_000


def test_an_unpriced_live_model_has_no_worst_cost() -> None:
    est = estimate_tokens(CATALOG, "gemini-2.5-flash-native-audio-preview-09-2025", 10, 0, {})
    assert est.cost_usd is None


def test_a_long_quota_message_fits_a_close_frame() -> None:
    reason = close_reason("Quota exceeded for tenant team-live: " + "$0.00135 used " * 20)
    assert len(reason.encode()) <= MAX_CLOSE_REASON_BYTES and reason.endswith("...")
