"""One metered call, from admission to its single close: the spine of every metered route.

    call = await pipeline.admit(caller, route="native", operation=method, model=model,
                                request=body, streamed=streamed)     # may raise 429 / 403 / 503
    reply = await call.send("POST", path, content=body, stream=streamed)  # metered if it fails
    call.meter.observe(event)    # as replies or stream events pass
    cost = call.price_now()      # a stream's cost, for its last event (pure)
    result = call.close(status)  # once: price, settle the quota hold, ledger event, hooks

``close`` is idempotent and cheap: pricing is pure, the quota settlement and the ledger write
are queued for background tasks, and the hooks (metrics) run on the event loop's next turn,
after the reply being built has gone out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..caller import Caller
from ..errors import ProxyError
from ..metering.ledger import LedgerWriter
from ..metering.ledger_event import LedgerEvent, new_event_id
from ..metering.meter import CallMeter
from ..model_ids import ModelId
from ..pricing.catalog import Catalog
from ..pricing.cost import PricedCall, price_operation
from ..pricing.review import PriceReview
from ..quotas.estimate import Estimate
from ..quotas.service import Admission, QuotaService
from ..upstream import Body, Upstream, UpstreamResponse
from ..usage import Usage

__all__ = ["CallResult", "ClosedCall", "MeteredCall", "Pipeline"]

log = logging.getLogger("gemini_meter.metering")


@dataclass(frozen=True, slots=True)
class CallResult:
    """What a route needs once its call is closed: the cost for the reply's headers."""

    cost_usd: Decimal | None
    usage: Usage
    overhead_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ClosedCall:
    """A closed call, as the hooks (metrics) see it."""

    tenant: str
    model_label: str  # the model id, or "other" for one the catalog does not know
    route: str
    operation: str
    status: int
    elapsed: float
    overhead: float
    ttfb: float | None
    usage: Usage
    cost_usd: Decimal | None
    priced: bool


Hook = Callable[[ClosedCall], None]


@dataclass(slots=True)
class Pipeline:
    """What every metered call needs, built once per process (proxy/services.py)."""

    catalog: Catalog
    ledger: LedgerWriter
    upstream: Upstream
    quotas: QuotaService | None = None
    hooks: Sequence[Hook] = ()
    price_review: PriceReview = field(default_factory=PriceReview)
    _unpriced_logged: set[str] = field(default_factory=set)

    async def admit(
        self,
        caller: Caller,
        *,
        route: str,
        operation: str,
        model: ModelId,
        request: Mapping[str, Any],
        streamed: bool = False,
        end_user: str | None = None,
        estimate: Estimate | None = None,
        count_request: bool = True,
    ) -> MeteredCall:
        """Admit the call against its tenant's quotas (raising if refused), then open it.

        Nothing awaits between the two, so a reservation is always released by the close.
        ``estimate`` and ``count_request``: see :meth:`QuotaService.admit`."""
        admission = None
        if self.quotas is not None:
            admission = await self.quotas.admit(
                caller, model=model, request=request, operation=operation,
                estimate=estimate, count_request=count_request,
            )  # fmt: skip
        return self.open(
            caller, route=route, operation=operation, model=model, streamed=streamed,
            end_user=end_user, admission=admission,
        )  # fmt: skip

    async def admit_only(
        self,
        caller: Caller,
        *,
        model: ModelId,
        operation: str,
        estimate: Estimate,
    ) -> None:
        """Admit against the tenant's quotas without opening a call, counted as one request:
        a Live session at connect (RPM, allowed models, a budget with no room for a turn).
        Its calls (turns) are admitted one by one later; nothing stays held."""
        if self.quotas is not None:
            admission = await self.quotas.admit(
                caller, model=model, request={}, operation=operation, estimate=estimate
            )
            self.quotas.settle(admission, cost_usd=Decimal(0), tokens=0)

    def open(
        self,
        caller: Caller,
        *,
        route: str,
        operation: str,
        model: ModelId,
        streamed: bool = False,
        end_user: str | None = None,
        admission: Admission | None = None,
    ) -> MeteredCall:
        """Open a call that needs no admission (listing models) or was admitted already."""
        meter = CallMeter(
            caller, route=route, operation=operation, model=model, streamed=streamed,
            end_user=end_user,
        )  # fmt: skip
        return MeteredCall(self, meter, admission)

    def price(self, meter: CallMeter, status: int) -> PricedCall:
        """What the call costs for the usage its meter holds now; pure (no log, no metric).

        Google bills each upstream reply with a 200: a call one of whose replies reported usage
        is billed for it even if the call ends with an error (the later prompt or batch of the
        same request failed); a call with none costs $0 unless it succeeded (rule 1 of
        docs/pricing.md)."""
        usage = meter.usage or Usage()
        billed = 200 if meter.billed else status
        return price_operation(
            self.catalog, meter.operation, meter.model.name, usage, status=billed
        )

    def _record(
        self, meter: CallMeter, status: int, elapsed: float, priced: PricedCall | None
    ) -> CallResult:
        usage = meter.usage or Usage()
        model = meter.model.name
        pc = priced or self.price(meter, status)
        self.ledger.submit(_event(meter, status, elapsed, usage, pc))
        overhead = meter.overhead(elapsed)
        # A priced call found its catalog entry; look it up only when it did not.
        known = pc.model is not None or self.catalog.resolve(model) is not None
        closed = ClosedCall(
            tenant=meter.caller.tenant_name,
            # Bounded labels: a model name the client made up is not a label of its own.
            model_label=model if known or status == 200 else "other",
            route=meter.route, operation=meter.operation, status=status, elapsed=elapsed,
            overhead=overhead, ttfb=meter.ttfb, usage=usage, cost_usd=pc.cost, priced=pc.priced,
        )  # fmt: skip
        if not pc.priced and model not in self._unpriced_logged:
            self._unpriced_logged.add(model)
            log.warning("model %r has no price in the catalog: its calls are unpriced", model)
        try:
            asyncio.get_running_loop().call_soon(self._after_reply, closed, pc, model)
        except RuntimeError:  # no loop (a call closed by synchronous code): run now
            self._after_reply(closed, pc, model)
        return CallResult(pc.cost, usage, overhead * 1e3)

    def _after_reply(self, closed: ClosedCall, pc: PricedCall, model: str) -> None:
        if pc.warnings:  # a preview price for a GA id, or the fallback list (docs/pricing.md)
            self.price_review.report(model, closed.model_label, pc)
        for hook in self.hooks:
            try:
                hook(closed)
            except Exception:  # a metrics callback must never fail a call
                log.exception("call hook %r failed", hook)


def _event(
    meter: CallMeter, status: int, elapsed: float, usage: Usage, pc: PricedCall
) -> LedgerEvent:
    """The one place a ledger event is made from a call."""
    caller = meter.caller
    return LedgerEvent(
        tenant_id=caller.tenant_id,
        key_id=caller.key_id,
        model=meter.model.name,
        operation=meter.operation,
        route=meter.route,
        streamed=meter.streamed,
        status=status,
        latency_ms=elapsed * 1e3,
        ttfb_ms=None if meter.ttfb is None else meter.ttfb * 1e3,
        usage=usage,
        cost_usd=pc.cost,
        priced=pc.priced,
        price_list=pc.price_list,
        price_version=pc.price_version,
        response_id=meter.response_id,
        model_version=meter.model_version,
        error_class=meter.error_class,
        end_user=meter.end_user,
        retries=meter.retries,
        resource=meter.resource,
        detail=meter.detail,
        session_id=meter.session_id,
        turn=meter.turn,
        id=meter.event_id or new_event_id(),
    )


class MeteredCall:
    __slots__ = ("_closed", "_pipeline", "admission", "meter")

    def __init__(self, pipeline: Pipeline, meter: CallMeter, admission: Admission | None) -> None:
        self._pipeline = pipeline
        self.meter = meter
        self.admission = admission
        self._closed: CallResult | None = None

    @property
    def quota_headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers of the tenant's limits, for every reply (as OpenAI does)."""
        return dict(self.admission.headers) if self.admission is not None else {}

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        content: Body | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> UpstreamResponse:
        """Send upstream; a call that gets no reply is closed before the error propagates.

        Not streamed: the reply comes back read. Streamed: unread; the caller closes it."""
        meter = self.meter
        sent = time.perf_counter()
        meter.upstream_started()
        try:
            reply = await self._pipeline.upstream.send(
                method, path, params=params, content=content, headers=headers, stream=stream
            )
        except BaseException as exc:
            meter.upstream_ended()
            if isinstance(exc, ProxyError):
                self.close(exc.status_code, error_class=type(exc).__name__)
            raise
        meter.upstream_ended()
        meter.retries += reply.retries
        if stream:
            # The rest of a stream's time is the upstream generating: overhead is what came
            # before it first went upstream.
            if meter.pre_upstream is None:
                meter.pre_upstream = sent - meter.started
        else:
            meter.first_byte()
        return reply.response

    def price_now(self) -> Decimal | None:
        """The call's cost for the usage seen so far, priced as :meth:`close` will price it if
        nothing more comes: for a stream's last event, before its last bytes go out. Pure: no
        settlement, no ledger event, no price warning. None when the model has no price."""
        if self._closed is not None:
            return self._closed.cost_usd
        return self._pipeline.price(self.meter, 200).cost

    def close(
        self, status: int, error_class: str | None = None, *, priced: PricedCall | None = None
    ) -> CallResult:
        """Price, settle, record and count the call. Idempotent: only the first close counts.

        ``priced``: the call's price worked out by the route from what it measured besides
        tokens (images, seconds of video, token-hours of cache storage), with a pure function
        of ``proxy.pricing``; else the meter's usage is priced."""
        if self._closed is not None:
            return self._closed
        meter = self.meter
        meter.error_class = error_class or meter.error_class
        elapsed = time.perf_counter() - meter.started
        result = self._pipeline._record(meter, status, elapsed, priced)
        self._closed = result
        quotas = self._pipeline.quotas
        if self.admission is not None and quotas is not None:
            # Non-blocking: the real cost replaces the reservation in the background.
            quotas.settle(
                self.admission, cost_usd=result.cost_usd, tokens=result.usage.total_tokens
            )
        return result
