"""The per-call meter: what one call did, collected as it happens.

It only collects — usage, ids, timings, how the call ended. Pricing it, settling its quota
hold, writing its ledger event and counting its metrics happen once, when the pipeline closes
the call (proxy/pipeline/call.py).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from ..caller import Caller
from ..model_ids import ModelId
from ..usage import Usage

__all__ = ["CallMeter", "request_arrived"]

# When the server handed the request to the app (perf_counter), set by ServerMiddleware: a call's
# latency and the proxy's overhead then include routing, authentication and reading the body.
request_arrived: ContextVar[float | None] = ContextVar("request_arrived", default=None)


class CallMeter:
    __slots__ = (
        "_usage",
        "_usage_md",
        "caller",
        "end_user",
        "error_class",
        "model",
        "model_version",
        "operation",
        "pre_upstream",
        "response_id",
        "retries",
        "route",
        "started",
        "streamed",
        "ttfb",
        "upstream_seconds",
    )

    def __init__(
        self,
        caller: Caller,
        *,
        route: str,
        operation: str,
        model: ModelId,
        streamed: bool = False,
        end_user: str | None = None,
    ) -> None:
        self.caller = caller
        self.route = route
        self.operation = operation
        self.model = model
        self.streamed = streamed
        self.end_user = end_user
        self.started = request_arrived.get() or time.perf_counter()
        self.ttfb: float | None = None
        self.upstream_seconds = 0.0  # time spent waiting on the upstream (see overhead)
        self.pre_upstream: float | None = None  # streams: time before the call went upstream
        self._usage: Usage | None = None
        self._usage_md: dict[str, Any] | None = None
        self.response_id: str | None = None
        self.model_version: str | None = None
        self.error_class: str | None = None
        self.retries = 0

    def first_byte(self) -> None:
        if self.ttfb is None:
            self.ttfb = time.perf_counter() - self.started

    @property
    def usage(self) -> Usage | None:
        # Parsed on demand: a stream carries usageMetadata on every event and only the last
        # one counts (counts are cumulative), so parsing each one as it passes is wasted work.
        if self._usage_md is not None:
            self._usage, self._usage_md = Usage.from_metadata(self._usage_md), None
        return self._usage

    @usage.setter
    def usage(self, value: Usage | None) -> None:
        self._usage, self._usage_md = value, None

    def observe(self, reply: dict[str, Any]) -> None:
        """Take usage and ids from a reply or stream event (the last usage seen wins)."""
        md = reply.get("usageMetadata")
        if isinstance(md, dict):
            self._usage_md = md
        rid = reply.get("responseId")
        if isinstance(rid, str):
            self.response_id = rid[:128]
        mv = reply.get("modelVersion")
        if isinstance(mv, str):
            self.model_version = mv[:128]

    def estimate(self, usage: Usage) -> None:
        """Usage for replies that carry none (embeddings); kept only if nothing better came."""
        if self.usage is None:
            self.usage = usage

    def overhead(self, elapsed: float) -> float:
        """Seconds the proxy itself spent: for a stream, the time before it went upstream;
        otherwise the whole call less the time waiting on the upstream."""
        if self.pre_upstream is not None:
            return self.pre_upstream
        return max(0.0, elapsed - self.upstream_seconds)
