"""What one admission and its settlement cost, in process: the quota path without the server.

    python -m bench.quota_admit [--calls 20000] [--profile]

A tenant whose policy has every limit kind (hard monthly budget, token quota, RPM, TPM, allowed
models), far above the load, on the in-process store (SQLite ledger in a temporary directory):
``QuotaService.admit`` then ``settle`` in a loop, after a warm-up, as the proxy does for each call.
Prints the microseconds per admitted and settled call; ``--profile`` adds cProfile's top entries.
The figure to watch when changing ``proxy/quotas/`` (issue 18, docs/benchmarks.md); the whole
proxy's cost is ``python -m bench.quota``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from proxy.db import queries
from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.migrate import upgrade_async
from proxy.model_ids import model_id
from proxy.pricing.catalog import Catalog
from proxy.quotas.manage import set_policy
from proxy.quotas.service import QuotaService
from proxy.quotas.store_memory import MemoryStore
from proxy.settings import Settings

__all__ = ["main"]

MODEL = "gemini-2.5-flash"
BODY = {
    "contents": [{"role": "user", "parts": [{"text": "x" * 400}]}],
    "generationConfig": {"maxOutputTokens": 1000},
}


async def run(calls: int, profile: bool) -> float:
    home = tempfile.mkdtemp(prefix="gm-quota-admit-")
    url = f"sqlite+aiosqlite:///{home}/ledger.db"
    await upgrade_async(url)
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            tenant = await queries.create_tenant(session, "bench")
            secret, _ = await queries.create_key(session, tenant)
            await set_policy(
                session, "bench", budget_usd=Decimal(10**6), tokens=10**12, rpm=10**9,
                tpm=10**12, allowed_models=[MODEL],
            )  # fmt: skip
            await session.commit()
            info = await queries.lookup_key(session, queries.hash_key(secret))
        assert info is not None
        s = Settings(database_url=url, spool_dir=Path(home) / "spool")
        catalog = Catalog.load(s.price_list, s.price_overrides, s.price_list_fallback or None)
        svc = await QuotaService.create(s, engine, catalog, store=MemoryStore())
        model, caller, cost = model_id(MODEL), info.caller, Decimal("0.0001")
        for _ in range(2000):  # warm-up: leases taken, slots and prices cached
            svc.settle(await svc.admit(caller, model=model, request=BODY), cost_usd=cost, tokens=99)
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for _ in range(calls):
            svc.settle(await svc.admit(caller, model=model, request=BODY), cost_usd=cost, tokens=99)
        if profiler is not None:
            profiler.disable()
        per_call = (time.perf_counter() - started) / calls * 1e6
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        await svc.aclose()
        return per_call
    finally:
        await engine.dispose()
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quota_admit", description=__doc__)
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    per_call = asyncio.run(run(args.calls, args.profile))
    print(f"{per_call:.1f} µs per admitted and settled call ({args.calls} calls)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
