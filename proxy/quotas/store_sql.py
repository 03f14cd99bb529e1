"""The quota store on SQLAlchemy: shared by every replica on one PostgreSQL (also runs on SQLite).

Each sync is one transaction that (1) creates missing counter rows it may create, (2) locks the
counters it touches with ``SELECT ... ORDER BY key FOR UPDATE`` — a fixed order, so two syncs
never deadlock — (3) releases expired holds on them, then (4) decides and writes with the rules
of :func:`proxy.quotas.store.apply_sync`. While the rows are locked no other replica can
read-then-write them, so no interleaving lets two calls both take the last of a budget.

A replica syncs a handful of times a second, not once per call (docs/quotas.md, "Leases"): the
transaction's few round trips are paid per sync.

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
from .policy import utc
from .store import CounterState, Found, HoldOps, StoreUnavailable, Sync, SyncResult, apply_sync

__all__ = ["SqlStore"]

_C = cast(Table, QuotaCounter.__table__)
_R = cast(Table, QuotaReservation.__table__)


class SqlStore(HoldOps):
    """Does not own the engine: the caller disposes of it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def sync(self, sync: Sync, *, now: datetime, hold_until: datetime) -> SyncResult:
        entries = sync.entries
        try:
            async with self._engine.begin() as conn:
                made = {e.counter: e.expires_at for e in entries if e.create}
                if made:
                    await _insert_missing(conn, made)
                keys = sorted({e.counter for e in entries})
                rows = {
                    k: (int(u), int(r), utc(x), m or {})
                    for k, u, r, x, m in await conn.execute(
                        select(_C.c.key, _C.c.used, _C.c.reserved, _C.c.expires_at, _C.c.marks)
                        .where(_C.c.key.in_(keys))
                        .order_by(_C.c.key)
                        .with_for_update()
                    )
                }
                missing = tuple(i for i, e in enumerate(entries) if e.counter not in rows)
                if missing:
                    return SyncResult(missing=missing)
                swept, own = await _holds(conn, keys, sync.holder, now)
                found = [
                    Found(
                        rows[e.counter][0],
                        rows[e.counter][1] - swept.get(e.counter, 0),
                        own.get(e.counter, (0, now))[0],
                        rows[e.counter][3].get(sync.holder),
                    )
                    for e in entries
                ]
                result, after = apply_sync(sync, found)
                await conn.execute(
                    update(_C)
                    .where(_C.c.key == bindparam("k"))
                    .values(used=bindparam("u"), reserved=bindparam("r"),
                            expires_at=bindparam("x"), marks=bindparam("m")),
                    [
                        {
                            "k": e.counter, "u": s.used, "r": s.reserved,
                            "x": max(rows[e.counter][2], e.expires_at),
                            "m": rows[e.counter][3] | ({} if s.mark is None
                                                       else {sync.holder: s.mark}),
                        }
                        for e, s in zip(entries, after, strict=True)
                    ],
                )  # fmt: skip
                await _write_holds(conn, sync.holder, entries, after, own, now, hold_until)
                return result
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

    async def rebuild(
        self, counter: str, used: int, *, now: datetime, expires_at: datetime
    ) -> None:
        try:
            async with self._engine.begin() as conn:
                await _insert_missing(conn, {counter: expires_at}, used=used)
                await conn.execute(update(_C).where(_C.c.key == counter).values(used=used))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"quota store (SQL): {exc}") from exc

    async def collect(self, *, now: datetime) -> None:
        try:
            async with self._engine.begin() as conn:
                # Counters first, as syncs lock them: the same order, no deadlock.
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


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


async def _insert_missing(
    conn: AsyncConnection, counters: dict[str, datetime], *, used: int = 0
) -> None:
    rows = [
        {"key": k, "used": used, "reserved": 0, "expires_at": counters[k]} for k in sorted(counters)
    ]
    await conn.execute(_insert(conn, _C).on_conflict_do_nothing(index_elements=["key"]), rows)


async def _holds(
    conn: AsyncConnection, keys: list[str], holder: str, now: datetime
) -> tuple[dict[str, int], dict[str, tuple[int, datetime]]]:
    """The holds on the locked counters: the expired ones (a crashed replica's), released
    here, summed per counter; and the holder's own, with their expiry."""
    swept: dict[str, int] = {}
    own: dict[str, tuple[int, datetime]] = {}
    for rid, key, amount, until in await conn.execute(
        select(_R.c.id, _R.c.counter_key, _R.c.amount, _R.c.expires_at).where(
            _R.c.counter_key.in_(keys)
        )
    ):
        if utc(until) <= now:
            swept[key] = swept.get(key, 0) + int(amount)
        elif rid == holder:
            own[key] = (int(amount), utc(until))
    if swept:
        await conn.execute(delete(_R).where(_R.c.counter_key.in_(keys), _R.c.expires_at <= now))
    return swept, own


async def _write_holds(
    conn: AsyncConnection,
    holder: str,
    entries: Sequence[Any],
    after: Sequence[Found],
    own: dict[str, tuple[int, datetime]],
    now: datetime,
    hold_until: datetime,
) -> None:
    """The holder's hold on each counter: renewed (never shortened), changed, or gone. A hold
    whose amount is unchanged is rewritten only once half its life has passed."""
    gone = [e.counter for e, s in zip(entries, after, strict=True) if s.hold <= 0]
    kept = []
    for e, s in zip(entries, after, strict=True):
        old, until = own.get(e.counter, (0, now))
        if s.hold > 0 and (s.hold != old or until - now < (hold_until - now) / 2):
            kept.append({"id": holder, "counter_key": e.counter, "amount": s.hold,
                         "expires_at": max(until, hold_until)})  # fmt: skip
    if gone and any(k in own for k in gone):
        await conn.execute(delete(_R).where(_R.c.id == holder, _R.c.counter_key.in_(gone)))
    if kept:
        stmt = _insert(conn, _R)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["id", "counter_key"],
                set_={"amount": stmt.excluded.amount, "expires_at": stmt.excluded.expires_at},
            ),
            kept,
        )
