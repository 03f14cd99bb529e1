"""Batch mode through the proxy, with the google-genai SDK: tenant scoping, one ledger row per
response at the batch rates written exactly once by the reconciler (also with two replicas on
one PostgreSQL, and after a crash between the rows and the mark), budgets held at create."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from sqlalchemy import select, update

from proxy.caller import Caller
from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.tables import Resource, Tenant
from proxy.pricing.cost import price_call
from proxy.resources import Owners
from proxy.usage import Usage
from tests.conftest import RunningProxy, run_sync
from tests.test_quota_fixtures import add_policy, proxy_catalog

MODEL = "gemini-2.5-flash"
ADMIN = {"authorization": "Bearer admin-token-for-tests"}
CATALOG = proxy_catalog()
FAST = {"reconcile_interval": 0.05, "reconcile_repoll": 0.05}
REQUESTS: list[Any] = [
    {"contents": [{"role": "user", "parts": [{"text": "one two three four"}]}]},
    {"contents": [{"role": "user", "parts": [{"text": "five"}]}]},
]


def sdk(proxy: RunningProxy, key: str | None = None) -> genai.Client:
    options = genai_types.HttpOptions(base_url=proxy.url, api_version="v1beta")
    return genai.Client(api_key=key or proxy.key, http_options=options)


@pytest.fixture
def fast_proxy(start_proxy: Callable[..., RunningProxy], sqlite_url: str) -> RunningProxy:
    return start_proxy(sqlite_url, **FAST)


@pytest.fixture
def client(fast_proxy: RunningProxy) -> Iterator[genai.Client]:
    with sdk(fast_proxy) as c:
        yield c


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def resource(url: str, name: str) -> Resource | None:
    async def get() -> Resource | None:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                row: Resource | None = await session.get(Resource, name)
                return row
        finally:
            await engine.dispose()

    return run_sync(get)


def set_resource(url: str, name: str, **values: Any) -> None:
    async def put() -> None:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(update(Resource).where(Resource.name == name).values(**values))
        finally:
            await engine.dispose()

    run_sync(put)


def own_file(url: str, tenant: str, name: str, size: int) -> None:
    """Record ``name`` as ``tenant``'s file, as an upload through the proxy does."""

    async def add() -> None:
        engine = make_engine(url)
        try:
            sm = make_sessionmaker(engine)
            async with sm() as session:
                t = (
                    await session.execute(select(Tenant).where(Tenant.name == tenant))
                ).scalar_one()
            caller = Caller(t.id, tenant, None)
            await Owners(sm, timeout=5).add(name, "file", caller, detail={"sizeBytes": size})
        finally:
            await engine.dispose()

    run_sync(add)


def metered_rows(proxy: RunningProxy, name: str, count: int) -> list[dict[str, Any]]:
    def rows() -> list[dict[str, Any]]:
        found = [
            r for r in proxy.rows(0) if r["resource"] == name
            and r["operation"] == "batchGenerateContent"
        ]  # fmt: skip
        return found if len(found) >= count else []

    return sorted(wait_for(rows) or [], key=lambda r: r["detail"]["index"])


def batch_cost(usage: dict[str, int]) -> Decimal:
    u = Usage(prompt_tokens=usage["promptTokenCount"], output_tokens=usage["candidatesTokenCount"])
    cost = price_call(CATALOG, MODEL, u, status=200, at=None, batch=True).cost
    assert cost is not None
    return cost


def test_inline_batch_is_metered_once_per_response_at_batch_rates(
    fast_proxy: RunningProxy, client: genai.Client
) -> None:
    fake = fast_proxy.fake
    fake.resources.batches.polls_per_state = None
    job = client.batches.create(model=MODEL, src=REQUESTS, config={"display_name": "nightly"})
    assert job.name and job.state == "JOB_STATE_PENDING" and job.display_name == "nightly"
    created = [r for r in fast_proxy.rows(1) if r["operation"] == "batches.create"]
    assert len(created) == 1 and created[0]["cost_usd"] == 0 and created[0]["resource"] == job.name
    assert created[0]["detail"] == {"requests": 2}

    fake.resources.batches.finish(job.name)  # nobody polls: the reconciler finds it done
    rows = metered_rows(fast_proxy, job.name, 2)
    results = fake.resources.batches.batches[job.name].results
    usages = [r["response"]["usageMetadata"] for r in results]
    assert [r["prompt_tokens"] for r in rows] == [u["promptTokenCount"] for u in usages]
    assert [r["cost_usd"] for r in rows] == [batch_cost(u) for u in usages]
    standard = price_call(
        CATALOG, MODEL, Usage(prompt_tokens=5, output_tokens=4), status=200, at=None
    ).cost
    assert standard is not None and rows[0]["cost_usd"] == standard / 2  # the batch columns
    assert all(r["priced"] and r["route"] == "reconciler" and r["key_id"] for r in rows)
    assert resource(fast_proxy.settings.database_url, job.name).metered_at is not None  # type: ignore[union-attr]

    report = httpx.get(
        f"{fast_proxy.url}/admin/usage", params={"group_by": "operation"}, headers=ADMIN
    ).json()
    by_op = {r["operation"]: r for r in report}
    assert by_op["batchGenerateContent"]["requests"] == 2
    assert Decimal(by_op["batchGenerateContent"]["cost_usd"]) == sum(r["cost_usd"] for r in rows)
    assert Decimal(by_op["batches.create"]["cost_usd"]) == 0

    done = client.batches.get(name=job.name)  # the client's poll writes nothing more
    assert done.state == "JOB_STATE_SUCCEEDED" and done.dest and done.dest.inlined_responses
    time.sleep(0.3)
    assert len([r for r in fast_proxy.rows(0) if r["operation"] == "batchGenerateContent"]) == 2


def test_a_crash_between_the_rows_and_the_mark_doubles_nothing(
    start_proxy: Callable[..., RunningProxy], db_url: str
) -> None:
    fast_proxy = start_proxy(db_url, **FAST)
    fast_proxy.fake.resources.batches.polls_per_state = 0  # done at the first poll
    with sdk(fast_proxy) as client:
        name = client.batches.create(model=MODEL, src=REQUESTS).name
    assert name
    first = metered_rows(fast_proxy, name, 2)
    url = fast_proxy.settings.database_url
    # As if the replica died after queueing the rows, before setting metered_at.
    set_resource(url, name, metered_at=None, claimed_until=None, claimed_by=None)
    assert wait_for(lambda: (r := resource(url, name)) is not None and r.metered_at)
    again = metered_rows(fast_proxy, name, 2)
    assert [r["id"] for r in again] == [r["id"] for r in first] and len(again) == 2


def test_results_in_a_file_are_metered_per_line(
    fast_proxy: RunningProxy, client: genai.Client
) -> None:
    fake = fast_proxy.fake
    fake.resources.batches.polls_per_state = None
    lines = [
        {"key": "a", "request": {"contents": [{"parts": [{"text": "alpha"}]}]}},
        "not json",
        {"key": "c", "request": {"contents": [{"parts": [{"text": "gamma"}]}]}},
    ]
    data = b"".join((x.encode() if isinstance(x, str) else orjson.dumps(x)) + b"\n" for x in lines)
    source = fake.resources.files.add(data, "application/jsonl")
    with pytest.raises(genai_errors.ClientError) as err:  # not the tenant's file (yet)
        client.batches.create(model=MODEL, src=source.name)
    assert err.value.code == 404 and not fake.calls("batchGenerateContent")
    own_file(fast_proxy.settings.database_url, fast_proxy.tenant, source.name, len(data))

    job = client.batches.create(model=MODEL, src=source.name)
    assert job.name
    own = resource(fast_proxy.settings.database_url, job.name)
    assert own is not None
    fake.resources.batches.finish(job.name)
    rows = metered_rows(fast_proxy, job.name, 3)
    assert [r["detail"].get("key") for r in rows] == ["a", None, "c"]
    assert [r["status"] for r in rows] == [200, 400, 200]
    assert rows[1]["cost_usd"] == 0 and rows[0]["cost_usd"] > 0 and rows[2]["cost_usd"] > 0
    done = client.batches.get(name=job.name)  # the results file becomes the tenant's
    assert done.dest and done.dest.file_name
    results = resource(fast_proxy.settings.database_url, done.dest.file_name)
    assert results is not None and results.kind == "file" and results.tenant_id == own.tenant_id
    assert results.detail == {"madeFor": job.name}


def test_another_tenant_sees_no_batch_of_ours(
    fast_proxy: RunningProxy, client: genai.Client
) -> None:
    fast_proxy.fake.resources.batches.polls_per_state = None
    job = client.batches.create(model=MODEL, src=REQUESTS)
    assert job.name
    with sdk(fast_proxy, fast_proxy.new_key("team-b")) as other:
        for verb in (other.batches.get, other.batches.cancel, other.batches.delete):
            with pytest.raises(genai_errors.ClientError) as err:
                verb(name=job.name)
            assert err.value.code == 404 and err.value.status == "NOT_FOUND"
        assert list(other.batches.list()) == []
    assert [b.name for b in client.batches.list()] == [job.name]
    with httpx.Client(base_url=fast_proxy.url) as http:  # under /v1 too, in Gemini's envelope
        reply = http.get(f"/v1/{job.name}", headers={"x-goog-api-key": "nope-" + "x" * 30})
        assert reply.status_code == 401 and "error" in reply.json()
        missing = http.get("/v1/batches/unknown", headers={"x-goog-api-key": fast_proxy.key})
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"


def test_cancel_then_delete_once_metered(fast_proxy: RunningProxy, client: genai.Client) -> None:
    fast_proxy.fake.resources.batches.polls_per_state = None
    job = client.batches.create(model=MODEL, src=REQUESTS)
    assert job.name
    with pytest.raises(genai_errors.ClientError) as err:  # still running: results unmetered
        client.batches.delete(name=job.name)
    assert err.value.code == 400 and not fast_proxy.fake.calls("batches.delete")
    client.batches.cancel(name=job.name)
    assert client.batches.get(name=job.name).state == "JOB_STATE_CANCELLED"
    client.batches.delete(name=job.name)
    assert fast_proxy.fake.calls("batches.delete")
    with pytest.raises(genai_errors.ClientError) as err:
        client.batches.get(name=job.name)
    assert err.value.code == 404
    ops = {r["operation"] for r in fast_proxy.rows(0)}
    assert {"batches.create", "batches.cancel", "batches.get", "batches.delete"} <= ops


def test_two_replicas_on_one_postgresql_write_one_set_of_rows(
    start_proxy: Callable[..., RunningProxy], pg_url: str
) -> None:
    a = start_proxy(pg_url, **FAST)
    b = start_proxy(pg_url, **FAST)
    a.fake.resources.batches.polls_per_state = None
    with sdk(a) as client:
        jobs = [client.batches.create(model=MODEL, src=REQUESTS).name for _ in range(4)]
    for name in jobs:
        assert name
        a.fake.resources.batches.finish(name)
    for name in jobs:
        assert name and len(metered_rows(a, name, 2)) == 2
    assert wait_for(lambda: all(resource(pg_url, n).metered_at for n in jobs if n))  # type: ignore[union-attr]
    time.sleep(0.3)  # both replicas keep reconciling: nothing more is written
    rows = [r for r in b.rows(0) if r["operation"] == "batchGenerateContent"]
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8
    holders = {resource(pg_url, n).claimed_by for n in jobs if n}  # type: ignore[union-attr]
    assert None not in holders  # each marked by the replica that metered it


def budget_used(proxy: RunningProxy) -> Decimal:
    state = httpx.get(f"{proxy.url}/admin/tenants/{proxy.tenant}/quota", headers=ADMIN).json()
    [limit] = [lim for lim in state["limits"] if lim["limit"] == "budget_usd"]
    return Decimal(limit["used"])


def test_a_batch_holds_its_worst_case_until_metered_then_its_real_cost(
    fast_proxy: RunningProxy, client: genai.Client
) -> None:
    url = fast_proxy.settings.database_url
    fake = fast_proxy.fake
    fake.resources.batches.polls_per_state = None
    run_sync(lambda: add_policy(url, fast_proxy.tenant, budget_usd=Decimal("0.05"), period="day"))
    assert budget_used(fast_proxy) == 0  # (the policy is loaded)
    big: list[Any] = [{"contents": "x", "config": {"max_output_tokens": 60_000}}] * 10
    with pytest.raises(genai_errors.ClientError) as err:
        client.batches.create(model=MODEL, src=big)
    assert err.value.code == 429 and not fake.calls("batchGenerateContent")

    small: list[Any] = [{"contents": "x", "config": {"max_output_tokens": 100}}] * 2
    job = client.batches.create(model=MODEL, src=small)
    assert job.name
    row = resource(url, job.name)
    assert row is not None and row.detail
    held = Decimal(row.detail["heldUsd"])
    assert held > 0 and wait_for(lambda: budget_used(fast_proxy) == held)  # counted as spent

    fake.resources.batches.finish(job.name)
    rows = metered_rows(fast_proxy, job.name, 2)
    real = sum((r["cost_usd"] for r in rows), Decimal(0))
    assert 0 < real < held
    assert wait_for(lambda: budget_used(fast_proxy) == real)  # corrected to what it cost


def test_an_embeddings_batch_is_metered_per_response_from_its_token_counts(
    fast_proxy: RunningProxy, client: genai.Client
) -> None:
    fast_proxy.fake.resources.batches.polls_per_state = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_embeddings is marked experimental
        job = client.batches.create_embeddings(
            model="gemini-embedding-001",
            src={"inlined_requests": {"contents": ["short", "a longer text"]}},
        )
    assert job.name
    fast_proxy.fake.resources.batches.finish(job.name)

    def rows() -> list[dict[str, Any]]:
        found = [r for r in fast_proxy.rows(0) if r["operation"] == "asyncBatchEmbedContent"]
        return found if len(found) == 2 else []

    got = sorted(wait_for(rows), key=lambda r: r["detail"]["index"])
    assert [r["prompt_tokens"] for r in got] == [2, 4] and all(r["priced"] for r in got)
    expected = [
        price_call(
            CATALOG, "gemini-embedding-001", Usage(prompt_tokens=n), status=200, at=None,
            batch=True,
        ).cost
        for n in (2, 4)
    ]  # fmt: skip
    assert [r["cost_usd"] for r in got] == expected


def test_an_unknown_models_batch_is_unpriced_never_zero(
    fast_proxy: RunningProxy, client: genai.Client
) -> None:
    fast_proxy.fake.resources.batches.polls_per_state = 0
    job = client.batches.create(model="gemini-9-unreleased", src=REQUESTS[:1])
    assert job.name
    [row] = metered_rows(fast_proxy, job.name, 1)
    assert row["status"] == 200 and not row["priced"] and row["cost_usd"] is None
    assert row["prompt_tokens"] > 0


def test_a_batch_gone_upstream_is_closed_with_no_rows(
    fast_proxy: RunningProxy, client: genai.Client
) -> None:
    fake = fast_proxy.fake
    fake.resources.batches.polls_per_state = None
    name = client.batches.create(model=MODEL, src=REQUESTS).name
    assert name
    del fake.resources.batches.batches[name]  # deleted behind the proxy's back
    url = fast_proxy.settings.database_url
    assert wait_for(lambda: (r := resource(url, name)) is not None and r.metered_at)
    assert not [r for r in fast_proxy.rows(0) if r["operation"] == "batchGenerateContent"]
