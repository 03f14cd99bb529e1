"""The per-call meter: what one call did, collected as it happens.

It only collects — usage, ids, timings, how the call ended. Pricing it, settling its quota
hold, writing its ledger event and counting its metrics happen once, when the pipeline closes
the call (proxy/pipeline/call.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from ..caller import Caller
from ..model_ids import ModelId
from ..usage import Usage, sum_usage

__all__ = ["CallMeter", "request_arrived"]

# When the server handed the request to the app (perf_counter), set by ServerMiddleware: a call's
# latency and the proxy's overhead then include routing, authentication and reading the body.
request_arrived: ContextVar[float | None] = ContextVar("request_arrived", default=None)


class CallMeter:
    __slots__ = (
        "_busy_since",
        "_estimate",
        "_in_flight",
        "_parts",
        "_usage",
        "caller",
        "detail",
        "end_user",
        "error_class",
        "event_id",
        "model",
        "model_version",
        "operation",
        "pre_upstream",
        "resource",
        "response_id",
        "retries",
        "route",
        "session_id",
        "started",
        "streamed",
        "ttfb",
        "turn",
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
        self._in_flight = 0  # upstream requests being waited on (see upstream_started)
        self._busy_since = 0.0
        # Each upstream reply's usage, by reply: the raw usageMetadata (parsed on demand) or a
        # Usage the route worked out. A stream's counts are cumulative, so the last one seen
        # stands for its reply; the replies of a call add up.
        self._parts: dict[int, Mapping[str, Any] | Usage] = {}
        self._usage: Usage | None = None  # the parts' sum, once computed
        self._estimate: Usage | None = None
        self.response_id: str | None = None
        self.model_version: str | None = None
        self.error_class: str | None = None
        self.retries = 0
        # What a call on a stored resource concerns (files/x, cachedContents/x, batches/x) and
        # what it measured besides tokens (bytes and mime type of an upload, images, seconds,
        # token-hours): columns resource and detail of its ledger row.
        self.resource: str | None = None
        self.detail: dict[str, Any] | None = None
        # A row that may be recorded twice (metered again after a crash) names its own id
        # (ledger_event.derived_event_id); None: a random one.
        self.event_id: str | None = None
        # A Live session's turn: the session it belongs to and its number (1-based).
        self.session_id: str | None = None
        self.turn: int | None = None

    def first_byte(self) -> None:
        if self.ttfb is None:
            self.ttfb = time.perf_counter() - self.started

    def upstream_started(self) -> None:
        """An upstream request went out; with :meth:`upstream_ended`, the time the call spent
        waiting on the upstream, counted once however many requests overlap."""
        if self._in_flight == 0:
            self._busy_since = time.perf_counter()
        self._in_flight += 1

    def upstream_ended(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.upstream_seconds += time.perf_counter() - self._busy_since

    @property
    def usage(self) -> Usage | None:
        """The call's usage: its upstream replies' usages added up, else the estimate."""
        if not self._parts:
            return self._estimate
        if self._usage is None:
            # Parsed on demand: a stream carries usageMetadata on every event and only the
            # last one counts, so parsing each one as it passes is wasted work.
            self._usage = sum_usage(
                u if isinstance(u, Usage) else Usage.from_metadata(u) for u in self._parts.values()
            )
        return self._usage

    @property
    def billed(self) -> bool:
        """An upstream reply reported usage: Google bills the call for it, whatever status
        the call itself ends with (a later reply of the same request may have failed)."""
        return bool(self._parts)

    def observe(self, reply: Mapping[str, Any], part: int = 0) -> None:
        """Take usage and ids from a reply or stream event. ``part`` says which upstream reply
        it belongs to when a request makes several: the last usage seen of a reply wins, and
        the replies' usages add up."""
        md = reply.get("usageMetadata")
        if isinstance(md, Mapping):
            self._parts[part] = md
            self._usage = None
        rid = reply.get("responseId")
        if isinstance(rid, str):
            self.response_id = rid[:128]
        mv = reply.get("modelVersion")
        if isinstance(mv, str):
            self.model_version = mv[:128]

    def observe_usage(self, usage: Usage, part: int = 0) -> None:
        """The usage of upstream reply ``part`` when the reply carries none the meter can read
        (an embeddings batch, estimated by the route): counted like an observed one."""
        self._parts[part] = usage
        self._usage = None

    def estimate(self, usage: Usage) -> None:
        """Usage for a call whose replies carry none; used only if no reply reported any, and
        not billed on its own (a failed call costs nothing)."""
        self._estimate = usage

    def overhead(self, elapsed: float) -> float:
        """Seconds the proxy itself spent: for a stream, the time before it went upstream;
        otherwise the whole call less the time waiting on the upstream."""
        if self.pre_upstream is not None:
            return self.pre_upstream
        return max(0.0, elapsed - self.upstream_seconds)
