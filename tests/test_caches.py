"""Context caches through the proxy: tenant-scoped, and their storage billed per token-hour so
that the rows of one cache add up to exactly what was held (proxy/pricing/storage.py)."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors

from proxy.errors import BadRequest
from proxy.native.caches import parse_duration, parse_time, requested_expiry
from proxy.pricing.catalog import Catalog
from proxy.pricing.prices import Rate
from proxy.pricing.storage import price_storage, storage_charge, storage_rate, token_hours
from tests.conftest import RunningProxy, run_sync
from tests.test_quota_fixtures import add_policy

MODEL = "gemini-2.0-flash"  # its cache_storage rate: 1 USD per 1M token-hours
BIG_TEXT = "cache me " * 600  # 5,400 characters: 1,350 tokens, over the fake's 1,024 minimum
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
SEEDS = Path(__file__).resolve().parent.parent / "docs" / "seeds"
ADMIN = {"authorization": "Bearer admin-token-for-tests"}


def rate(usd: str) -> Rate:
    return Rate("cache_storage", "1M token-hours", Decimal(usd), None, None, None, None, "test")


# -- unit: token-hour pricing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "start", "end", "hours"),
    [
        (1_000_000, T0, T0 + H, Decimal(1_000_000)),
        (1_350, T0, T0 + 2 * H, Decimal(2_700)),
        (1_000, T0, T0 + timedelta(minutes=30), Decimal(500)),
        (3, T0, T0 + timedelta(seconds=1), Decimal("0.000833333")),  # 9 places
        (1_000, T0 + H, T0, Decimal(-1_000)),  # a credit
        (0, T0, T0 + H, Decimal(0)),
    ],
)
def test_token_hours(tokens: int, start: datetime, end: datetime, hours: Decimal) -> None:
    assert token_hours(tokens, start, end) == hours


@pytest.mark.parametrize(
    ("tokens", "usd", "until", "new_until", "cost"),
    [
        (1_000_000, "1", T0, T0 + H, Decimal("1.0000000000")),  # create: one hour
        (1_350, "1", T0, T0 + H, Decimal("0.0013500000")),
        (1_350, "4.5", T0 + H, T0 + 3 * H, Decimal("0.0121500000")),  # patch: +2 hours
        (1_350, "1", T0 + 3 * H, T0 + 2 * H, Decimal("-0.0013500000")),  # early delete: credit
        (7, "1", T0, T0 + timedelta(seconds=1), Decimal("0.0000000019")),  # rounded half up
    ],
)
def test_storage_charge(
    tokens: int, usd: str, until: datetime, new_until: datetime, cost: Decimal
) -> None:
    assert storage_charge(tokens, T0, until, new_until, rate(usd)).usd == cost


def test_storage_rows_telescope_to_exactly_the_time_held() -> None:
    # Many small moves, each rounded: their sum is the one amount for the whole time held.
    r, tokens = rate("4.5"), 777
    points = [T0 + timedelta(seconds=s) for s in (0, 7, 3607, 3613, 1801, 9000, 4000)]
    total = sum(
        (storage_charge(tokens, T0, a, b, r).usd for a, b in itertools.pairwise(points)),
        Decimal(0),
    )
    assert total == storage_charge(tokens, T0, T0, points[-1], r).usd


def test_storage_rate_is_traced_to_its_seed_line() -> None:
    catalog = Catalog.load()
    found = storage_rate(catalog, MODEL)
    assert found is not None
    price, r = found
    assert (r.usd, r.unit) == (Decimal(1), "1M token-hours")
    seed, line = r.source.split(" ")[0].removeprefix("seeds/").split(":")
    text = (SEEDS / seed).read_text(encoding="utf-8").splitlines()[int(line) - 1]
    assert "1 USD / 1.000.000 mã thông báo mỗi giờ" in text
    priced, hours = price_storage(catalog, MODEL, 1_350, T0, T0, T0 + 2 * H)
    assert priced.priced and priced.cost == Decimal("0.0027") and hours == 2_700
    assert priced.price_list == price.price_list


def test_a_model_without_a_storage_rate_is_unpriced_never_zero() -> None:
    priced, _ = price_storage(Catalog.load(), "no-such-model", 1_000, T0, T0, T0 + H)
    assert not priced.priced and priced.cost is None


@pytest.mark.parametrize(
    ("text", "delta"),
    [("3600s", H), ("1.5s", timedelta(seconds=1.5)), ("0s", timedelta(0)), ("3600", None)],
)
def test_parse_duration(text: str, delta: timedelta | None) -> None:
    assert parse_duration(text) == delta


def test_parse_time_reads_nanoseconds_and_zones() -> None:
    assert parse_time("2025-06-01T12:00:00.123456789Z") == T0 + timedelta(microseconds=123456)
    assert parse_time("2025-06-01T14:00:00+02:00") == T0
    assert parse_time("2025-06-01T12:00:00") is None  # no zone: not RFC 3339


def test_requested_expiry() -> None:
    assert requested_expiry({"ttl": "7200s"}, T0, None) == T0 + 2 * H
    assert requested_expiry({"expire_time": "2025-06-01T15:00:00Z"}, T0, None) == T0 + 3 * H
    assert requested_expiry({}, T0, H) == T0 + H
    for body in ({}, {"ttl": "x"}, {"ttl": "1s", "expireTime": "2025-06-01T15:00:00Z"}):
        with pytest.raises(BadRequest, match=r"ttl|expireTime|Nothing"):
            requested_expiry(body, T0, None)


# -- e2e: the SDK through the proxy ----------------------------------------------------------


def storage_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["operation"].startswith("cachedContents.")]


def test_sdk_cache_lifecycle_bills_the_token_hours_held(
    start_proxy: Callable[..., RunningProxy],
    db_url: str,
    sdk: Callable[[str, str], genai.Client],
) -> None:
    proxy = start_proxy(db_url)
    client = sdk(proxy.url, proxy.key)
    cache = client.caches.create(
        model=MODEL, config={"contents": [BIG_TEXT], "ttl": "3600s", "display_name": "big"}
    )
    assert cache.name and cache.usage_metadata and cache.usage_metadata.total_token_count
    tokens = cache.usage_metadata.total_token_count
    assert cache.create_time and cache.expire_time

    reply = client.models.generate_content(
        model=MODEL, contents="what is cached?", config={"cached_content": cache.name}
    )
    assert reply.usage_metadata and reply.usage_metadata.cached_content_token_count == tokens

    updated = client.caches.update(name=cache.name, config={"ttl": "7200s"})
    assert updated.expire_time and updated.expire_time > cache.expire_time
    assert client.caches.get(name=cache.name).name == cache.name
    assert [c.name for c in client.caches.list()] == [cache.name]
    client.caches.delete(name=cache.name)

    rows = proxy.rows(6)
    ops = [r["operation"] for r in rows]
    assert ops == [
        "cachedContents.create", "generateContent", "cachedContents.patch",
        "cachedContents.get", "cachedContents.list", "cachedContents.delete",
    ]  # fmt: skip
    create, generate, patch, _get, _list, delete = rows
    assert all(r["resource"] == cache.name for r in (create, patch, delete))
    assert generate["cached_tokens"] == tokens and generate["cost_usd"] > 0
    assert create["cost_usd"] > 0 and patch["cost_usd"] > 0 and delete["cost_usd"] < 0
    created = cache.create_time
    assert create["detail"]["from"] == created.isoformat()
    assert create["detail"]["to"] == cache.expire_time.isoformat()
    assert patch["detail"]["to"] == updated.expire_time.isoformat()
    ended = datetime.fromisoformat(delete["detail"]["to"])
    assert created < ended < updated.expire_time
    # The rows add up to the token-hours actually held, at the seed's 1 USD per 1M token-hours.
    held = token_hours(tokens, created, ended)
    billed = [create, patch, delete]
    assert sum(Decimal(r["detail"]["tokenHours"]) for r in billed) == held
    expected = (held / Decimal(1_000_000)).quantize(Decimal("1e-10"))
    assert sum((r["cost_usd"] for r in billed), Decimal(0)) == expected
    assert all(r["priced"] for r in rows)

    # `gemini-meter usage --group-by operation` shows the storage, priced.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    env["GEMINI_METER_DATABASE_URL"] = proxy.settings.database_url
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "usage", "--group-by", "operation", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    report = {r["operation"]: r for r in orjson.loads(out.stdout)}
    assert Decimal(report["cachedContents.create"]["cost_usd"]) == create["cost_usd"]
    assert Decimal(report["cachedContents.delete"]["cost_usd"]) == delete["cost_usd"]
    assert report["cachedContents.patch"]["requests"] == 1


def test_tenant_b_gets_404_for_a_cache_of_tenant_a_in_every_verb(
    proxy: RunningProxy, sdk: Callable[[str, str], genai.Client]
) -> None:
    a = sdk(proxy.url, proxy.key)
    b = sdk(proxy.url, proxy.new_key("team-b"))
    cache = a.caches.create(model=MODEL, config={"contents": [BIG_TEXT]})
    name = cache.name or ""
    for attempt in (
        lambda: b.caches.get(name=name),
        lambda: b.caches.update(name=name, config={"ttl": "60s"}),
        lambda: b.caches.delete(name=name),
        lambda: b.models.generate_content(
            model=MODEL, contents="hi", config={"cached_content": name}
        ),
        lambda: list(
            b.models.generate_content_stream(
                model=MODEL, contents="hi", config={"cached_content": name}
            )
        ),
    ):
        with pytest.raises(genai_errors.ClientError) as err:
            attempt()
        assert err.value.code == 404 and err.value.status == "NOT_FOUND"
    assert list(b.caches.list()) == []
    assert [c.name for c in a.caches.list()] == [name]
    assert not proxy.fake.calls("generateContent") and not proxy.fake.calls("cachedContents.patch")


def test_openai_route_refuses_another_tenants_cache(
    proxy: RunningProxy, sdk: Callable[[str, str], genai.Client]
) -> None:
    cache = sdk(proxy.url, proxy.key).caches.create(model=MODEL, config={"contents": [BIG_TEXT]})
    r = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {proxy.new_key('team-b')}"},
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "extra_body": {"google": {"cached_content": cache.name}},
        },
    )
    assert r.status_code == 404 and "not found" in r.json()["error"]["message"]


def test_a_hard_budget_refuses_a_cache_it_cannot_hold(
    proxy: RunningProxy, sdk: Callable[[str, str], genai.Client]
) -> None:
    # 1,350 tokens held 1 hour cost $0.00135; for 1,000 hours, $1.35: over a $1 budget.
    run_sync(lambda: add_policy(proxy.settings.database_url, proxy.tenant, budget_usd=1))
    httpx.get(f"{proxy.url}/admin/tenants/{proxy.tenant}/quota", headers=ADMIN)
    client = sdk(proxy.url, proxy.key)
    with pytest.raises(genai_errors.ClientError) as err:
        client.caches.create(model=MODEL, config={"contents": [BIG_TEXT], "ttl": "3600000s"})
    assert err.value.code == 429 and "budget" in (err.value.message or "")
    assert not proxy.fake.calls("cachedContents.create")
    cache = client.caches.create(model=MODEL, config={"contents": [BIG_TEXT], "ttl": "3600s"})
    with pytest.raises(genai_errors.ClientError) as err:
        client.caches.update(name=cache.name or "", config={"ttl": "3600000s"})
    assert err.value.code == 429
    assert not proxy.fake.calls("cachedContents.patch")


def test_two_replicas_bill_one_cache_once(
    start_proxy: Callable[..., RunningProxy],
    pg_url: str,
    sdk: Callable[[str, str], genai.Client],
) -> None:
    a, b = start_proxy(pg_url), start_proxy(pg_url)
    on_a, on_b = sdk(a.url, a.key), sdk(b.url, b.key)
    cache = on_a.caches.create(model=MODEL, config={"contents": [BIG_TEXT], "ttl": "3600s"})
    name = cache.name or ""
    on_b.caches.update(name=name, config={"ttl": "7200s"})  # the other replica extends it

    def delete(client: genai.Client) -> str:
        try:
            client.caches.delete(name=name)
            return "deleted"
        except genai_errors.APIError as exc:
            return str(exc.code)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(delete, (on_a, on_b)))
    # One deletes it; the other finds it gone (Google's 403, or the proxy's 404 once recorded).
    assert sorted(outcomes) in (["403", "deleted"], ["404", "deleted"])

    rows = [r for r in a.rows(4) if r["resource"] == name]
    credits = [r for r in rows if r["cost_usd"] < 0]
    assert len(credits) == 1
    assert cache.usage_metadata and cache.create_time
    tokens = cache.usage_metadata.total_token_count or 0
    ended = datetime.fromisoformat(credits[0]["detail"]["to"])
    held = token_hours(tokens, cache.create_time, ended)
    assert sum(Decimal(r["detail"]["tokenHours"]) for r in rows if r["detail"]) == held
    expected = (held / Decimal(1_000_000)).quantize(Decimal("1e-10"))
    assert sum((r["cost_usd"] for r in rows), Decimal(0)) == expected
