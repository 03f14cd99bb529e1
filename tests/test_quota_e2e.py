"""Quotas through running proxies: one replica or two, on SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from redis import Redis

from proxy.quotas.estimate import estimate_call
from tests.conftest import RunningProxy, run_sync
from tests.fakes.gemini import JsonReply, text_response
from tests.test_quota_fixtures import REDIS_URL, add_policy, body, budget_for, proxy_catalog

MODEL = "gemini-2.5-flash"
# Priced as the proxies here price it: default settings, the Gemini API list then Vertex AI's.
CATALOG = proxy_catalog()
ADMIN = {"authorization": "Bearer admin-token-for-tests"}


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    """(database url, proxy settings) for each way quota counters are kept."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url"), {}
        return
    url = request.getfixturevalue("pg_url")
    if request.param == "postgresql":
        yield url, {}
        return
    prefix = f"gm-e2e:{uuid.uuid4().hex[:10]}:"
    yield url, {"redis_url": REDIS_URL, "redis_prefix": prefix}
    r = Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}*"))
    if keys:
        r.delete(*keys)
    r.close()


def worst_case_reply(req: dict[str, Any]) -> JsonReply:
    """A reply whose real cost equals the reservation: nothing is released at settlement."""
    est = estimate_call(CATALOG, MODEL, req)
    usage = {
        "promptTokenCount": est.prompt_tokens,
        "candidatesTokenCount": 0,
        "thoughtsTokenCount": est.max_output_tokens,
        "totalTokenCount": est.prompt_tokens + est.max_output_tokens,
    }
    return JsonReply(text_response("ok", usage))


async def _burst(url: str, key: str, req: dict[str, Any], n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{url}/v1beta/models/{MODEL}:generateContent",
                    headers={"x-goog-api-key": key},
                    json=req,
                )
                for _ in range(n)
            )
        )


def test_fifty_concurrent_calls_never_overshoot_a_hard_budget(
    start_proxy: Callable[..., RunningProxy], backend: tuple[str, dict[str, Any]]
) -> None:
    url, overrides = backend
    p = start_proxy(url, **overrides)
    req = body(400, 1000)
    budget = budget_for(10.5, req, cat=CATALOG)
    run_sync(lambda: add_policy(url, p.tenant, budget_usd=budget, period="day"))
    httpx.get(f"{p.url}/admin/tenants/{p.tenant}/quota", headers=ADMIN)  # policy loaded
    for _ in range(50):
        p.fake.enqueue(worst_case_reply(req), action="generateContent")

    replies = asyncio.run(_burst(p.url, p.key, req, 50))
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert len(ok) == 10 and len(refused) == 40, [r.status_code for r in replies]
    for r in refused:
        err = r.json()["error"]
        assert err["status"] == "RESOURCE_EXHAUSTED" and "budget" in err["message"]
        assert int(r.headers["retry-after"]) > 0
    rows = p.rows(10)
    spent = sum((r["cost_usd"] for r in rows), Decimal(0))
    assert len(rows) == 10 and spent <= budget
    state = httpx.get(f"{p.url}/admin/tenants/{p.tenant}/quota", headers=ADMIN).json()
    [limit] = [lim for lim in state["limits"] if lim["limit"] == "budget_usd"]
    assert Decimal(limit["reserved"]) == 0  # nothing left held
    assert Decimal(limit["used"]) == spent


@pytest.mark.parametrize("shared", ["postgresql", "redis"])
def test_two_replicas_enforce_one_budget_and_one_rpm(
    start_proxy: Callable[..., RunningProxy], pg_url: str, shared: str
) -> None:
    overrides: dict[str, Any] = {}
    prefix = f"gm-e2e:{uuid.uuid4().hex[:10]}:"
    if shared == "redis":
        overrides = {"redis_url": REDIS_URL, "redis_prefix": prefix}
    a = start_proxy(pg_url, **overrides)
    b = start_proxy(pg_url, **overrides)
    key_b = b.key  # both keys belong to team-a
    req = body(400, 1000)
    run_sync(
        lambda: add_policy(
            pg_url, a.tenant, budget_usd=budget_for(6.5, req, cat=CATALOG), period="day", rpm=1000
        )
    )
    for p in (a, b):
        httpx.get(f"{p.url}/admin/tenants/{p.tenant}/quota", headers=ADMIN)
    for _ in range(40):
        a.fake.enqueue(worst_case_reply(req), action="generateContent")

    async def both() -> list[httpx.Response]:
        ra, rb = await asyncio.gather(_burst(a.url, a.key, req, 20), _burst(b.url, key_b, req, 20))
        return [*ra, *rb]

    statuses = [r.status_code for r in asyncio.run(both())]
    assert statuses.count(200) == 6 and statuses.count(429) == 34

    # RPM across replicas: another tenant, 5 requests a minute, one key on each replica.
    keys = {a.url: a.new_key("team-b"), b.url: b.new_key("team-b")}
    run_sync(lambda: add_policy(pg_url, "team-b", rpm=5))
    for p in (a, b):
        httpx.get(f"{p.url}/admin/tenants/team-b/quota", headers=ADMIN)
    count = {200: 0, 429: 0}
    last: httpx.Response | None = None
    for i in range(10):
        url = a.url if i % 2 == 0 else b.url
        last = httpx.post(
            f"{url}/v1beta/models/{MODEL}:generateContent",
            headers={"x-goog-api-key": keys[url]},
            json=req,
        )
        count[last.status_code] += 1
    assert count == {200: 5, 429: 5}
    assert last is not None and last.headers["x-ratelimit-limit-requests"] == "5"
    assert last.headers["x-ratelimit-remaining-requests"] == "0"
    if shared == "redis":
        r = Redis.from_url(REDIS_URL)
        stale = list(r.scan_iter(match=f"{prefix}*"))
        if stale:
            r.delete(*stale)
        r.close()


def test_openai_route_gets_openai_quota_errors_and_headers(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    p = start_proxy(sqlite_url)
    run_sync(lambda: add_policy(sqlite_url, p.tenant, rpm=2, allowed_models=["gemini-2.5-*"]))
    httpx.get(f"{p.url}/admin/tenants/{p.tenant}/quota", headers=ADMIN)
    c = openai.OpenAI(base_url=f"{p.url}/v1", api_key=p.key, max_retries=0)
    msgs: Any = [{"role": "user", "content": "hi"}]
    raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=msgs)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    c.chat.completions.create(model=MODEL, messages=msgs)
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model=MODEL, messages=msgs)
    assert err.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert int(err.value.response.headers["retry-after"]) >= 1
    with pytest.raises(openai.PermissionDeniedError) as denied:
        c.chat.completions.create(model="gemini-2.0-flash", messages=msgs)
    assert denied.value.body["code"] == "model_not_allowed"  # type: ignore[index]


def test_budget_refusal_on_openai_is_insufficient_quota(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    p = start_proxy(sqlite_url)
    run_sync(lambda: add_policy(sqlite_url, p.tenant, budget_usd="0.0000001", period="month"))
    httpx.get(f"{p.url}/admin/tenants/{p.tenant}/quota", headers=ADMIN)
    c = openai.OpenAI(base_url=f"{p.url}/v1", api_key=p.key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "insufficient_quota"  # type: ignore[index]
    assert p.fake.requests == []  # refused before going upstream
