"""The admin API and tenants' own usage: auth paths, CRUD, isolation, reports, retention."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from proxy.db.engine import make_engine
from proxy.metering.retention import Retention
from tests.conftest import RunningProxy, fetch_rows, run_sync
from tests.fakes.gemini import text_reply, usage_metadata

ADMIN = {"authorization": "Bearer admin-token-for-tests"}
BODY = {"contents": [{"parts": [{"text": "hi"}]}]}


def gen(p: RunningProxy, key: str, model: str = "gemini-2.0-flash") -> httpx.Response:
    return httpx.post(
        f"{p.url}/v1beta/models/{model}:generateContent", headers={"x-goog-api-key": key}, json=BODY
    )


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": "admin-token-for-tests"}, 401),  # no scheme
        ({"x-goog-api-key": "admin-token-for-tests"}, 401),  # not where the admin token goes
    ],
    ids=["none", "wrong", "no-scheme", "wrong-header"],
)
def test_admin_auth_is_required(proxy: RunningProxy, headers: dict[str, str], status: int) -> None:
    r = httpx.get(f"{proxy.url}/admin/tenants", headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["type"] == "authentication_error"


def test_tenant_key_is_refused_on_admin_routes(proxy: RunningProxy) -> None:
    r = httpx.get(f"{proxy.url}/admin/tenants", headers={"authorization": f"Bearer {proxy.key}"})
    assert r.status_code == 401


def test_admin_api_disabled_without_a_token(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    p = start_proxy(sqlite_url, admin_token=None)
    r = httpx.get(f"{p.url}/admin/tenants", headers=ADMIN)
    assert r.status_code == 403 and "disabled" in r.json()["error"]["message"]


def test_tenant_and_key_lifecycle_over_the_api(proxy: RunningProxy) -> None:
    base = f"{proxy.url}/admin"
    r = httpx.post(f"{base}/tenants", json={"name": "team-b"}, headers=ADMIN)
    assert r.status_code == 201 and r.json()["name"] == "team-b"
    assert httpx.post(f"{base}/tenants", json={"name": "team-b"}, headers=ADMIN).status_code == 409
    assert httpx.post(f"{base}/tenants", json={"name": "../x"}, headers=ADMIN).status_code == 400
    names = [t["name"] for t in httpx.get(f"{base}/tenants", headers=ADMIN).json()]
    assert names == ["team-a", "team-b"]
    created = httpx.post(f"{base}/tenants/team-b/keys", json={"name": "ci"}, headers=ADMIN)
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert gen(proxy, secret).status_code == 200
    keys = httpx.get(f"{base}/keys", params={"tenant": "team-b"}, headers=ADMIN).json()
    assert [k["prefix"] for k in keys] == [secret[:11]] and "secret" not in keys[0]
    deadline = time.monotonic() + 5
    while keys[0]["last_used_at"] is None and time.monotonic() < deadline:  # batched write
        time.sleep(0.05)
        keys = httpx.get(f"{base}/keys", params={"tenant": "team-b"}, headers=ADMIN).json()
    assert keys[0]["last_used_at"] is not None
    # Revoking takes effect within the key cache TTL (1 s) on every replica.
    assert httpx.delete(f"{base}/keys/{keys[0]['id']}", headers=ADMIN).status_code == 204
    assert httpx.delete(f"{base}/keys/{keys[0]['id']}", headers=ADMIN).status_code == 404
    _within_a_second(lambda: gen(proxy, secret).status_code == 401)
    assert httpx.get(f"{base}/tenants/nobody", headers=ADMIN).status_code == 404


def test_disabling_a_tenant_applies_within_a_second_on_every_replica(
    start_proxy: Callable[..., RunningProxy], pg_url: str
) -> None:
    a = start_proxy(pg_url)
    b = start_proxy(pg_url)
    assert gen(a, a.key).status_code == gen(b, a.key).status_code == 200
    r = httpx.patch(f"{a.url}/admin/tenants/team-a", json={"disabled": True}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["disabled"] is True
    _within_a_second(lambda: gen(a, a.key).status_code == 401 and gen(b, a.key).status_code == 401)


def _within_a_second(check: Callable[[], bool]) -> None:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < 1.5, "not applied within the key cache TTL"
        time.sleep(0.05)


def test_usage_reports_and_tenant_isolation(proxy: RunningProxy) -> None:
    other = proxy.new_key("team-b")
    proxy.fake.enqueue(
        text_reply("x", usage_metadata(1000, 10)),
        text_reply("x", usage_metadata(2000, 20)),
        text_reply("x", usage_metadata(4000, 40)),
        action="generateContent",
    )
    gen(proxy, proxy.key)
    gen(proxy, proxy.key, "gemini-2.5-pro")
    gen(proxy, other)
    rows = proxy.rows(3)
    report = httpx.get(
        f"{proxy.url}/admin/usage", params={"group_by": "tenant,model"}, headers=ADMIN
    ).json()
    assert [(r["tenant"], r["model"], r["requests"]) for r in report] == [
        ("team-a", "gemini-2.0-flash", 1),
        ("team-a", "gemini-2.5-pro", 1),
        ("team-b", "gemini-2.0-flash", 1),
    ]
    assert sum(Decimal(r["cost_usd"]) for r in report) == sum(r["cost_usd"] for r in rows)
    as_csv = httpx.get(
        f"{proxy.url}/admin/usage", params={"format": "csv", "tenant": "team-b"}, headers=ADMIN
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    [line] = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert line["prompt_tokens"] == "4000"

    # A tenant reads its own usage with its own key, and nobody else's.
    own = httpx.get(f"{proxy.url}/v1/usage", headers={"authorization": f"Bearer {proxy.key}"})
    assert own.status_code == 200
    assert {r["model"] for r in own.json()} == {"gemini-2.0-flash", "gemini-2.5-pro"}
    assert sum(r["prompt_tokens"] for r in own.json()) == 3000
    theirs = httpx.get(
        f"{proxy.url}/v1/usage",
        params={"tenant": "team-b"},
        headers={"authorization": f"Bearer {proxy.key}"},
    )
    assert theirs.status_code == 403
    assert httpx.get(f"{proxy.url}/v1/usage").status_code == 401
    bad = httpx.get(f"{proxy.url}/admin/usage", params={"group_by": "password"}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


def test_openapi_schema_of_the_admin_api(proxy: RunningProxy) -> None:
    schema = httpx.get(f"{proxy.url}/admin/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/tenants", "/tenants/{name}", "/tenants/{name}/keys", "/keys", "/keys/{key}",
            "/tenants/{name}/quota", "/usage"} <= paths  # fmt: skip
    assert not any(p.startswith("/v1") for p in paths)  # the proxy routes are not admin API


def test_quota_policies_over_the_api(proxy: RunningProxy) -> None:
    url = f"{proxy.url}/admin/tenants/team-a/quota"
    r = httpx.put(url, json={"budget_usd": "12.50", "period": "day", "rpm": 100}, headers=ADMIN)
    assert r.status_code == 200, r.text
    state = r.json()
    assert Decimal(state["policies"][0]["budget_usd"]) == Decimal("12.50")
    assert {lim["limit"] for lim in state["limits"]} >= {"budget_usd", "rpm"}
    assert httpx.put(url, json={"rpm": -1}, headers=ADMIN).status_code == 400
    assert httpx.delete(url, headers=ADMIN).status_code == 204
    assert httpx.get(url, headers=ADMIN).json()["policies"] == []


def test_retention_drops_old_rows_and_keeps_rollups(proxy: RunningProxy) -> None:
    gen(proxy, proxy.key)
    proxy.rows(1)
    url = proxy.settings.database_url

    async def prune() -> int:
        engine = make_engine(url)
        try:
            return await Retention(engine, days=1).run_once(datetime.now(UTC) + timedelta(days=2))
        finally:
            await engine.dispose()

    assert run_sync(prune) == 1
    assert run_sync(lambda: fetch_rows(url)) == []
    report = httpx.get(f"{proxy.url}/admin/usage", headers=ADMIN).json()
    assert report[0]["requests"] == 1  # the whole-hour report still has it, from the rollups
