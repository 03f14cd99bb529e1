"""Period counters from the ledger: the ledger is the truth the counters follow.

A period counter (a budget's or a token quota's, for one day, week or month) that does not
exist in the store — never used, or lost: Redis flushed or restarted without persistence, the
counters table truncated, an in-process store after a restart — is created from the ledger's
totals for the period so far, the first time a sync finds it missing. Seeding only creates, so
a counter another replica made meanwhile is left as it is.

:func:`rebuild` overwrites ``used`` of the current period's counters with the ledger's totals
(``gemini-meter quotas rebuild``), keeping every hold: calls in flight and replicas' leases.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from .estimate import Estimate
from .manage import ledger_totals
from .plan import PERIOD_GRACE, counter_name, parse_counter, plan, status_of
from .policy import LimitStatus, Policy, period_end, period_label, usd_to_units
from .store import QuotaStore, StoreUnavailable
from .store_memory import MemoryStore

__all__ = ["PERIOD_LIMITS", "ledger_used", "read_status", "rebuild", "seed"]

PERIOD_LIMITS = ("budget_usd", "tokens")


async def ledger_used(engine: AsyncEngine, counter: str, now: datetime) -> int | None:
    """What the ledger holds for a period counter's tenant or key since its period began, in
    the counter's unit; None for a counter that is not a period counter."""
    cid = parse_counter(counter)
    if cid is None or cid.limit not in PERIOD_LIMITS:
        return None
    try:
        async with engine.connect() as conn:
            usd, tokens = await ledger_totals(conn, cid.tenant_id, cid.key_id, cid.start,
                                              max(now, cid.start))  # fmt: skip
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(f"ledger: {exc}") from exc
    return usd_to_units(usd) if cid.limit == "budget_usd" else tokens


async def seed(
    engine: AsyncEngine, store: QuotaStore, counter: str, expires_at: datetime, now: datetime
) -> None:
    """Create a missing period counter from the ledger (or at zero if it is no period one)."""
    used = await ledger_used(engine, counter, now)
    await store.seed(counter, used or 0, now=now, expires_at=expires_at)


async def rebuild(
    engine: AsyncEngine, store: QuotaStore, policies: Sequence[Policy], now: datetime
) -> list[tuple[str, int]]:
    """Set the current period's counters of ``policies`` to the ledger's totals; returns
    (counter, used) for each."""
    out = []
    for p in policies:
        for limit, value in (("budget_usd", p.budget_usd), ("tokens", p.tokens)):
            if value is None:
                continue
            name = counter_name(p, limit, period_label(p.period, now))  # type: ignore[arg-type]
            used = await ledger_used(engine, name, now)
            assert used is not None
            expires = period_end(p.period, now) + PERIOD_GRACE
            await store.rebuild(name, used, now=now, expires_at=expires)
            out.append((name, used))
    return out


async def read_status(
    engine: AsyncEngine, store: QuotaStore, policies: Sequence[Policy], now: datetime
) -> list[LimitStatus]:
    """Use of every limit of ``policies`` as the store holds it, read only (no service, no
    sync). The in-process store keeps its counters in the server's memory: a reader outside
    it gets them from the ledger instead (settled spend; nothing shows as held)."""
    if isinstance(store, MemoryStore):
        await rebuild(engine, store, policies, now)
    lines = plan(policies, Estimate(0, 0, 0, Decimal(0)), 0, now)
    states = await store.usage([ln.charge.counter for ln in lines], now=now)
    return [status_of(ln, st) for ln, st in zip(lines, states, strict=True)]
