"""Reading the cost a reply carried — header, ``usage.cost``, a stream's comment line — and the
ledger row's, so tests compare them as Decimals (their printed forms differ in trailing zeros)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from proxy.pipeline import COST_HEADER
from proxy.sse import SSEDecoder

_COMMENT = b": " + COST_HEADER.encode() + b": "


def row_cost(row: dict[str, Any]) -> Decimal:
    return Decimal(str(row["cost_usd"]))


def usage_cost(usage: Any) -> Decimal:
    """``usage.cost`` of an openai SDK object (an extra field the SDK keeps) or a dict."""
    assert usage is not None
    extra = usage if isinstance(usage, dict) else usage.model_extra
    return Decimal(str(extra["cost"]))


def sse_objects(raw: bytes) -> list[Any]:
    """The JSON events of an OpenAI stream (comment lines and ``[DONE]`` left out)."""
    return [orjson.loads(d) for d in SSEDecoder().feed(raw) if d != b"[DONE]"]


def stream_cost(raw: bytes) -> Decimal:
    """The cost a stream's comment line gives (exactly one, in positional notation)."""
    [line] = [line for line in raw.split(b"\n") if line.startswith(_COMMENT)]
    value = line.removeprefix(_COMMENT).decode()
    assert "E" not in value.upper()
    return Decimal(value)
