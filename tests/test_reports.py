"""Rollups and the ledger agree exactly; reports are exact over any range, on both databases."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from proxy.db import queries
from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.reports import GROUPS, usage_report
from proxy.db.tables import ApiKey, Tenant, UsageEvent, UsageRollup
from proxy.metering.ledger import LedgerWriter
from proxy.metering.ledger_event import LedgerEvent
from proxy.usage import Usage
from tests.conftest import run_sync

T0 = datetime(2026, 10, 30, 21, 17, 3, 123456, tzinfo=UTC)
MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"]
COUNTS = ("prompt_tokens", "cached_tokens", "output_tokens", "thinking_tokens",
          "tool_use_prompt_tokens", "audio_prompt_tokens", "total_tokens")  # fmt: skip


async def _setup(url: str) -> dict[int, tuple[str, str]]:
    """Two tenants with two keys each: key id -> (tenant, prefix)."""
    engine = make_engine(url)
    out = {}
    async with make_sessionmaker(engine)() as session:
        for name in ("t-alpha", "t-beta"):
            tenant = await queries.create_tenant(session, name)
            for _ in range(2):
                _, key = await queries.create_key(session, tenant)
                out[key.id] = (name, key.prefix)
        await session.commit()
    await engine.dispose()
    return out


def _events(
    keys: dict[int, tuple[str, str]], tenant_ids: dict[str, int], n: int
) -> list[LedgerEvent]:
    rnd = random.Random(7)
    events = []
    for _ in range(n):
        key_id = rnd.choice(list(keys))
        prompt = rnd.randint(0, 5000)
        priced = rnd.random() > 0.1
        events.append(
            LedgerEvent(
                tenant_id=tenant_ids[keys[key_id][0]],
                key_id=key_id,
                model=rnd.choice(MODELS),
                operation="generateContent",
                route=rnd.choice(["native", "openai"]),
                streamed=rnd.random() < 0.5,
                status=rnd.choice([200] * 9 + [429]),
                latency_ms=rnd.random() * 100,
                usage=Usage(
                    prompt_tokens=prompt,
                    cached_tokens=rnd.randint(0, prompt),
                    output_tokens=rnd.randint(0, 900),
                    thinking_tokens=rnd.randint(0, 900),
                    tool_use_prompt_tokens=rnd.randint(0, 50),
                    audio_prompt_tokens=rnd.randint(0, 30),
                    estimated=rnd.random() < 0.05,
                ),
                priced=priced,
                cost_usd=Decimal(rnd.randint(0, 10**8)).scaleb(-10) if priced else None,
                created_at=T0 + timedelta(seconds=rnd.uniform(0, 3 * 86400)),
            )
        )
    return events


Totals = dict[tuple[Any, ...], dict[str, Any]]


def _naive(
    rows: list[dict[str, Any]],
    since: datetime | None,
    until: datetime | None,
    group_by: tuple[str, ...],
    keys: dict[int, tuple[str, str]],
) -> Totals:
    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        ts = (
            r["created_at"].replace(tzinfo=UTC)
            if r["created_at"].tzinfo is None
            else r["created_at"]
        )
        if (since and ts < since) or (until and ts >= until):
            continue
        label = {
            "tenant": keys[r["key_id"]][0], "model": r["model"], "key": keys[r["key_id"]][1],
            "day": ts.astimezone(UTC).date().isoformat(),
            "hour": ts.astimezone(UTC).strftime("%Y-%m-%dT%H:00:00Z"),
            "operation": r["operation"],
        }  # fmt: skip
        acc = out[tuple(label[g] for g in group_by)]
        acc["requests"] += 1
        for c in COUNTS:
            acc[c] += r[c]
        acc["cost_usd"] += r["cost_usd"] or Decimal(0)
        acc["unpriced"] += 0 if r["priced"] else 1
        acc["estimated"] += 1 if r["estimated"] else 0
        acc["errors"] += 0 if r["status"] == 200 else 1
    return out


def test_rollups_equal_the_ledger_and_reports_are_exact(db_url: str) -> None:
    keys = run_sync(lambda: _setup(db_url))

    async def scenario() -> tuple[list[dict[str, Any]], list[Any], dict[str, int]]:
        engine = make_engine(db_url)
        try:
            async with make_sessionmaker(engine)() as s:
                tenant_ids = {t.name: t.id for t in (await s.execute(select(Tenant))).scalars()}
            events = _events(keys, tenant_ids, 1500)
            writer = LedgerWriter(engine)
            rnd = random.Random(3)
            i = 0
            while i < len(events):
                batch = events[i : i + rnd.randint(1, 200)]
                await writer._write(batch, fresh=True)
                if rnd.random() < 0.3:  # a replayed batch (spool, retry): must not double
                    await writer._write(batch)
                i += len(batch)
            async with engine.connect() as conn:
                raw = [dict(r._mapping) for r in await conn.execute(select(UsageEvent))]
                rollups = list(await conn.execute(select(UsageRollup)))
            return raw, rollups, tenant_ids
        finally:
            await engine.dispose()

    raw, rollups, _ = run_sync(scenario)
    assert len(raw) == 1500

    # 1. Every rollup row equals the ledger rows of its hour, tenant, key and model.
    expected: defaultdict[Any, defaultdict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for r in raw:
        ts = r["created_at"] if r["created_at"].tzinfo else r["created_at"].replace(tzinfo=UTC)
        k = (
            ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0),
            r["tenant_id"],
            r["key_id"],
            r["model"],
        )
        expected[k]["requests"] += 1
        expected[k]["cost_usd"] += r["cost_usd"] or Decimal(0)
        for c in COUNTS:
            expected[k][c] += r[c]
    got = {}
    for row in rollups:
        m = row._mapping
        b = m["bucket"] if m["bucket"].tzinfo else m["bucket"].replace(tzinfo=UTC)
        got[(b.astimezone(UTC), m["tenant_id"], m["key_id"], m["model"])] = {
            "requests": m["requests"], "cost_usd": m["cost_usd"], **{c: m[c] for c in COUNTS}
        }  # fmt: skip
    assert got == {k: dict(v) for k, v in expected.items()}

    # 2. Reports over unaligned ranges, every grouping, equal a naive sum of the raw rows.
    rnd = random.Random(11)
    cases: list[tuple[datetime | None, datetime | None, tuple[str, ...]]] = [
        (None, None, ("tenant", "model")),
        (T0 + timedelta(minutes=13), T0 + timedelta(minutes=47), ("model",)),  # inside one hour
        (T0 + timedelta(hours=5), T0 + timedelta(hours=5), ("tenant",)),  # empty
    ]
    for _ in range(12):
        lo = T0 + timedelta(seconds=rnd.uniform(-3600, 3 * 86400))
        hi = lo + timedelta(seconds=rnd.uniform(0, 2 * 86400))
        cases.append((lo, hi, tuple(rnd.sample(GROUPS, rnd.randint(0, 3)))))

    async def reports() -> list[list[Any]]:
        engine = make_engine(db_url)
        try:
            async with make_sessionmaker(engine)() as s:
                return [
                    await usage_report(s, since=a, until=b, group_by=g)  # type: ignore[arg-type]
                    for a, b, g in cases
                ]
        finally:
            await engine.dispose()

    for (a, b, g), report in zip(cases, run_sync(reports), strict=True):
        naive = _naive(raw, a, b, g, keys)
        got_report = {tuple(r.group[x] for x in g): r.as_dict() for r in report}
        assert set(got_report) == set(naive), (a, b, g)
        for k, acc in naive.items():
            row = got_report[k]
            for name, value in acc.items():
                assert row[name] == value, (a, b, g, k, name)


def test_report_filters_by_model_and_key(db_url: str) -> None:
    keys = run_sync(lambda: _setup(db_url))
    key_id = min(keys)

    async def go() -> tuple[Any, Any]:
        engine = make_engine(db_url)
        try:
            async with make_sessionmaker(engine)() as s:
                tenant_ids = {t.name: t.id for t in (await s.execute(select(Tenant))).scalars()}
            events = _events(keys, tenant_ids, 300)
            await LedgerWriter(engine)._write(events)
            async with make_sessionmaker(engine)() as s:
                by_key = await usage_report(s, key=key_id, model=MODELS[0], group_by=("key",))
                prefix = (
                    await s.execute(select(ApiKey.prefix).where(ApiKey.id == key_id))
                ).scalar()
            n = sum(1 for e in events if e.key_id == key_id and e.model == MODELS[0])
            return (by_key, prefix), n
        finally:
            await engine.dispose()

    (rows, prefix), n = run_sync(go)
    assert [r.group for r in rows] == [{"key": prefix}] and rows[0].requests == n
