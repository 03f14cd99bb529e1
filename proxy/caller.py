"""Who a call is for: the tenant and the key that authenticated it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: int
    tenant_name: str
    key_id: int | None  # None: the proxy itself (a background job acting for the tenant)
