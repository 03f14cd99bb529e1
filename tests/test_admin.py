"""The admin API and tenants' own usage: auth paths, CRUD, isolation, reports, retention."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from proxy.app import create_app
from proxy.db.engine import make_engine
from proxy.metering.retention import Retention
from tests.conftest import RunningProxy, fetch_rows, proxy_settings, run_sync
from tests.fakes.gemini import text_reply, usage_metadata

ROOT = Path(__file__).resolve().parents[1]
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


# -- the admin token (issue 16, item 5) --------------------------------------------------------


@pytest.mark.parametrize("token", ["", "   "], ids=["empty", "blank"])
# (A header value's trailing blanks never reach the app: servers strip them.)
@pytest.mark.parametrize("sent", ["Bearer", "bearer", ""])
def test_an_empty_admin_token_disables_the_api(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str, token: str, sent: str
) -> None:
    p = start_proxy(sqlite_url, admin_token=token)
    assert p.settings.admin_token is None
    for method, path in [("GET", "/tenants"), ("POST", "/tenants/team-a/keys")]:
        r = httpx.request(
            method, f"{p.url}/admin{path}", headers={"authorization": sent} if sent else {},
            json={},
        )  # fmt: skip
        assert r.status_code == 403, r.text
        assert "secret" not in r.text


def test_a_blank_bearer_never_matches(proxy: RunningProxy) -> None:
    for sent in ["Bearer", "bearer", "Basic"]:
        r = httpx.get(f"{proxy.url}/admin/tenants", headers={"authorization": sent})
        assert r.status_code == 401, sent


@pytest.mark.parametrize("token", ["short", "x" * 15, " padded-token-of-enough-length "])
def test_a_weak_admin_token_refuses_to_start(
    sqlite_url: str, tmp_path: Path, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = proxy_settings(sqlite_url, "http://upstream.invalid", admin_token=token)
    with pytest.raises(ValueError, match="GEMINI_METER_ADMIN_TOKEN"):
        create_app(settings)
    monkeypatch.setenv("GEMINI_METER_ADMIN_TOKEN", token)
    monkeypatch.setenv("GEMINI_METER_DATABASE_URL", sqlite_url)
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--port", "1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "GEMINI_METER_ADMIN_TOKEN" in done.stderr and token.strip() not in done.stderr


def test_a_token_of_sixteen_characters_is_accepted(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    p = start_proxy(sqlite_url, admin_token="0123456789abcdef")
    r = httpx.get(f"{p.url}/admin/tenants", headers={"authorization": "Bearer 0123456789abcdef"})
    assert r.status_code == 200
    r = httpx.get(f"{p.url}/admin/tenants", headers={"authorization": "Bearer 0123456789abcdeX"})
    assert r.status_code == 401


# -- bad input is a 4xx, never a 500 (issue 16, item 8) ----------------------------------------

BAD_ADMIN_REQUESTS = [
    ("GET", "/usage?key=99999999999999999999", None),
    ("GET", "/usage?key=-1", None),
    ("GET", "/usage?tenant=%00", None),
    ("GET", "/usage?model=%00", None),
    ("GET", "/usage?model=" + "m" * 200, None),
    ("GET", "/usage?from=9999-12-31T23:30:00", None),
    ("GET", "/usage?from=0001-01-01T00:00:00%2B05:00", None),
    ("GET", "/usage?to=0001-01-01T00:00:00%2B05:00", None),
    ("GET", "/tenants/a%00b", None),
    ("PATCH", "/tenants/a%00b", {"disabled": True}),
    ("POST", "/tenants/a%00b/keys", {}),
    ("POST", "/tenants/team-a/keys", {"name": "a\x00b"}),
    ("DELETE", "/keys/a%00b", None),
    ("DELETE", "/keys/99999999999999999999", None),
    ("DELETE", "/keys/%C2%B2", None),  # a digit to str.isdigit, no number to int()
    ("GET", "/keys?tenant=a%00b", None),
    ("PUT", "/tenants/team-a/quota", {"budget_usd": "1e400"}),
    ("PUT", "/tenants/team-a/quota", {"budget_usd": 1e400}),
    ("PUT", "/tenants/team-a/quota", {"budget_usd": "123456789012345678901234567890"}),
    ("PUT", "/tenants/team-a/quota", {"budget_usd": 123456789012345678901234567890}),
    ("PUT", "/tenants/team-a/quota", {"tokens": 2**63}),
    ("PUT", "/tenants/team-a/quota", {"tpm": 2**63}),
    ("PUT", "/tenants/team-a/quota", {"rpm": 2**64}),
    ("PUT", "/tenants/team-a/quota", {"tokens": 10, "key": "a\x00"}),
    ("PUT", "/tenants/team-a/quota", {"tokens": 10, "key": "99999999999999999999"}),
    ("PUT", "/tenants/team-a/quota", {"allowed_models": ["a\x00"]}),
    ("PUT", "/tenants/a%00b/quota", {"tokens": 10}),
    ("GET", "/tenants/a%00b/quota", None),
    ("DELETE", "/tenants/team-a/quota?key=a%00b", None),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_ADMIN_REQUESTS)
def test_bad_admin_input_is_a_4xx_in_the_envelope(
    start_proxy: Callable[..., RunningProxy],
    pg_url: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
) -> None:
    p = start_proxy(pg_url)
    content = None if body is None else _dumps(body)
    headers = ADMIN | {"content-type": "application/json"}
    r = httpx.request(method, f"{p.url}/admin{path}", headers=headers, content=content)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert "Field required" not in r.text  # the body was read: the case is what it says
    err = r.json()["error"]
    assert err["message"] and err["type"] in ("invalid_request_error", "not_found_error")


def _dumps(body: object) -> bytes:
    # The stdlib encoder: it writes integers beyond 64 bits and 1e400 as JSON numbers.
    return json.dumps(body).replace("Infinity", "1e400").encode()


@pytest.mark.parametrize(
    "query",
    [
        "from=9999-12-31T23:30:00",
        "from=0001-01-01T00:00:00%2B05:00",
        "to=9999-12-31T23:59:59",
        "model=%00",
        "model=" + "m" * 200,
        "from=not-a-date",
    ],
)
def test_bad_tenant_usage_input_is_a_400(
    start_proxy: Callable[..., RunningProxy], pg_url: str, query: str
) -> None:
    p = start_proxy(pg_url)
    r = httpx.get(f"{p.url}/v1/usage?{query}", headers={"authorization": f"Bearer {p.key}"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_the_widest_valid_range_still_answers(
    start_proxy: Callable[..., RunningProxy], pg_url: str
) -> None:
    p = start_proxy(pg_url)
    assert gen(p, p.key).status_code == 200
    p.rows(1)
    r = httpx.get(
        f"{p.url}/v1/usage",
        params={"from": "0001-01-02T00:00:00+00:00", "to": "9999-12-30T00:00:00"},
        headers={"authorization": f"Bearer {p.key}"},
    )
    assert r.status_code == 200 and r.json()[0]["requests"] == 1
