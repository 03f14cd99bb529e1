"""Whose fault a failed database write is: the rows' (refused data) or the database's (outage).

The ledger writer isolates rows the database refuses and retries, later, writes that failed
because the database did not answer. Telling the two apart:

- **the rows' fault**: the database answered and said no to the data — SQLSTATE class 22 (data
  exception: too long, NUL byte, out of range) or 23 (integrity: a duplicate id), or the driver
  could not even encode a value (an int beyond 64 bits, a lone surrogate);
- **anything else is the database's fault** and is retried: no answer (refused, reset, timed
  out), a server shutting down or out of resources (classes 08, 53, 57, 58), a serialization
  failure or deadlock (40), a lock (55), a missing table or privilege (42: a deployment error
  that a fixed database then takes). Unknown errors count as outages: they are retried, never
  thrown away — and the writer makes sure one such file cannot hold up the others.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

__all__ = ["rows_refused"]

_REFUSED_CLASSES = frozenset({"22", "23"})
# Raised by the drivers while encoding a row's values (before anything was sent), and
# SQLite's own refusals.
_REFUSED_ERRORS = (UnicodeError, OverflowError, sqlite3.IntegrityError, sqlite3.DataError)


def rows_refused(exc: BaseException) -> bool:
    """True when ``exc`` says the database refused the data written, not that it failed."""
    for err in _chain(exc):
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return False
        sqlstate = getattr(err, "sqlstate", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            return sqlstate[:2] in _REFUSED_CLASSES
        if isinstance(err, _REFUSED_ERRORS):
            return True
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver error SQLAlchemy wrapped, and their causes (no cycles)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop(0)
        if err is None or any(err is s for s in seen):
            continue
        seen.append(err)
        todo += [getattr(err, "orig", None), err.__cause__]
    return seen
