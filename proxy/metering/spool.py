"""A durable local spool for ledger events the database could not take.

Each spooled batch is one JSON-lines file, written under a temporary name, fsynced and then
renamed, so a reader never sees half a batch and a crash never leaves a torn one. Files are
replayed oldest first; event ids make the replay idempotent, so two workers replaying the same
file, or a replay interrupted by a crash, never double a row.

Rows the database refuses (see proxy/db/faults.py) are set aside in ``dead-letter/`` under the
spool directory, in the same format plus the database's reason (``dead_letter_error``): still
money, kept for an operator to repair and move back into the spool directory, which replays it
(docs/operations.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from .ledger_event import LedgerEvent

__all__ = ["DEAD_LETTER_DIR", "Spool"]

DEAD_LETTER_DIR = "dead-letter"


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)  # exact: a decimal string, never a float
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(type(obj).__name__)


def _encode(event: LedgerEvent, **extra: str) -> bytes:
    row = event.as_row() | extra
    try:
        return orjson.dumps(row, default=_default)
    except TypeError:  # an integer beyond 64 bits (a broken upstream count): still kept
        return json.dumps(row, default=_default).encode()


def _decode(line: bytes) -> LedgerEvent:
    row = orjson.loads(line)
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    if row.get("cost_usd") is not None:
        row["cost_usd"] = Decimal(row["cost_usd"])
    return LedgerEvent.from_row(row)


def _new_name() -> str:
    # Time-ordered names: replay goes oldest first.
    return f"{datetime.now().strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


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

    @property
    def dead_letter_directory(self) -> Path:
        return self.directory / DEAD_LETTER_DIR

    def append(self, events: list[LedgerEvent]) -> Path:
        """Write one batch durably. Blocking: call it in a worker thread."""
        return self._write(self.directory, _new_name(), [_encode(e) for e in events])

    def replace(self, path: Path, events: list[LedgerEvent]) -> None:
        """Make the spooled batch at ``path`` hold only ``events`` (atomically; none: delete)."""
        if not events:
            self.remove(path)
            return
        self._write(self.directory, path.stem, [_encode(e) for e in events])

    def set_aside(self, refused: list[tuple[LedgerEvent, str]]) -> Path:
        """Write rows the database refused, each with its reason, to a dead-letter file."""
        lines = [_encode(e, dead_letter_error=reason) for e, reason in refused]
        return self._write(self.dead_letter_directory, _new_name(), lines)

    def dead_letter_files(self) -> list[Path]:
        directory = self.dead_letter_directory
        return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []

    def _write(self, directory: Path, name: str, lines: list[bytes]) -> Path:
        # Under a temporary name, fsynced, then renamed: nobody ever reads half a file.
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{_new_name()}.tmp"  # names this process: see discard_partial
        final = directory / f"{name}.jsonl"
        with open(tmp, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return final

    def discard_partial(self) -> int:
        """Delete half-written batches of processes that died mid-write (never durable)."""
        removed = 0
        directories = [d for d in (self.directory, self.dead_letter_directory) if d.is_dir()]
        for tmp in (t for d in directories for t in d.glob(".*.tmp")):
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
