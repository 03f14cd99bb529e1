"""A durable local spool for ledger events the database could not take.

Each spooled batch is one JSON-lines file, written under a temporary name, fsynced and then
renamed, so a reader never sees half a batch and a crash never leaves a torn one. Files are
replayed oldest first; event ids make the replay idempotent, so two workers replaying the same
file, or a replay interrupted by a crash, never double a row.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from .ledger_event import LedgerEvent

__all__ = ["Spool"]


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)  # exact: a decimal string, never a float
    raise TypeError(type(obj).__name__)


def _encode(event: LedgerEvent) -> bytes:
    return orjson.dumps(event.as_row(), default=_default)


def _decode(line: bytes) -> LedgerEvent:
    row = orjson.loads(line)
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    if row.get("cost_usd") is not None:
        row["cost_usd"] = Decimal(row["cost_usd"])
    return LedgerEvent.from_row(row)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def append(self, events: list[LedgerEvent]) -> Path:
        """Write one batch durably. Blocking: call it in a worker thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # Time-ordered names: replay goes oldest first.
        name = f"{datetime.now().strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = self.directory / f".{name}.tmp"
        final = self.directory / f"{name}.jsonl"
        with open(tmp, "wb") as f:
            f.write(b"\n".join(_encode(e) for e in events) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return final

    def discard_partial(self) -> int:
        """Delete half-written batches of processes that died mid-write (never durable)."""
        removed = 0
        for tmp in self.directory.glob(".*.tmp") if self.directory.is_dir() else []:
            try:
                pid = int(tmp.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not _alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    removed += 1
        return removed

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.jsonl"))

    def read(self, path: Path) -> list[LedgerEvent]:
        return [_decode(line) for line in path.read_bytes().splitlines() if line.strip()]

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):  # another worker replayed it first
            path.unlink()

    def depth(self) -> int:
        """Events waiting in the spool (counts lines; for metrics and tests)."""
        total = 0
        for path in self.files():
            with contextlib.suppress(FileNotFoundError):
                total += path.read_bytes().count(b"\n")
        return total
