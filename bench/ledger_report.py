"""Usage reports at ten million ledger rows, on PostgreSQL.

    python -m bench.ledger_report [--rows 10000000] [--pg postgresql+asyncpg://postgres@127.0.0.1/postgres]

Creates a throw-away database, fills ``usage_events`` server-side (generate_series: 20 tenants,
100 keys, 5 models, three months of traffic), builds ``usage_rollups`` with the same SQL the
0003 migration uses to backfill, checks that rollups and ledger agree, then times the month
report the admin API and the CLI run (``proxy.db.reports.usage_report``) — aligned to whole
hours and with unaligned ends — against the naive aggregate over the raw ledger. Drops the
database at the end. Not a test: timings live here and in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.migrate import upgrade_async
from proxy.db.reports import usage_report

START = datetime(2026, 8, 1, tzinfo=UTC)
SPAN_DAYS = 92

FILL = """
INSERT INTO usage_events (id, created_at, tenant_id, key_id, model, operation, route, streamed,
    status, prompt_tokens, cached_tokens, output_tokens, thinking_tokens, tool_use_prompt_tokens,
    audio_prompt_tokens, cached_audio_tokens, output_image_tokens, output_audio_tokens,
    total_tokens, estimated, cost_usd, priced, price_list, price_version, latency_ms, retries)
SELECT md5(i::text || CAST(:salt AS text)),
    CAST(:start AS timestamptz) + (i * CAST(:step AS bigint)) * interval '1 microsecond',
    1 + (i % 20), 1 + (i % 100), (ARRAY['gemini-2.5-flash','gemini-2.5-pro','gemini-2.0-flash',
    'gemini-3-pro','gemini-embedding-001'])[1 + (i % 5)], 'generateContent', 'native',
    (i % 3 = 0), CASE WHEN i % 50 = 0 THEN 429 ELSE 200 END, 100 + (i % 4000), (i % 7) * 10,
    10 + (i % 900), (i % 11) * 20, 0, 0, 0, 0, 0, 110 + (i % 4000) + (i % 900) + (i % 11) * 20,
    false, ((100 + (i % 4000)) * 0.00000015 + (10 + (i % 900)) * 0.0000006)::numeric(20, 10),
    true, 'gemini-api', '2025-05-07', 1.5, 0
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i
"""

ROLLUP = """
INSERT INTO usage_rollups (bucket, tenant_id, key_id, model, requests, prompt_tokens,
    cached_tokens, output_tokens, thinking_tokens, tool_use_prompt_tokens, audio_prompt_tokens,
    total_tokens, cost_usd, unpriced, estimated, errors)
SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', tenant_id,
    COALESCE(key_id, 0), model, COUNT(*), SUM(prompt_tokens), SUM(cached_tokens),
    SUM(output_tokens), SUM(thinking_tokens), SUM(tool_use_prompt_tokens),
    SUM(audio_prompt_tokens), SUM(total_tokens), COALESCE(SUM(cost_usd), 0),
    SUM(CASE WHEN priced THEN 0 ELSE 1 END), SUM(CASE WHEN estimated THEN 1 ELSE 0 END),
    SUM(CASE WHEN status = 200 THEN 0 ELSE 1 END)
FROM usage_events GROUP BY 1, 2, 3, 4
"""

NAIVE = """
SELECT t.name, e.model, COUNT(*), SUM(e.prompt_tokens), SUM(e.output_tokens), SUM(e.cost_usd)
FROM usage_events e JOIN tenants t ON t.id = e.tenant_id
WHERE e.created_at >= :since AND e.created_at < :until GROUP BY t.name, e.model
"""


async def _timed(fn: Any, runs: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, result


async def main(rows: int, admin_url: str, runs: int) -> None:
    name = f"gm_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        await c.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await upgrade_async(url)
        # Filling millions of rows server-side takes longer than the proxy's 30 s statement limit.
        engine = make_engine(url, connect_args={"timeout": 10, "command_timeout": 1800})
        async with engine.begin() as c:
            await c.execute(text(
                "INSERT INTO tenants (id, name, disabled, created_at) "
                "SELECT i, 'tenant-' || i, false, now() FROM generate_series(1, 20) i"
            ))  # fmt: skip
            await c.execute(text(
                "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, created_at) "
                "SELECT i, 1 + (i % 20), md5(i::text), 'gm-' || i, now() "
                "FROM generate_series(1, 100) i"
            ))  # fmt: skip
        step = SPAN_DAYS * 86400 * 1_000_000 // rows
        t0 = time.perf_counter()
        chunk = 1_000_000
        for lo in range(1, rows + 1, chunk):
            async with engine.begin() as c:
                await c.execute(
                    text(FILL),
                    {"salt": name, "start": START, "step": step, "lo": lo,
                     "hi": min(rows, lo + chunk - 1)},
                )  # fmt: skip
            print(f"  filled {min(rows, lo + chunk - 1):,} rows", flush=True)
        async with engine.begin() as c:
            await c.execute(text(ROLLUP))
        async with engine.connect() as c:
            await c.execute(text("ANALYZE"))
            n = (await c.execute(text("SELECT COUNT(*) FROM usage_events"))).scalar_one()
            r = (await c.execute(text("SELECT COUNT(*) FROM usage_rollups"))).scalar_one()
            agree = (await c.execute(text(
                "SELECT (SELECT SUM(cost_usd) FROM usage_events) = (SELECT SUM(cost_usd) FROM"
                " usage_rollups) AND (SELECT COUNT(*) FROM usage_events) = (SELECT SUM(requests)"
                " FROM usage_rollups)"
            ))).scalar_one()  # fmt: skip
        fill_s = time.perf_counter() - t0
        print(f"ledger rows {n:,}, rollup rows {r:,}, rollups agree with ledger: {agree}")

        month = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
        odd = (month[0] + timedelta(minutes=37, seconds=5), month[1] - timedelta(minutes=13))
        sm = make_sessionmaker(engine)

        def report(rng: tuple[datetime, datetime]) -> Any:
            async def go() -> Any:
                async with sm() as s:
                    return await usage_report(
                        s, since=rng[0], until=rng[1], group_by=("tenant", "model")
                    )

            return go

        def naive(rng: tuple[datetime, datetime]) -> Any:
            async def go() -> Any:
                async with engine.connect() as c:
                    res = await c.execute(text(NAIVE), {"since": rng[0], "until": rng[1]})
                    return res.all()

            return go

        results = {}
        for label, fn, r_ in (
            ("report, month, whole hours", report, month),
            ("report, month, unaligned ends", report, odd),
            ("naive raw aggregate, month", naive, month),
        ):
            times, out = await _timed(fn(r_), runs if "naive" not in label else max(1, runs // 3))
            results[label] = (times, out)
            print(
                f"{label:34s} median {statistics.median(times):9.1f} ms   "
                f"min {min(times):9.1f} ms   ({len(out)} groups)"
            )
        exact = sum(x.requests for x in results["report, month, whole hours"][1]) == sum(
            row[2] for row in results["naive raw aggregate, month"][1]
        )
        print(f"fill {fill_s:.0f} s; report equals the naive aggregate: {exact}")
        await engine.dispose()
    finally:
        async with admin.connect() as c:
            await c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--pg", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    asyncio.run(main(args.rows, args.pg, args.runs))
