"""Every Prometheus collector: names, labels and help text in one place, and the /metrics body.

Labels are bounded: tenant names and normalised model ids only, never key ids, users or paths.
docs/metrics.md lists every collector (tests/test_metrics.py keeps the two in step).

One process or several. By default the collectors live in this process's memory. Under several
uvicorn workers each worker is its own process, so ``PROMETHEUS_MULTIPROC_DIR`` must name a
directory before any worker imports prometheus_client (``prepare_multiprocess_dir`` does that in
the parent): every worker then writes its values to memory-mapped files there, and whichever
worker answers a scrape adds them all up (``render``). Gauges say how: ``livesum`` adds the live
workers' values, ``livemostrecent`` keeps the latest write of any live worker.
"""

from __future__ import annotations

import os
import re
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from .procs import alive
from .usage import TOKEN_KINDS, Usage

__all__ = [
    "CONTENT_TYPE",
    "COST_USD",
    "IN_FLIGHT",
    "LEDGER_BATCHES",
    "LEDGER_DEAD_LETTERED",
    "LEDGER_QUEUE_DEPTH",
    "LEDGER_REPLAYED",
    "LEDGER_SPOOLED",
    "LEDGER_SPOOL_DEPTH",
    "LEDGER_WRITE_FAILURES",
    "MULTIPROC_ENV",
    "OPEN_STREAMS",
    "PRICE_WARNINGS",
    "PROXY_OVERHEAD",
    "QUOTA_PENDING_BATCHES",
    "QUOTA_REJECTIONS",
    "QUOTA_STORE_ERRORS",
    "QUOTA_THRESHOLD_CROSSINGS",
    "QUOTA_USE_RATIO",
    "RECONCILED",
    "REQUESTS",
    "REQUEST_DURATION",
    "TIME_TO_FIRST_TOKEN",
    "TOKENS",
    "UNMETERED",
    "UNPRICED_CALLS",
    "UPSTREAM_ERRORS",
    "UPSTREAM_RETRIES",
    "CallMetrics",
    "QuotaMetrics",
    "is_multiprocess",
    "prepare_multiprocess_dir",
    "render",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# What ``render`` writes: the classic text format, which every Prometheus version reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# A text-format `_created` series per counter child doubles the series count and Prometheus
# ignores it: leave it out.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# -- calls ------------------------------------------------------------------------------------

REQUESTS = Counter(
    "gemini_meter_requests_total",
    "Metered calls by tenant, model, route and HTTP status class.",
    ["tenant", "model", "route", "status_class"],
)
_METRIC_KINDS = tuple(kind for kind in TOKEN_KINDS if kind.metric is not None)
TOKENS = Counter(
    "gemini_meter_tokens_total",
    f"Tokens by tenant, model and kind ({', '.join(str(k.metric) for k in _METRIC_KINDS)}).",
    ["tenant", "model", "kind"],
)
COST_USD = Counter(
    "gemini_meter_cost_usd_total",
    "Cost of metered calls in USD by tenant and model.",
    ["tenant", "model"],
)
REQUEST_DURATION = Histogram(
    "gemini_meter_request_duration_seconds",
    "Time from the call's arrival to its last byte, by model and route.",
    ["model", "route"],
    buckets=_LATENCY_BUCKETS,
)
PROXY_OVERHEAD = Histogram(
    "gemini_meter_proxy_overhead_seconds",
    "Time spent in the proxy itself: a call's duration minus the time waiting on the upstream "
    "(for streams, the time before the request went upstream), by route.",
    ["route"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "gemini_meter_time_to_first_token_seconds",
    "Time from the call's arrival to the upstream's first reply bytes (for a stream, its first "
    "event, which carries the first tokens), by model and route.",
    ["model", "route"],
    buckets=_LATENCY_BUCKETS,
)

# Calls on stored resources (files, caches): their operation is a label, from this fixed set
# (anything else is "other"), so the label stays bounded whatever a route names.
RESOURCE_OPERATIONS = frozenset(
    {
        "files.upload", "files.get", "files.list", "files.delete", "files.download",
        "cachedContents.create", "cachedContents.list", "cachedContents.get",
        "cachedContents.patch", "cachedContents.delete",
    }
)  # fmt: skip
RESOURCE_CALLS = Counter(
    "gemini_meter_resource_calls_total",
    "Calls on stored resources (files, context caches) by tenant, operation and HTTP status class.",
    ["tenant", "operation", "status_class"],
)

UPSTREAM_RETRIES = Counter(
    "gemini_meter_upstream_retries_total",
    "Extra upstream attempts made before the first byte reached the client, by what was "
    "retried: connect, timeout, or the HTTP status.",
    ["status"],
)
UNPRICED_CALLS = Counter(
    "gemini_meter_unpriced_calls_total",
    "Calls whose model has no price in the catalog, by model.",
    ["model"],
)
PRICE_WARNINGS = Counter(
    "gemini_meter_price_warnings_total",
    "Calls priced from a price to review, by model, the price list that priced them and reason: "
    "preview_price_for_ga_id (a GA id priced from an entry its seed labels preview) or "
    "fallback_list (priced on the fallback list).",
    ["model", "price_list", "reason"],
)

# -- upstream and server ----------------------------------------------------------------------

UPSTREAM_ERRORS = Counter(
    "gemini_meter_upstream_errors_total",
    "Upstream attempts that got no 200: the HTTP status, or timeout / connect, by status.",
    ["status"],
)
IN_FLIGHT = Gauge(
    "gemini_meter_in_flight_requests",
    "HTTP requests being served now (probes and /metrics excluded).",
    multiprocess_mode="livesum",
)
OPEN_STREAMS = Gauge(
    "gemini_meter_open_streams",
    "Streamed replies being sent now.",
    multiprocess_mode="livesum",
)
LIVE_SESSIONS_OPEN = Gauge(
    "gemini_meter_live_sessions_open",
    "Live API (WebSocket) sessions being relayed now.",
    multiprocess_mode="livesum",
)
LIVE_SESSION_DURATION = Histogram(
    "gemini_meter_live_session_duration_seconds",
    "Live API session durations, by what ended the session (client, upstream, quota, idle, "
    "too_big, shutdown, refused, error).",
    ["reason"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)

# -- quotas -----------------------------------------------------------------------------------

QUOTA_USE_RATIO = Gauge(
    "gemini_meter_quota_use_ratio",
    "Share of a tenant's quota limit used in the current period (1 = at the limit), by tenant "
    "and limit.",
    ["tenant", "limit"],
    multiprocess_mode="livemostrecent",
)
QUOTA_THRESHOLD_CROSSINGS = Counter(
    "gemini_meter_quota_threshold_crossings_total",
    "Times a tenant's use of a limit crossed an alert threshold (a use ratio such as 0.8 or 1), "
    "by tenant, limit and threshold.",
    ["tenant", "limit", "threshold"],
)
QUOTA_REJECTIONS = Counter(
    "gemini_meter_quota_rejections_total",
    "Calls refused because a tenant's quota limit was reached, by tenant and limit.",
    ["tenant", "limit"],
)
QUOTA_STORE_ERRORS = Counter(
    "gemini_meter_quota_store_errors_total",
    "Syncs with the quota store (Redis or the database) that got no answer: unreachable, "
    "failed or timed out.",
)
QUOTA_PENDING_BATCHES = Gauge(
    "gemini_meter_quota_pending_batches",
    "Settlement batches sent to the quota store and not yet confirmed (on disk while it fails).",
    multiprocess_mode="livesum",
)

# -- ledger -----------------------------------------------------------------------------------

LEDGER_QUEUE_DEPTH = Gauge(
    "gemini_meter_ledger_queue_depth",
    "Ledger events waiting to be written.",
    multiprocess_mode="livesum",
)
LEDGER_BATCHES = Counter("gemini_meter_ledger_batches_total", "Ledger write batches committed.")
LEDGER_WRITE_FAILURES = Counter(
    "gemini_meter_ledger_write_failures_total",
    "Ledger database writes that failed (the batch was spooled or kept, and retried).",
)
LEDGER_SPOOLED = Counter(
    "gemini_meter_ledger_spooled_events_total",
    "Ledger events written to the local spool because the database could not take them.",
)
LEDGER_DEAD_LETTERED = Counter(
    "gemini_meter_ledger_dead_letter_events_total",
    "Ledger rows the database refused (bad data), set aside in the spool's dead-letter directory.",
)
LEDGER_REPLAYED = Counter(
    "gemini_meter_ledger_replayed_events_total",
    "Spooled ledger events written to the database once it answered again.",
)
# The spool directory is shared by the workers: the latest figure any of them saw is the truth.
LEDGER_SPOOL_DEPTH = Gauge(
    "gemini_meter_ledger_spool_depth",
    "Ledger events in the local spool awaiting replay to the database.",
    multiprocess_mode="livemostrecent",
)

# Batches and video operations (proxy/resources/reconciler.py). Kinds: batch, operation.
RECONCILED = Counter(
    "gemini_meter_reconciled_total",
    "Batches and video operations the reconciler looked at, by kind and outcome: metered (its "
    "rows written), pending (not done upstream yet), failed (polling or metering failed; "
    "tried again).",
    ["kind", "outcome"],
)
# Every replica counts the same table: the latest count any of them made is the truth.
UNMETERED = Gauge(
    "gemini_meter_resources_unmetered",
    "Batches and video operations made through the proxy and not metered yet, by kind.",
    ["kind"],
    multiprocess_mode="livemostrecent",
)


class _ClosedCall(Protocol):
    """What the call hook reads of proxy.pipeline.call.ClosedCall."""

    @property
    def tenant(self) -> str: ...
    @property
    def model_label(self) -> str: ...
    @property
    def route(self) -> str: ...
    @property
    def operation(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def overhead(self) -> float: ...
    @property
    def ttfb(self) -> float | None: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def cost_usd(self) -> Decimal | None: ...
    @property
    def priced(self) -> bool: ...


class CallMetrics:
    """The pipeline's hook for every closed call: requests, durations, tokens, cost."""

    def on_call(self, call: _ClosedCall) -> None:
        PROXY_OVERHEAD.labels(call.route).observe(call.overhead)
        model = call.model_label
        REQUESTS.labels(call.tenant, model, call.route, f"{call.status // 100}xx").inc()
        REQUEST_DURATION.labels(model, call.route).observe(call.elapsed)
        if call.ttfb is not None:
            TIME_TO_FIRST_TOKEN.labels(model, call.route).observe(call.ttfb)
        usage = call.usage
        for kind in _METRIC_KINDS:
            n = getattr(usage, kind.name)
            if n:
                TOKENS.labels(call.tenant, model, kind.metric).inc(n)
        # A credit (a cache deleted early, negative) cannot lower a counter: the ledger has it.
        if call.cost_usd and call.cost_usd > 0:
            COST_USD.labels(call.tenant, model).inc(float(call.cost_usd))
        if call.operation.startswith(("files.", "cachedContents.")):
            op = call.operation if call.operation in RESOURCE_OPERATIONS else "other"
            RESOURCE_CALLS.labels(call.tenant, op, f"{call.status // 100}xx").inc()
        if not call.priced:
            UNPRICED_CALLS.labels(model).inc()


class _LimitStatus(Protocol):
    """What the quota hooks read of proxy.quotas.policy.LimitStatus."""

    @property
    def tenant(self) -> str: ...
    @property
    def key_prefix(self) -> str | None: ...
    @property
    def limit(self) -> str: ...
    @property
    def ratio(self) -> float: ...


class QuotaMetrics:
    """The quota service's metric hooks: ``QuotaHooks(on_usage=m.on_usage, ...)``.

    A tenant's own limit counts under its name (``budget_usd``, ``tokens``, ``rpm``, ``tpm``). A
    limit on one of its keys counts under ``key_<name>``, never under the key: the use-ratio gauge
    then shows the tenant's most-used key, so no key id ever becomes a label.
    """

    def __init__(self) -> None:
        self._key_ratios: dict[tuple[str, str], dict[str, float]] = {}

    def on_usage(self, status: _LimitStatus) -> None:
        label = _limit_label(status)
        ratio = status.ratio
        if status.key_prefix is not None:
            keys = self._key_ratios.setdefault((status.tenant, label), {})
            keys[status.key_prefix] = ratio
            ratio = max(keys.values())
        QUOTA_USE_RATIO.labels(status.tenant, label).set(ratio)

    def on_threshold(self, status: _LimitStatus, threshold: Decimal) -> None:
        QUOTA_THRESHOLD_CROSSINGS.labels(
            status.tenant, _limit_label(status), format(threshold.normalize(), "f")
        ).inc()

    def on_refusal(self, status: _LimitStatus) -> None:
        QUOTA_REJECTIONS.labels(status.tenant, _limit_label(status)).inc()

    def on_sync(self, ok: bool, pending: int) -> None:
        if not ok:
            QUOTA_STORE_ERRORS.inc()
        QUOTA_PENDING_BATCHES.set(pending)


def _limit_label(status: _LimitStatus) -> str:
    return status.limit if status.key_prefix is None else f"key_{status.limit}"


# -- exposition -------------------------------------------------------------------------------


def is_multiprocess() -> bool:
    """Whether this process's collectors write to PROMETHEUS_MULTIPROC_DIR (fixed at import)."""
    return values.ValueClass is not values.MutexValue


def render() -> bytes:
    """The text exposition of every collector, summed over all workers in multiprocess mode.

    Blocking (it reads files in multiprocess mode): call it off the event loop.
    """
    if not is_multiprocess():
        return generate_latest(REGISTRY)
    path = os.environ[MULTIPROC_ENV]
    _forget_dead_workers(path)
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def _forget_dead_workers(path: str) -> None:
    # A worker that died (and was replaced by uvicorn) left its live gauges behind: in-flight
    # requests and queue depths that are no longer anyone's. Counters stay: their counts happened.
    own = os.getpid()
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    pids = {int(m[1]) for n in names if (m := _LIVE_GAUGE_FILE.fullmatch(n))}
    for pid in pids - {own}:
        if not alive(pid):
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def prepare_multiprocess_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Ready a metrics directory for several workers; call in the parent before they start.

    Takes ``path``, else ``$PROMETHEUS_MULTIPROC_DIR``, else a new temporary directory; creates
    it, deletes the ``*.db`` files a previous run left (their pids may be reused), and exports
    ``PROMETHEUS_MULTIPROC_DIR`` so that worker processes started afterwards inherit it. The
    calling process's own collectors are unaffected (it chose its mode when it imported them).
    """
    chosen = path or os.environ.get(MULTIPROC_ENV)
    directory = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="gemini-meter-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory
