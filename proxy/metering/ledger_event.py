"""One ledger event: what a metered call leaves behind, one row of usage_events."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String

from ..db.tables import UsageEvent
from ..usage import TOKEN_KINDS, Usage

__all__ = [
    "END_USER_MAX_LENGTH",
    "TEXT_LIMITS",
    "LedgerEvent",
    "derived_event_id",
    "is_derived_id",
    "new_event_id",
    "safe_text",
]

# The length of every string column of usage_events: what each database takes.
TEXT_LIMITS: dict[str, int] = {
    c.name: c.type.length
    for c in UsageEvent.__table__.columns
    if isinstance(c.type, String) and c.type.length
}
END_USER_MAX_LENGTH = TEXT_LIMITS["end_user"]
# PostgreSQL refuses NUL in text; no database (nor the spool's JSON) takes a lone surrogate.
_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def new_event_id() -> str:
    # 128 random bits as 32 hex digits, like uuid4().hex at a quarter of its cost (no UUID object).
    return os.urandom(16).hex()


def derived_event_id(*parts: str | int) -> str:
    """The id of a row that may be written more than once (a batch's response i, metered again
    after a crash or by a second replica): the same parts give the same id, and the ledger
    skips an id it holds. Not hex (it starts with "r"), so never mistaken for a random one."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return "r" + digest[:31]


def is_derived_id(event_id: str) -> bool:
    return event_id.startswith("r")


@dataclass(slots=True)
class LedgerEvent:
    tenant_id: int
    key_id: int | None
    model: str
    operation: str
    route: str
    streamed: bool
    status: int
    latency_ms: float
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = None
    priced: bool = False
    price_list: str | None = None
    price_version: str | None = None
    ttfb_ms: float | None = None
    response_id: str | None = None
    model_version: str | None = None
    error_class: str | None = None
    end_user: str | None = None
    retries: int = 0
    resource: str | None = None
    detail: dict[str, Any] | None = None
    session_id: str | None = None  # a Live session's id; its rows are one per turn
    turn: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = field(default_factory=new_event_id)

    def as_row(self) -> dict[str, Any]:
        """The usage_events row: scalar fields, then one column per token kind, every string
        made safe for every database.

        Strings come from clients (validated at the edge too) and from the upstream
        (``responseId``, ``modelVersion``): one bad string must never cost a row, let alone
        its batch. A shallow dict: dataclasses.asdict deep-copies each value (Decimal,
        datetime) and cost ~20 µs of CPU per event on the proxy's only core.
        """
        row = {name: getattr(self, name) for name in _SCALARS}
        usage = self.usage
        for name in _KINDS:
            row[name] = getattr(usage, name)
        row["total_tokens"] = usage.total_tokens
        row["estimated"] = usage.estimated
        for name, limit in TEXT_LIMITS.items():
            value = row[name]
            if value is not None and (len(value) > limit or _UNSAFE.search(value)):
                row[name] = safe_text(value, limit)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LedgerEvent:
        """The inverse of :meth:`as_row` (unknown keys ignored, as a newer spool may have)."""
        usage = Usage(
            **{k: row[k] for k in _KINDS if k in row}, estimated=bool(row.get("estimated"))
        )
        return cls(usage=usage, **{k: row[k] for k in _SCALARS if k in row})


def safe_text(value: str, limit: int) -> str:
    """``value`` as every database stores it: NUL and lone surrogates replaced by U+FFFD,
    cut to ``limit`` characters."""
    return _UNSAFE.sub("\ufffd", value)[:limit]


_KINDS = tuple(kind.name for kind in TOKEN_KINDS)
_SCALARS = tuple(f.name for f in fields(LedgerEvent) if f.name != "usage")
