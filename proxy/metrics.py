"""Every Prometheus collector: names, labels and help text in one place.

Labels are bounded: tenant names and normalised model ids only, never key ids, users or paths.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "COST_USD",
    "IN_FLIGHT",
    "LEDGER_BATCHES",
    "LEDGER_QUEUE_DEPTH",
    "LEDGER_WRITE_FAILURES",
    "OPEN_STREAMS",
    "REQUESTS",
    "REQUEST_DURATION",
    "TIME_TO_FIRST_BYTE",
    "TOKENS",
    "UNPRICED_CALLS",
    "UPSTREAM_ERRORS",
]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "gemini_meter_requests_total",
    "Metered calls by tenant, model, route and HTTP status class.",
    ["tenant", "model", "route", "status_class"],
)
TOKENS = Counter(
    "gemini_meter_tokens_total",
    "Tokens by tenant, model and kind (prompt, cached, output, thinking, tool_use, audio).",
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
TIME_TO_FIRST_BYTE = Histogram(
    "gemini_meter_time_to_first_byte_seconds",
    "Time from the call's arrival to the upstream's first reply byte, by model and route.",
    ["model", "route"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "gemini_meter_upstream_errors_total",
    "Upstream replies that were not 200, or failed connections (status 0), by status.",
    ["status"],
)
IN_FLIGHT = Gauge("gemini_meter_in_flight_requests", "Calls being served now.")
OPEN_STREAMS = Gauge("gemini_meter_open_streams", "Streaming replies open now.")
UNPRICED_CALLS = Counter(
    "gemini_meter_unpriced_calls_total",
    "Calls whose model has no price in the catalog, by model.",
    ["model"],
)
LEDGER_QUEUE_DEPTH = Gauge(
    "gemini_meter_ledger_queue_depth", "Ledger events waiting to be written."
)
LEDGER_BATCHES = Counter("gemini_meter_ledger_batches_total", "Ledger write batches committed.")
LEDGER_WRITE_FAILURES = Counter(
    "gemini_meter_ledger_write_failures_total",
    "Ledger batch writes that failed (and were retried).",
)
