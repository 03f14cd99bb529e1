"""One ledger event: what a metered call leaves behind, one row of usage_events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = ["LedgerEvent", "new_event_id"]


def new_event_id() -> str:
    return uuid.uuid4().hex


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
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    tool_use_prompt_tokens: int = 0
    audio_prompt_tokens: int = 0
    cached_audio_tokens: int = 0
    output_image_tokens: int = 0
    output_audio_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False
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
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = field(default_factory=new_event_id)

    def as_row(self) -> dict[str, Any]:
        # Every field is a scalar: a shallow dict. dataclasses.asdict deep-copies each value
        # (Decimal, datetime) and cost ~20 µs of CPU per event on the proxy's only core.
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(LedgerEvent))
