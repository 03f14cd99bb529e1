"""The per-call meter: opened after authentication, closed exactly once.

Closing prices the usage observed, emits metrics and queues one ledger event — whatever ended
the call: success, an upstream error, a client that went away, or a crash in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..db.queries import KeyInfo
from ..pricing.catalog import Catalog, normalize_model
from ..pricing.cost import PricedCall, price_call
from ..pricing.review import PriceReview
from .ledger import LedgerWriter
from .ledger_event import LedgerEvent
from .usage import Usage

if TYPE_CHECKING:
    from ..quotas.service import Admission, QuotaService

__all__ = ["CallMeter", "MeterResult", "Metering", "request_arrived"]

log = logging.getLogger("gemini_meter.metering")

# When the server handed the request to the app (perf_counter), set by ServerMiddleware: a call's
# latency and the proxy's overhead then include routing, authentication and reading the body.
request_arrived: ContextVar[float | None] = ContextVar("request_arrived", default=None)

# Operations Google does not bill: their rows cost exactly zero rather than unpriced.
FREE_OPERATIONS = frozenset({"countTokens", "listModels", "getModel"})


@dataclass(slots=True)
class Metering:
    """What every meter needs, built once per app."""

    catalog: Catalog
    ledger: LedgerWriter
    quotas: QuotaService | None = None
    price_review: PriceReview = field(default_factory=PriceReview)
    _unpriced_logged: set[str] = field(default_factory=set)

    def open(
        self,
        key: KeyInfo,
        *,
        route: str,
        operation: str,
        model: str,
        streamed: bool = False,
        end_user: str | None = None,
        admission: Admission | None = None,
    ) -> CallMeter:
        return CallMeter(
            self,
            key,
            route=route,
            operation=operation,
            model=model,
            streamed=streamed,
            end_user=end_user,
            admission=admission,
        )


@dataclass(frozen=True, slots=True)
class MeterResult:
    cost_usd: Decimal | None
    usage: Usage
    overhead_ms: float = 0.0


class CallMeter:
    __slots__ = (
        "_closed",
        "_metering",
        "_usage",
        "_usage_md",
        "admission",
        "end_user",
        "error_class",
        "key",
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
        metering: Metering,
        key: KeyInfo,
        *,
        route: str,
        operation: str,
        model: str,
        streamed: bool,
        end_user: str | None,
        admission: Admission | None = None,
    ) -> None:
        self._metering = metering
        self.admission = admission
        self._closed = False
        self.key = key
        self.route = route
        self.operation = operation
        self.model = normalize_model(model)
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

    def close(self, status: int, error_class: str | None = None) -> MeterResult:
        """Price, count and queue the call. Idempotent: only the first close counts."""
        usage = self.usage or Usage()
        if self._closed:
            return MeterResult(None, usage)
        self._closed = True
        self.error_class = error_class or self.error_class
        elapsed = time.perf_counter() - self.started
        m = self._metering

        catalog_id: str | None = None
        pc: PricedCall | None = None
        if self.operation in FREE_OPERATIONS:
            cost: Decimal | None = Decimal(0)
            priced, price_list, price_version = True, None, None
        else:
            pc = price_call(m.catalog, self.model, usage, status=status, at=None)
            cost, priced = pc.cost, pc.priced
            price_list, price_version, catalog_id = pc.price_list, pc.price_version, pc.model
        # A priced call already found its catalog entry; look it up only when it did not.
        known = catalog_id is not None or m.catalog.resolve(self.model) is not None
        if self.admission is not None and m.quotas is not None:
            # Non-blocking: the real cost replaces the reservation in the background.
            m.quotas.settle(self.admission, cost_usd=cost, tokens=usage.total_tokens)

        m.ledger.submit(
            LedgerEvent(
                tenant_id=self.key.tenant_id,
                key_id=self.key.key_id,
                model=self.model,
                operation=self.operation,
                route=self.route,
                streamed=self.streamed,
                status=status,
                latency_ms=elapsed * 1e3,
                ttfb_ms=None if self.ttfb is None else self.ttfb * 1e3,
                prompt_tokens=usage.prompt_tokens,
                cached_tokens=usage.cached_tokens,
                output_tokens=usage.output_tokens,
                thinking_tokens=usage.thinking_tokens,
                tool_use_prompt_tokens=usage.tool_use_prompt_tokens,
                audio_prompt_tokens=usage.prompt_audio_tokens,
                cached_audio_tokens=usage.cached_audio_tokens,
                output_image_tokens=usage.output_image_tokens,
                output_audio_tokens=usage.output_audio_tokens,
                total_tokens=usage.total_tokens,
                estimated=usage.estimated,
                cost_usd=cost,
                priced=priced,
                price_list=price_list,
                price_version=price_version,
                response_id=self.response_id,
                model_version=self.model_version,
                error_class=self.error_class,
                end_user=self.end_user,
                retries=self.retries,
            )
        )
        overhead = (
            self.pre_upstream
            if self.pre_upstream is not None
            else max(0.0, elapsed - self.upstream_seconds)
        )
        # Metrics are bookkeeping the client need not wait for: counted on the loop's next
        # turn, after the reply now being built has gone out.
        args = (usage, status, elapsed, overhead, cost, priced, known or status == 200, pc)
        try:
            asyncio.get_running_loop().call_soon(self._count, *args)
        except RuntimeError:  # no loop (a meter closed by synchronous code): count now
            self._count(*args)
        return MeterResult(cost, usage, overhead * 1e3)

    def _count(
        self,
        usage: Usage,
        status: int,
        elapsed: float,
        overhead: float,
        cost: Decimal | None,
        priced: bool,
        model_known: bool,
        pc: PricedCall | None = None,
    ) -> None:
        metrics.PROXY_OVERHEAD.labels(self.route).observe(overhead)
        tenant = self.key.tenant_name
        # Bounded labels: a model name the client made up is not a label of its own.
        model = self.model if model_known else "other"
        metrics.REQUESTS.labels(tenant, model, self.route, f"{status // 100}xx").inc()
        metrics.REQUEST_DURATION.labels(model, self.route).observe(elapsed)
        if self.ttfb is not None:
            metrics.TIME_TO_FIRST_TOKEN.labels(model, self.route).observe(self.ttfb)
        for kind, n in (
            ("prompt", usage.prompt_tokens),
            ("cached", usage.cached_tokens),
            ("output", usage.output_tokens),
            ("thinking", usage.thinking_tokens),
            ("tool_use", usage.tool_use_prompt_tokens),
            ("audio", usage.prompt_audio_tokens),
        ):
            if n:
                metrics.TOKENS.labels(tenant, model, kind).inc(n)
        if cost:
            metrics.COST_USD.labels(tenant, model).inc(float(cost))
        if pc is not None and pc.warnings:
            self._metering.price_review.report(self.model, model, pc)
        if not priced:
            metrics.UNPRICED_CALLS.labels(model).inc()
            if self.model not in self._metering._unpriced_logged:
                self._metering._unpriced_logged.add(self.model)
                log.warning(
                    "model %r has no price in the catalog: its calls are unpriced", self.model
                )
