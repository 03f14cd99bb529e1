"""The metered call's general parts the multi-call and streamed routes rely on: a request made of
several upstream replies is one call whose usages add up; a stream's cost is priced before its
last event with the function close uses; a call billed by an answered reply keeps that cost
whatever status it ends with."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from proxy.caller import Caller
from proxy.errors import UpstreamTimeout
from proxy.metering.ledger_event import LedgerEvent
from proxy.metering.meter import CallMeter
from proxy.model_ids import model_id
from proxy.pipeline import MeteredCall, Pipeline
from proxy.pricing.catalog import Catalog
from proxy.pricing.cost import price_call
from proxy.usage import Usage, sum_usage

MODEL = "gemini-2.0-flash"
CALLER = Caller(tenant_id=1, tenant_name="t", key_id=1)
CATALOG = Catalog.load()


def md(prompt: int, output: int, thoughts: int = 0) -> dict[str, Any]:
    return {"promptTokenCount": prompt, "candidatesTokenCount": output,
            "thoughtsTokenCount": thoughts}  # fmt: skip


def meter() -> CallMeter:
    return CallMeter(CALLER, route="openai", operation="generateContent", model=model_id(MODEL))


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # one reply, streamed: counts are cumulative, the last one stands
        ([(0, md(5, 1)), (0, md(5, 3))], Usage(prompt_tokens=5, output_tokens=3)),
        # two replies (two prompts, or two batches): added up
        ([(0, md(5, 3)), (1, md(7, 2, 4))],
         Usage(prompt_tokens=12, output_tokens=5, thinking_tokens=4)),
        # two streamed replies, each cumulative, then added
        ([(0, md(5, 1)), (0, md(5, 3)), (1, md(7, 1)), (1, md(7, 2))],
         Usage(prompt_tokens=12, output_tokens=5)),
        ([], None),
    ],
)  # fmt: skip
def test_a_calls_usage_is_its_replies_added_up(
    events: list[tuple[int, dict[str, Any]]], expected: Usage | None
) -> None:
    m = meter()
    for part, usage in events:
        m.observe({"usageMetadata": usage}, part)
    assert m.usage == expected
    assert m.billed is (expected is not None)


def test_an_estimate_stands_in_only_when_no_reply_reported_usage() -> None:
    m = meter()
    m.estimate(Usage.estimate(40))
    assert m.usage == Usage.estimate(40) and not m.billed
    m.observe_usage(Usage.estimate(25), part=0)
    assert m.usage == Usage.estimate(25) and m.billed


def test_sum_usage_adds_every_kind() -> None:
    total = sum_usage([Usage(prompt_tokens=1, output_audio_tokens=2), Usage.estimate(3, 4)])
    assert total == Usage(prompt_tokens=4, output_tokens=4, output_audio_tokens=2, estimated=True)
    assert sum_usage([]) == Usage()


class Ledger:
    def __init__(self) -> None:
        self.events: list[LedgerEvent] = []

    def submit(self, event: LedgerEvent) -> None:
        self.events.append(event)


class TimingOut:
    async def send(self, *_: Any, **__: Any) -> Any:
        raise UpstreamTimeout("no reply")


def open_call(ledger: Ledger, upstream: Any = None) -> MeteredCall:
    pipeline = Pipeline(catalog=CATALOG, ledger=ledger, upstream=upstream)  # type: ignore[arg-type]
    return pipeline.open(CALLER, route="openai", operation="generateContent", model=model_id(MODEL))


def cost(usage: Usage) -> Decimal:
    priced = price_call(CATALOG, MODEL, usage, status=200, at=None).cost
    assert priced is not None
    return priced


def test_price_now_is_what_close_records_and_does_nothing_else() -> None:
    ledger = Ledger()
    call = open_call(ledger)
    call.meter.observe({"usageMetadata": md(1000, 200)})
    call.meter.observe({"usageMetadata": md(3000, 50)}, part=1)
    now = call.price_now()
    assert now == cost(Usage(prompt_tokens=4000, output_tokens=250)) > 0
    assert ledger.events == []  # pure: no event, no settlement
    result = call.close(200)
    assert result.cost_usd == now == ledger.events[0].cost_usd
    assert call.price_now() == now  # once closed: the recorded cost


async def test_a_failed_later_reply_keeps_the_billed_ones() -> None:
    """The second prompt's call times out: the first one's tokens were billed by Google."""
    ledger = Ledger()
    call = open_call(ledger, TimingOut())
    call.meter.observe({"usageMetadata": md(1000, 200)}, part=0)
    with pytest.raises(UpstreamTimeout):
        await call.send("POST", "/v1beta/models/x:generateContent")
    [event] = ledger.events
    assert (event.status, event.error_class) == (504, "UpstreamTimeout")
    assert event.cost_usd == cost(Usage(prompt_tokens=1000, output_tokens=200)) > 0


async def test_a_failed_call_with_only_an_estimate_costs_nothing() -> None:
    ledger = Ledger()
    call = open_call(ledger, TimingOut())
    call.meter.estimate(Usage.estimate(1000))
    with pytest.raises(UpstreamTimeout):
        await call.send("POST", "/v1beta/models/x:generateContent")
    [event] = ledger.events
    assert event.cost_usd == 0 and event.usage == Usage.estimate(1000)
