"""Owners: a resource is its tenant's alone, pages are the tenant's own, waits are bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.caller import Caller
from proxy.db.engine import make_engine, make_sessionmaker
from proxy.errors import BadRequest, ServiceUnavailable
from proxy.resources import Owners

A = Caller(tenant_id=1, tenant_name="team-a", key_id=11)
A2 = Caller(tenant_id=1, tenant_name="team-a", key_id=12)
B = Caller(tenant_id=2, tenant_name="team-b", key_id=21)


@pytest.fixture
async def owners(db_url: str) -> AsyncIterator[Owners]:
    engine = make_engine(db_url)
    try:
        yield Owners(make_sessionmaker(engine), timeout=5)
    finally:
        await engine.dispose()


async def test_a_resource_is_its_tenants_alone(owners: Owners) -> None:
    await owners.add("files/abc", "file", A, detail={"mimeType": "text/plain", "sizeBytes": 3})
    row = await owners.get("files/abc", A2)  # another key of the same tenant sees it
    assert (
        row is not None
        and row.key_id == 11
        and row.detail
        == {
            "mimeType": "text/plain",
            "sizeBytes": 3,
        }
    )
    assert await owners.get("files/abc", B) is None
    assert await owners.get("files/abc", A, kind="cache") is None
    assert await owners.owns("files/abc", A) and not await owners.owns("files/abc", B)
    assert not await owners.owns("files/unknown", A)
    await owners.delete("files/abc")
    assert await owners.get("files/abc", A) is None and not await owners.owns("files/abc", A)


async def test_pages_hold_only_the_tenants_own_newest_first(owners: Owners) -> None:
    for i in range(5):
        await owners.add(f"cachedContents/a{i}", "cache", A)
        await owners.add(f"cachedContents/b{i}", "cache", B)
    await owners.add("files/a", "file", A)
    seen: list[str] = []
    token = None
    while True:
        page = await owners.page(A, "cache", 2, token)
        assert len(page.rows) <= 2
        seen += [r.name for r in page.rows]
        token = page.next_token
        if token is None:
            break
    assert seen == [f"cachedContents/a{i}" for i in reversed(range(5))]
    with pytest.raises(BadRequest):
        await owners.page(A, "cache", 2, "not-a-token!")


async def test_a_database_that_does_not_answer_is_a_503_not_a_hang(owners: Owners) -> None:
    class Frozen:
        def __call__(self) -> Any:
            return self

        async def __aenter__(self) -> Any:
            await asyncio.sleep(3600)

        async def __aexit__(self, *exc: object) -> None:
            return None

    slow = Owners(Frozen(), timeout=0.05)  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable):
        await slow.get("files/x", A)
    with pytest.raises(ServiceUnavailable):
        await slow.add("files/x", "file", A)
