"""/metrics: what each call counts, bounded labels, promtool-clean exposition, the in-flight and
stream gauges, docs/metrics.md in step with proxy/metrics.py, and several uvicorn workers adding
up through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from proxy import metrics
from proxy.app import create_app
from proxy.quotas.policy import LimitStatus
from tests.conftest import UPSTREAM_KEY, RunningProxy, make_tenant_key, proxy_settings, run_sync
from tests.fakes.gemini import ErrorReply, FakeGemini, Hang, StreamReply, stream_events
from tests.fakes.server import serve

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "metrics.md"
MODEL = "gemini-2.5-flash"
BODY = {"contents": [{"parts": [{"text": "hi"}]}]}
# Every label a collector may carry: tenant names, normalised model ids and small fixed sets.
ALLOWED_LABELS = {
    "tenant",
    "model",
    "route",
    "status_class",
    "kind",
    "status",
    "limit",
    "threshold",
    "price_list",
    "reason",
    "outcome",
    "operation",  # of calls on stored resources: a fixed set (metrics.RESOURCE_OPERATIONS)
}


def collectors() -> dict[str, MetricWrapperBase]:
    """Every collector of proxy/metrics.py by exposed name (counters with their _total)."""
    found: dict[str, MetricWrapperBase] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if value._type == "counter" else "")
            found[name] = value
    return found


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def generate(
    client: httpx.Client, url: str, key: str, model: str = MODEL, *, stream: bool = False
) -> httpx.Response:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return client.post(
        f"{url}/v1beta/models/{model}:{method}", json=BODY, headers={"x-goog-api-key": key}
    )


# -- the collectors and their documentation -------------------------------------------------


def documented() -> dict[str, tuple[str, set[str]]]:
    """docs/metrics.md's table: name -> (type, labels)."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in DOCS.read_text().splitlines():
        m = re.match(r"\|\s*`(gemini_meter_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if m:
            rows[m[1]] = (m[2], set(re.findall(r"`(\w+)`", m[3])))
    return rows


def test_every_collector_is_documented_with_its_type_and_labels() -> None:
    docs = documented()
    found = collectors()
    assert set(docs) == set(found), "docs/metrics.md and proxy/metrics.py list different metrics"
    for name, collector in found.items():
        kind, labels = docs[name]
        assert kind == collector._type, name
        assert labels == set(collector._labelnames), name


def test_labels_are_bounded() -> None:
    for name, collector in collectors().items():
        assert set(collector._labelnames) <= ALLOWED_LABELS, name
        assert name.startswith("gemini_meter_"), name


def test_gauges_declare_how_workers_add_up() -> None:
    modes = {
        name: c._multiprocess_mode  # type: ignore[attr-defined]
        for name, c in collectors().items()
        if c._type == "gauge"
    }
    assert modes == {
        "gemini_meter_in_flight_requests": "livesum",
        "gemini_meter_open_streams": "livesum",
        "gemini_meter_live_sessions_open": "livesum",
        "gemini_meter_ledger_queue_depth": "livesum",
        "gemini_meter_quota_pending_batches": "livesum",
        "gemini_meter_quota_use_ratio": "livemostrecent",
        "gemini_meter_ledger_spool_depth": "livemostrecent",
        "gemini_meter_resources_unmetered": "livemostrecent",
    }


# -- what calls count ----------------------------------------------------------------------


def test_calls_are_counted_by_tenant_model_route_and_status(
    proxy: RunningProxy, fake: FakeGemini
) -> None:
    t = proxy.tenant
    req = "gemini_meter_requests_total"
    labels = {"tenant": t, "model": MODEL, "route": "native"}
    before = {
        "ok": sample(req, **labels, status_class="2xx"),
        "4xx": sample(req, **labels, status_class="4xx"),
        "prompt": sample("gemini_meter_tokens_total", tenant=t, model=MODEL, kind="prompt"),
        "output": sample("gemini_meter_tokens_total", tenant=t, model=MODEL, kind="output"),
        "thinking": sample("gemini_meter_tokens_total", tenant=t, model=MODEL, kind="thinking"),
        "cost": sample("gemini_meter_cost_usd_total", tenant=t, model=MODEL),
        "duration": sample(
            "gemini_meter_request_duration_seconds_count", model=MODEL, route="native"
        ),
        "ttft": sample(
            "gemini_meter_time_to_first_token_seconds_count", model=MODEL, route="native"
        ),
        "upstream400": sample("gemini_meter_upstream_errors_total", status="400"),
        "unpriced": sample("gemini_meter_unpriced_calls_total", model="gemini-0-unreleased"),
        "batches": sample("gemini_meter_ledger_batches_total"),
    }
    with httpx.Client(timeout=10) as client:
        assert generate(client, proxy.url, proxy.key).status_code == 200
        assert generate(client, proxy.url, proxy.key).status_code == 200
        assert generate(client, proxy.url, proxy.key, stream=True).status_code == 200
        fake.enqueue(ErrorReply(400), action="generateContent")
        assert generate(client, proxy.url, proxy.key).status_code == 400
        # A model the catalog does not know, answered by the upstream: counted, but unpriced.
        assert generate(client, proxy.url, proxy.key, "gemini-0-unreleased").status_code == 200

    def delta(key: str, now: float) -> float:
        return now - before[key]

    wait_for(
        lambda: delta("ok", sample(req, **labels, status_class="2xx")) == 3, what="3 counted calls"
    )
    assert delta("4xx", sample(req, **labels, status_class="4xx")) == 1
    assert delta("upstream400", sample("gemini_meter_upstream_errors_total", status="400")) == 1
    assert (
        delta("unpriced", sample("gemini_meter_unpriced_calls_total", model="gemini-0-unreleased"))
        == 1
    )
    duration = sample("gemini_meter_request_duration_seconds_count", model=MODEL, route="native")
    assert delta("duration", duration) == 4
    ttft = sample("gemini_meter_time_to_first_token_seconds_count", model=MODEL, route="native")
    assert delta("ttft", ttft) >= 1

    # Tokens and cost agree with the ledger rows of the same calls.
    rows = [r for r in proxy.rows(5) if r["model"] == MODEL and r["status"] == 200]
    assert len(rows) == 3
    for kind, column in (
        ("prompt", "prompt_tokens"),
        ("output", "output_tokens"),
        ("thinking", "thinking_tokens"),
    ):
        now = sample("gemini_meter_tokens_total", tenant=t, model=MODEL, kind=kind)
        assert delta(kind, now) == sum(r[column] for r in rows) > 0, kind
    cost = delta("cost", sample("gemini_meter_cost_usd_total", tenant=t, model=MODEL))
    assert cost == pytest.approx(float(sum(r["cost_usd"] for r in rows))) and cost > 0
    wait_for(lambda: delta("batches", sample("gemini_meter_ledger_batches_total")) >= 1)
    assert sample("gemini_meter_ledger_queue_depth") >= 0


def test_a_made_up_model_id_is_not_a_label(proxy: RunningProxy, fake: FakeGemini) -> None:
    """A client can send any model id; one the upstream refused is counted as model="other"."""
    req = "gemini_meter_requests_total"
    labels = {"tenant": proxy.tenant, "route": "native", "status_class": "4xx"}
    before = sample(req, model="other", **labels)
    fake.enqueue(ErrorReply(404), action="generateContent")
    with httpx.Client(timeout=10) as client:
        assert generate(client, proxy.url, proxy.key, "made-up-model-x1").status_code == 404
    # Counted on the loop's turn after the reply went out (bookkeeping off the critical path).
    wait_for(lambda: sample(req, model="other", **labels) == before + 1)
    assert sample(req, model="made-up-model-x1", **labels) == 0


def test_exposition_passes_promtool_and_holds_no_secret(
    proxy: RunningProxy, fake: FakeGemini
) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus"
    with httpx.Client(timeout=10) as client:
        assert generate(client, proxy.url, proxy.key).status_code == 200
        assert generate(client, proxy.url, proxy.key, stream=True).status_code == 200
        fake.enqueue(ErrorReply(503), ErrorReply(503), ErrorReply(503))
        assert generate(client, proxy.url, proxy.key).status_code == 503
        wait_for(
            lambda: 'status_class="5xx"' in client.get(f"{proxy.url}/metrics").text,
            what="the 503 to be counted",
        )
        reply = client.get(f"{proxy.url}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.text
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr

    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, collector in collectors().items():
        assert collector._name in families, name  # the parser drops counters' _total
    for family in families.values():
        if not family.name.startswith("gemini_meter_"):
            continue
        for s in family.samples:
            assert set(s.labels) - {"le"} <= ALLOWED_LABELS, s
    for secret in (proxy.key, UPSTREAM_KEY, proxy.key[:11]):
        assert secret not in text
    assert "_created" not in text  # no per-child creation series doubling the count


# -- quota hooks ---------------------------------------------------------------------------


def limit_status(tenant: str, limit: str, used: str, key: str | None = None) -> LimitStatus:
    return LimitStatus(
        tenant=tenant,
        key_prefix=key,
        limit=limit,  # type: ignore[arg-type]
        mode="hard",
        period="month",
        limit_value=Decimal(10),
        used=Decimal(used),
        reserved=Decimal(0),
        resets_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def test_quota_hooks_label_tenants_and_limits_never_keys() -> None:
    hooks = metrics.QuotaMetrics()
    t = f"quota-{uuid.uuid4().hex[:6]}"
    ratio = "gemini_meter_quota_use_ratio"
    hooks.on_usage(limit_status(t, "budget_usd", "4"))
    assert sample(ratio, tenant=t, limit="budget_usd") == 0.4
    # Limits on keys: one series per tenant and limit, showing the most-used key.
    hooks.on_usage(limit_status(t, "tokens", "9", key="gm-AAAAAAAA"))
    hooks.on_usage(limit_status(t, "tokens", "2", key="gm-BBBBBBBB"))
    assert sample(ratio, tenant=t, limit="key_tokens") == 0.9
    hooks.on_usage(limit_status(t, "tokens", "1", key="gm-AAAAAAAA"))
    assert sample(ratio, tenant=t, limit="key_tokens") == 0.2
    hooks.on_threshold(limit_status(t, "budget_usd", "8"), Decimal("0.8"))
    hooks.on_threshold(limit_status(t, "budget_usd", "10"), Decimal("1"))
    hooks.on_refusal(limit_status(t, "budget_usd", "10"))
    hooks.on_refusal(limit_status(t, "tokens", "10", key="gm-AAAAAAAA"))
    crossings = "gemini_meter_quota_threshold_crossings_total"
    assert sample(crossings, tenant=t, limit="budget_usd", threshold="0.8") == 1
    assert sample(crossings, tenant=t, limit="budget_usd", threshold="1") == 1
    rejections = "gemini_meter_quota_rejections_total"
    assert sample(rejections, tenant=t, limit="budget_usd") == 1
    assert sample(rejections, tenant=t, limit="key_tokens") == 1
    assert "gm-" not in metrics.render().decode()


# -- in-flight requests and open streams -----------------------------------------------------


@pytest.fixture
def tracked_proxy(
    fake_server: tuple[FakeGemini, str], fake: FakeGemini, sqlite_url: str
) -> Iterator[RunningProxy]:
    settings = proxy_settings(sqlite_url, fake_server[1])
    key = run_sync(lambda: make_tenant_key(sqlite_url, "team-a"))
    with serve(create_app(settings)) as url:
        yield RunningProxy(url=url, key=key, tenant="team-a", settings=settings, fake=fake)


def gauges() -> tuple[float, float]:
    return sample("gemini_meter_in_flight_requests"), sample("gemini_meter_open_streams")


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "json-array"])
def test_in_flight_and_open_streams_follow_a_held_stream(
    tracked_proxy: RunningProxy, fake: FakeGemini, sse: bool
) -> None:
    p = tracked_proxy
    base_in_flight, base_streams = gauges()
    fake.enqueue(StreamReply(stream_events(["one ", "two ", "three"]), hold_after=1))
    suffix = "?alt=sse" if sse else ""
    result: dict[str, Any] = {}

    def call() -> None:
        with httpx.Client(timeout=10) as client:
            r = client.post(
                f"{p.url}/v1beta/models/{MODEL}:streamGenerateContent{suffix}",
                json=BODY,
                headers={"x-goog-api-key": p.key},
            )
            result["status"], result["body"] = r.status_code, r.text

    caller = threading.Thread(target=call)
    caller.start()
    try:
        wait_for(lambda: gauges() == (base_in_flight + 1, base_streams + 1), what="open stream")
        # Scrapes and probes are not calls.
        with httpx.Client(timeout=5) as client:
            client.get(f"{p.url}/metrics")
            client.get(f"{p.url}/healthz")
        assert gauges() == (base_in_flight + 1, base_streams + 1)
    finally:
        fake.release()
        caller.join(10)
    assert result["status"] == 200 and "three" in result["body"]
    wait_for(lambda: gauges() == (base_in_flight, base_streams), what="gauges back at rest")


def test_a_plain_call_is_in_flight_but_not_a_stream(
    tracked_proxy: RunningProxy, fake: FakeGemini
) -> None:
    p = tracked_proxy
    base_in_flight, base_streams = gauges()
    fake.enqueue(Hang(seconds=0.6))  # then the default reply
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(timeout=10) as client:
            statuses.append(generate(client, p.url, p.key).status_code)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        wait_for(lambda: gauges()[0] == base_in_flight + 1, what="the call in flight")
        assert gauges()[1] == base_streams
    finally:
        caller.join(10)
    assert statuses == [200]
    wait_for(lambda: gauges() == (base_in_flight, base_streams), what="gauges back at rest")


# -- several workers -----------------------------------------------------------------------


def test_prepare_multiprocess_dir_empties_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path / "unused"))  # restored afterwards
    target = tmp_path / "metrics"
    target.mkdir()
    (target / "counter_123.db").write_bytes(b"stale")
    (target / "keep.txt").write_text("not ours")
    assert metrics.prepare_multiprocess_dir(target) == target
    assert os.environ[metrics.MULTIPROC_ENV] == str(target)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    # Without a path: the environment's, else a new temporary directory.
    assert metrics.prepare_multiprocess_dir() == target
    monkeypatch.delenv(metrics.MULTIPROC_ENV)
    fresh = metrics.prepare_multiprocess_dir()
    try:
        assert fresh.is_dir() and os.environ[metrics.MULTIPROC_ENV] == str(fresh)
    finally:
        shutil.rmtree(fresh)


def test_this_process_is_single_process() -> None:
    assert not metrics.is_multiprocess()
    assert b"gemini_meter_requests_total" in metrics.render()


def test_a_dead_workers_live_gauges_are_dropped(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    own = os.getpid()
    for name in (
        f"gauge_livesum_{gone.pid}.db",
        f"gauge_livemostrecent_{gone.pid}.db",
        f"counter_{gone.pid}.db",
        f"gauge_livesum_{own}.db",
    ):
        (tmp_path / name).write_bytes(b"")
    metrics._forget_dead_workers(str(tmp_path))
    # Its counts happened and stay; its in-flight requests and queue are nobody's now.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{gone.pid}.db", f"gauge_livesum_{own}.db"]
    )


# The workers' app factory: a module of its own, so they import the proxy and nothing else.
FACTORY = """
from proxy.app import create_app
from proxy.quotas.policy import LimitStatus
from proxy.settings import Settings


def app():
    return create_app(Settings())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids(directory: Path, prefix: str) -> set[int]:
    pattern = re.compile(prefix + r"_(\d+)\.db")
    return {int(m[1]) for p in directory.iterdir() if (m := pattern.fullmatch(p.name))}


def _served_by(directory: Path, tenant: str) -> set[int]:
    """The workers whose own counter file holds calls of ``tenant``."""
    pids = set()
    for pid in _pids(directory, "counter"):
        files = [str(directory / f"counter_{pid}.db")]
        for family in MultiProcessCollector.merge(files):  # type: ignore[no-untyped-call]
            if family.name == "gemini_meter_requests" and any(
                s.labels.get("tenant") == tenant and s.value for s in family.samples
            ):
                pids.add(pid)
    return pids


def _scrape_total(url: str, tenant: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5, headers={"connection": "close"}).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "gemini_meter_requests":
            total += sum(s.value for s in family.samples if s.labels.get("tenant") == tenant)
    return total


def test_two_workers_add_up_in_multiprocess_mode(
    fake_server: tuple[FakeGemini, str], fake: FakeGemini, sqlite_url: str, tmp_path: Path
) -> None:
    tenant = "team-multi"
    key = run_sync(lambda: make_tenant_key(sqlite_url, tenant))
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left by a previous run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    env |= {
        metrics.MULTIPROC_ENV: str(directory),
        "GEMINI_METER_DATABASE_URL": sqlite_url,
        "GEMINI_METER_UPSTREAM_URL": fake_server[1],
        "GEMINI_API_KEY": UPSTREAM_KEY,
        "GEMINI_METER_LEDGER_FLUSH_INTERVAL": "0.02",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    (tmp_path / "multiproc_app.py").write_text(FACTORY)
    # What `serve --workers N` does before starting the workers.
    subprocess.run(
        [sys.executable, "-c", "from proxy.metrics import prepare_multiprocess_dir as p; p()"],
        env=env,
        check=True,
        timeout=30,
    )
    assert not list(directory.iterdir())
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "multiproc_app:app",
            "--workers",
            "2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(lambda: len(_pids(directory, "gauge_livesum")) == 2, 30, "two workers")
        workers = _pids(directory, "gauge_livesum")
        assert server.pid not in workers
        wait_for(lambda: _healthy(url), 30, "the server to answer")
        # Fresh connections until both workers have served calls (the kernel picks).
        sent = 0
        while len(_served_by(directory, tenant)) < 2 and sent < 200:
            with httpx.Client(timeout=10, headers={"connection": "close"}) as client:
                assert generate(client, url, key).status_code == 200
            sent += 1
        assert _served_by(directory, tenant) == workers, "one worker served every call"
        # Whichever worker answers the scrape reports the sum of both.
        for _ in range(6):
            assert _scrape_total(url, tenant) == sent
        exposition = httpx.get(f"{url}/metrics").text
        in_flight = [
            s.value
            for f in text_string_to_metric_families(exposition)
            if f.name == "gemini_meter_in_flight_requests"
            for s in f.samples
        ]
        assert in_flight == [0.0]
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: apt-get install prometheus"
        check = subprocess.run(
            [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr

    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
