"""Settlement batches the quota store has not confirmed, kept on disk until it does.

A batch goes to disk only when a sync of it failed (the store down or frozen): the disk stays
off the path while the store answers. Each batch is one JSON file, written under a temporary
name, fsynced, then renamed, like the ledger's spool (proxy/metering/spool.py). Its name carries
the holder (the replica that made it), that process's id and the batch number, so a replica
that starts finds the batches of dead processes and replays them in order, under their holder:
the store applies a (holder, batch) once per counter, so a replay never doubles one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from ..procs import alive
from .account import Delta

__all__ = ["Batch", "SettlementSpool"]


@dataclass(slots=True)
class Batch:
    holder: str
    seq: int
    deltas: dict[str, Delta]
    path: Path | None = None  # on disk, once a sync of it failed

    @property
    def use(self) -> int:
        return sum(d.spend for d in self.deltas.values())


def _encode(b: Batch) -> bytes:
    return orjson.dumps(
        {
            "holder": b.holder,
            "seq": b.seq,
            "deltas": [
                {
                    "counter": d.counter,
                    "kind": d.kind,
                    "limit": d.limit,
                    "expires_at": d.expires_at.isoformat(),
                    "create": d.create,
                    "spend": d.spend,
                }
                for d in b.deltas.values()
            ],
        }
    )


def _decode(data: bytes, path: Path) -> Batch:
    raw = orjson.loads(data)
    deltas = {
        d["counter"]: Delta(d["counter"], d["kind"], int(d["limit"]),
                            datetime.fromisoformat(d["expires_at"]), bool(d["create"]),
                            spend=int(d["spend"]), drop=True)
        for d in raw["deltas"]
    }  # fmt: skip
    return Batch(str(raw["holder"]), int(raw["seq"]), deltas, path)


_HOST = socket.gethostname().replace("/", "_") or "localhost"


class SettlementSpool:
    """Blocking file I/O: call it in a worker thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, batch: Batch) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{batch.holder}-{_HOST}-{os.getpid()}-{batch.seq:012d}"
        tmp = self.directory / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        final = self.directory / f"{name}.json"
        with open(tmp, "wb") as f:
            f.write(_encode(batch))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        batch.path = final
        return final

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):  # another replica replayed it first
            path.unlink()

    def orphans(self) -> list[Batch]:
        """Batches of this host's processes that are gone, oldest first per holder. Unreadable
        files are moved aside (``.bad``) and left for an operator."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                host, pid, _ = path.stem.split("-", 1)[1].rsplit("-", 2)
            except ValueError:
                continue
            # Another host's process cannot be told dead from here: its own host replays it.
            if host != _HOST or not pid.isdigit() or alive(int(pid)):
                continue
            try:
                out.append(_decode(path.read_bytes(), path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        return sorted(out, key=lambda b: (b.holder, b.seq))

    def depth(self) -> int:
        return len(list(self.directory.glob("*.json"))) if self.directory.is_dir() else 0
