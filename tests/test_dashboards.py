"""The Grafana dashboards: well-formed, provisioned, covering what the issue asks for, and — the
point — every panel's query proven against a real Prometheus scraping a running proxy that real
traffic went through. A panel over a metric that does not exist, or a query Prometheus rejects,
fails here rather than showing "No data" to a user."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from proxy import metrics
from proxy.quotas.policy import LimitStatus
from tests.conftest import RunningProxy
from tests.fakes.gemini import ErrorReply, FakeGemini

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
BODY = {"contents": [{"parts": [{"text": "hi"}]}]}

# Grafana's own variables, with values a dashboard would get over the last hour.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# Our variables at "All" (allValue), plus the data source one, which never appears in a query.
ALL = {"tenant": ".*", "model": ".*"}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included; rows themselves are not panels."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def all_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (f"{path.name}: {panel['title']} [{target['refId']}]", panel, target)
        for path in DASHBOARDS
        for panel in panels(load(path))
        for target in panel["targets"]
    ]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def substitute(expr: str) -> str:
    """A panel's query as Grafana sends it with every variable at "All"."""

    def value(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        if name in BUILTINS:
            return BUILTINS[name]
        if name in ALL:
            return ALL[name]
        raise AssertionError(f"unknown variable ${name} in {expr!r}")

    return _VAR.sub(value, expr)


def _quantile_of(histogram: str, q: str, _panel: dict[str, Any], expr: str) -> bool:
    return f"histogram_quantile({q}," in expr and histogram in expr


def exposed_names() -> set[str]:
    names: set[str] = set()
    for c in vars(metrics).values():
        if isinstance(c, MetricWrapperBase):
            base = c._name
            names |= {
                "counter": {f"{base}_total"},
                "gauge": {base},
                "histogram": {f"{base}_bucket", f"{base}_sum", f"{base}_count"},
            }[str(c._type)]
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bgemini_meter_[a-z0-9_]+", expr))


# -- the dashboard files -------------------------------------------------------------------


def test_dashboards_are_there_and_distinct() -> None:
    assert [p.name for p in DASHBOARDS] == ["gemini-meter-health.json", "gemini-meter-spend.json"]
    uids = [load(p)["uid"] for p in DASHBOARDS]
    titles = [load(p)["title"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_layout_is_sound(path: Path) -> None:
    d = load(path)
    assert d["schemaVersion"] >= 36 and d["refresh"] and d["time"]["from"].startswith("now-")
    ids = [p["id"] for p in d["panels"]] + [
        q["id"] for p in d["panels"] for q in p.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    taken: dict[tuple[int, int], str] = {}
    for panel in d["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_query_the_selected_prometheus(path: Path) -> None:
    d = load(path)
    ds = variables(d)["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for panel in panels(d):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["title"] and panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == panel["datasource"] and t["expr"].strip(), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_tenant_and_model_variables(path: Path) -> None:
    d = load(path)
    found = variables(d)
    for name in ("tenant", "model"):
        v = found[name]
        assert v["type"] == "query" and v["multi"] and v["includeAll"], name
        assert v["allValue"] == ".*" and v["query"].startswith("label_values("), name
    # Every variable a query uses is defined, or Grafana's own.
    used = {m[1] or m[2] for _, _, t in all_targets() for m in _VAR.finditer(t["expr"])}
    assert used <= set(found) | set(BUILTINS)


def test_every_metric_a_dashboard_names_exists() -> None:
    exposed = exposed_names()
    queries = [t["expr"] for _, _, t in all_targets()]
    queries += [v["query"] for p in DASHBOARDS for v in variables(load(p)).values()]
    named = set().union(*(metric_names(q) for q in queries))
    assert named and named <= exposed, named - exposed


def test_the_panels_the_issue_asks_for() -> None:
    everything = [(panel, t["expr"]) for _, panel, t in all_targets()]

    def some(pred: Callable[[dict[str, Any], str], bool]) -> bool:
        return any(pred(p, e) for p, e in everything)

    cost = "gemini_meter_cost_usd_total"
    assert some(lambda p, e: cost in e and "by (tenant)" in e and "rate(" in e)  # over time
    assert some(lambda p, e: cost in e and p.get("timeFrom") == "now/M")  # month to date
    assert some(lambda p, e: cost in e and e.startswith("topk("))  # top spenders
    assert some(lambda p, e: "gemini_meter_tokens_total" in e and "by (model, kind)" in e)
    assert some(lambda p, e: "gemini_meter_requests_total" in e and "rate(" in e)
    assert some(lambda p, e: 'status_class!="2xx"' in e)  # error rate
    for histogram in ("request_duration_seconds", "time_to_first_token_seconds"):
        for q in ("0.5", "0.95", "0.99"):
            assert some(partial(_quantile_of, histogram, q))
    assert some(lambda p, e: "gemini_meter_quota_use_ratio" in e and "tenant" in e)
    assert some(lambda p, e: "gemini_meter_unpriced_calls_total" in e)
    assert some(lambda p, e: "gemini_meter_upstream_errors_total" in e)
    assert some(lambda p, e: "gemini_meter_in_flight_requests" in e)
    assert some(lambda p, e: "gemini_meter_open_streams" in e)
    # Every collector appears on some dashboard.
    named = set().union(*(metric_names(e) for _, e in everything))
    for c in vars(metrics).values():
        if isinstance(c, MetricWrapperBase):
            assert any(n.startswith(c._name) for n in named), c._name


def test_provisioning() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [ds] = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"] and ds["access"] == "proxy"
    assert ds["url"] == "http://prometheus:9090"
    scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["global"]
    assert ds["jsonData"]["timeInterval"] == scrape["scrape_interval"]  # for $__rate_interval
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/gemini-meter.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


# -- every query against a real Prometheus -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prometheus_scraping(target: str, tmp_path: Path) -> Iterator[str]:
    """The Debian prometheus binary on a loopback port, scraping ``target``/metrics every 1 s."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: apt-get install prometheus"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "gemini-meter",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [urlsplit(target).netloc]}],
                    }
                ],
            }
        )
    )
    url = f"http://127.0.0.1:{_free_port()}"
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            "--storage.tsdb.retention.time=1h",
            f"--web.listen-address={urlsplit(url).netloc}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    f"prometheus did not start:\n{(tmp_path / 'prometheus.log').read_text()}"
                )
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def query(client: httpx.Client, prom: str, promql: str) -> list[dict[str, Any]]:
    body = client.get(f"{prom}/api/v1/query", params={"query": promql}).json()
    if body.get("status") != "success":
        raise AssertionError(f"{promql!r}: {body.get('errorType')}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for_value(
    client: httpx.Client, prom: str, promql: str, expected: float, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = query(client, prom, promql)
        if seen and float(seen[0]["value"][1]) == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"{promql} never reached {expected}: {seen}")


def test_every_panel_query_returns_series_from_real_traffic(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str, fake: FakeGemini, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    tenant_a, tenant_b = f"dash-a-{run}", f"dash-b-{run}"
    proxy = start_proxy(sqlite_url, tenant=tenant_a)
    keys = {tenant_a: proxy.key, tenant_b: proxy.new_key(tenant_b)}

    def traffic(round_no: int) -> None:
        with httpx.Client(timeout=10) as client:
            # Tenant B is at its RPM limit after round 1 (below): round 2 is tenant A's.
            for key in keys.values() if round_no == 1 else [keys[tenant_a]]:
                for method in ("generateContent", "streamGenerateContent?alt=sse"):
                    r = client.post(
                        f"{proxy.url}/v1beta/models/gemini-2.5-flash:{method}",
                        json=BODY,
                        headers={"x-goog-api-key": key},
                    )
                    assert r.status_code == 200, r.text
            a = {"x-goog-api-key": keys[tenant_a]}
            fake.enqueue(ErrorReply(400), action="generateContent")
            r = client.post(
                f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent", json=BODY, headers=a
            )
            assert r.status_code == 400
            # One 503 the proxy retries: the retry panels need one.
            fake.enqueue(ErrorReply(503), action="generateContent")
            r = client.post(
                f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent", json=BODY, headers=a
            )
            assert r.status_code == 200
            # A model with no price: the unpriced panels need one.
            r = client.post(
                f"{proxy.url}/v1beta/models/gemini-0-unreleased:generateContent",
                json=BODY,
                headers=a,
            )
            assert r.status_code == 200
            # A call on stored resources (an empty file list): the resource panel needs one.
            r = client.get(f"{proxy.url}/v1beta/files", headers=a)
            assert r.status_code == 200, r.text
        if round_no > 1:
            return
        # The quota panels from real quota traffic: tenant B gets an RPM limit of 4 and calls
        # until it is refused (use ratio, rejections) ...
        admin_token = proxy.settings.admin_token
        assert admin_token is not None
        with httpx.Client(timeout=10) as client:
            r = client.put(
                f"{proxy.url}/admin/tenants/{tenant_b}/quota",
                json={"rpm": 4, "mode": "hard"},
                headers={"authorization": f"Bearer {admin_token.get_secret_value()}"},
            )
            assert r.status_code == 200, r.text
            b = {"x-goog-api-key": keys[tenant_b]}
            for _ in range(12):  # 4 calls a minute, and a minute may turn meanwhile
                r = client.post(
                    f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent",
                    json=BODY,
                    headers=b,
                )
                if r.status_code == 429:
                    break
                assert r.status_code == 200, r.text
            assert r.status_code == 429, "the RPM limit never refused a call"
        # Threshold alerts fire when a budget or token quota is settled past 0.8 / 1.0; that
        # panel is still fed through the service's hook, with a real LimitStatus.
        metrics.QuotaMetrics().on_threshold(
            LimitStatus(
                tenant=tenant_a, key_prefix=None, limit="budget_usd", mode="hard",
                period="month", limit_value=Decimal(10), used=Decimal(9), reserved=Decimal(0),
                resets_at=datetime(2030, 1, 1, tzinfo=UTC),
            ),
            Decimal("0.8"),
        )  # fmt: skip

    calls_of_a = f'sum(gemini_meter_requests_total{{tenant="{tenant_a}"}})'
    with prometheus_scraping(proxy.url, tmp_path) as prom, httpx.Client(timeout=10) as client:
        traffic(1)
        # Prometheus applies its targets 5 s after it starts: the first scrape comes then.
        wait_for_value(client, prom, calls_of_a, 6)
        traffic(2)
        wait_for_value(client, prom, calls_of_a, 12)  # now every series has two samples or more

        failures: list[str] = []
        for where, _, target in all_targets():
            promql = substitute(target["expr"])
            try:
                result = query(client, prom, promql)
            except AssertionError as exc:
                failures.append(f"{where}: {exc}")
                continue
            if not result:
                failures.append(f"{where}: no series for {promql}")
                continue
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                if any(label not in series["metric"] for series in result):
                    failures.append(f"{where}: legend label {label!r} missing from {promql}")
        # Variables: label_values(selector, label) is /api/v1/label/<label>/values?match[]=...
        for path in DASHBOARDS:
            for v in variables(load(path)).values():
                if v["type"] != "query":
                    continue
                m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"])
                assert m, v["query"]
                reply = client.get(
                    f"{prom}/api/v1/label/{m[2]}/values", params={"match[]": substitute(m[1])}
                ).json()
                if not reply["data"]:
                    failures.append(f"{path.name}: variable {v['name']} has no values")
                elif v["name"] == "tenant" and not {tenant_a, tenant_b} <= set(reply["data"]):
                    failures.append(f"{path.name}: variable tenant lacks this test's tenants")
        assert not failures, "\n".join(failures)
