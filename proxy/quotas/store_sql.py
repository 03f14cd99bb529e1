"""The quota store on SQLAlchemy: shared by every replica on one PostgreSQL (also runs on SQLite).

Each reserve or settle is one transaction that (1) creates missing counter rows, (2) locks the
counters it touches with ``SELECT ... ORDER BY key FOR UPDATE`` — a fixed order, so two calls
never deadlock — (3) releases expired holds on them, then (4) decides and writes with the rules
of :mod:`proxy.quotas.store`. While the rows are locked no other replica can read-then-write
them, so no interleaving lets two calls both take the last of a budget.

On SQLite ``FOR UPDATE`` is a no-op, but the first statement is a write, which takes SQLite's
single write lock for the whole transaction: the same serialisation, within one database file.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..db.tables import QuotaCounter, QuotaReservation
from .store import Charge, CounterState, ReserveResult, Settlement, StoreUnavailable, apply, decide

__all__ = ["SqlStore"]

_C = cast(Table, QuotaCounter.__table__)
_R = cast(Table, QuotaReservation.__table__)


class SqlStore:
    """Does not own the engine: the caller disposes of it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def reserve(
        self, rid: str, charges: Sequence[Charge], *, now: datetime, hold_until: datetime
    ) -> ReserveResult:
        try:
            async with self._engine.begin() as conn:
                found = await _lock(conn, {c.counter: c.expires_at for c in charges}, now)
                states = [found[c.counter] for c in charges]
                refused = decide(charges, states)
                if refused is not None:
                    await _write(conn, found)  # keep the sweep of expired holds
                    return ReserveResult(refused, tuple(states))
                after = [apply(c, s) for c, s in zip(charges, states, strict=True)]
                await _write(
                    conn, found | {c.counter: s for c, s in zip(charges, after, strict=True)}
                )
                holds = [
                    {
                        "id": rid,
                        "counter_key": c.counter,
                        "amount": c.amount,
                        "expires_at": hold_until,
                    }
                    for c in charges
                    if c.kind == "hold"
                ]
                if holds:
                    await conn.execute(_R.insert(), holds)
                return ReserveResult(None, tuple(after))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"quota store (SQL): {exc}") from exc

    async def settle(
        self, rid: str, settlements: Sequence[Settlement], *, now: datetime
    ) -> tuple[CounterState, ...]:
        try:
            async with self._engine.begin() as conn:
                found = await _lock(conn, {s.counter: s.expires_at for s in settlements}, now)
                released: dict[str, int] = {}
                keys = [s.counter for s in settlements if s.release]
                if keys:
                    rows = await conn.execute(
                        delete(_R)
                        .where(_R.c.id == rid, _R.c.counter_key.in_(keys))
                        .returning(_R.c.counter_key, _R.c.amount)
                    )
                    released = {k: int(a) for k, a in rows}
                out = []
                for s in settlements:
                    st = found[s.counter]
                    st = CounterState(
                        max(0, st.used + s.add), st.reserved - released.pop(s.counter, 0)
                    )
                    found[s.counter] = st
                    out.append(st)
                await _write(conn, found)
                return tuple(out)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"quota store (SQL): {exc}") from exc

    async def extend(
        self, holds: Sequence[tuple[str, Sequence[str]]], *, now: datetime, until: datetime
    ) -> None:
        rids = [rid for rid, _ in holds]
        if not rids:
            return
        try:
            async with self._engine.begin() as conn:
                await conn.execute(update(_R).where(_R.c.id.in_(rids)).values(expires_at=until))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"quota store (SQL): {exc}") from exc

    async def usage(self, counters: Sequence[str], *, now: datetime) -> tuple[CounterState, ...]:
        try:
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    select(_C.c.key, _C.c.used, _C.c.reserved).where(_C.c.key.in_(counters))
                )
                found = {k: CounterState(int(u), int(r)) for k, u, r in rows}
                expired = await conn.execute(
                    select(_R.c.counter_key, func.sum(_R.c.amount))
                    .where(_R.c.counter_key.in_(counters), _R.c.expires_at <= now)
                    .group_by(_R.c.counter_key)
                )
                stale = {k: int(a) for k, a in expired}
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"quota store (SQL): {exc}") from exc
        out = []
        for name in counters:
            st = found.get(name, CounterState())
            out.append(CounterState(st.used, st.reserved - stale.get(name, 0)))
        return tuple(out)

    async def seed(self, counter: str, used: int, *, now: datetime, expires_at: datetime) -> None:
        try:
            async with self._engine.begin() as conn:
                await _insert_missing(conn, {counter: expires_at}, used=used)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"quota store (SQL): {exc}") from exc

    async def collect(self, *, now: datetime) -> None:
        try:
            async with self._engine.begin() as conn:
                # Counters first, as reserve and settle lock them: the same order, no deadlock.
                gone = await conn.execute(
                    delete(_C).where(_C.c.expires_at <= now).returning(_C.c.key)
                )
                keys = [k for (k,) in gone]
                if keys:
                    await conn.execute(delete(_R).where(_R.c.counter_key.in_(keys)))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"quota store (SQL): {exc}") from exc

    async def aclose(self) -> None:
        return None


async def _insert_missing(
    conn: AsyncConnection, counters: dict[str, datetime], *, used: int = 0
) -> None:
    rows = [
        {"key": k, "used": used, "reserved": 0, "expires_at": counters[k]} for k in sorted(counters)
    ]
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(_C).on_conflict_do_nothing(index_elements=["key"])
    else:
        stmt = sqlite.insert(_C).on_conflict_do_nothing(index_elements=["key"])
    await conn.execute(stmt, rows)


async def _lock(
    conn: AsyncConnection, counters: dict[str, datetime], now: datetime
) -> dict[str, CounterState]:
    """Create, lock (in key order) and sweep the counters; their states as of ``now``."""
    await _insert_missing(conn, counters)
    keys = sorted(counters)
    rows = await conn.execute(
        select(_C.c.key, _C.c.used, _C.c.reserved)
        .where(_C.c.key.in_(keys))
        .order_by(_C.c.key)
        .with_for_update()
    )
    found = {k: CounterState(int(u), int(r)) for k, u, r in rows}
    # Holds of calls that never settled (a crashed replica): released under the same lock.
    swept = await conn.execute(
        delete(_R)
        .where(_R.c.counter_key.in_(keys), _R.c.expires_at <= now)
        .returning(_R.c.counter_key, _R.c.amount)
    )
    for key, amount in swept:
        st = found[key]
        found[key] = CounterState(st.used, st.reserved - int(amount))
    return found


async def _write(conn: AsyncConnection, states: dict[str, CounterState]) -> None:
    await conn.execute(
        update(_C)
        .where(_C.c.key == bindparam("k"))
        .values(used=bindparam("u"), reserved=bindparam("r")),
        [{"k": k, "u": s.used, "r": s.reserved} for k, s in sorted(states.items())],
    )
