"""The CLI's commands in this process (tests/test_cli.py runs it as an operator would)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from proxy.cli import main
from tests.conftest import make_tenant_key, run_sync
from tests.test_quota_fixtures import add_policy
from tests.test_quota_service import _ledger

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """``gemini-meter ARGS`` on a fresh SQLite ledger: (exit status, stdout, stderr)."""
    monkeypatch.setenv("GEMINI_METER_DATABASE_URL", sqlite_url)

    def run(*args: str) -> tuple[int, str, str]:
        # The commands run their own event loop: keep them off the test's.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            code = pool.submit(main, list(args)).result()
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_help_names_every_command(cli: Run) -> None:
    code, out, _ = cli("--help")
    assert code == 0
    for command in ("serve", "usage", "db", "tenants", "keys", "quotas", "prices"):
        assert command in out


def test_usage_errors_exit_2(cli: Run) -> None:
    assert cli("usage", "--group-by", "colour")[0] == 2
    assert cli("usage", "--from", "yesterday-ish")[0] == 2
    assert cli("prices", "resolve")[0] == 2
    assert cli("no-such-command")[0] == 2


def test_quotas_show_reads_the_ledger_without_starting_a_service(cli: Run, sqlite_url: str) -> None:
    """On SQLite the counters live in the server's memory: a reader sees the ledger's spend."""
    assert cli("tenants", "create", "team-a")[0] == 0
    run_sync(lambda: make_tenant_key(sqlite_url, "team-a"))
    run_sync(lambda: add_policy(sqlite_url, "team-a", budget_usd=Decimal("10"), period="month"))
    now = datetime.now(UTC)
    run_sync(lambda: _ledger(sqlite_url, 1, 1, now, "1.25", 100))
    code, out, _ = cli("quotas", "show", "team-a", "--format", "json")
    assert code == 0
    [limit] = orjson.loads(out)["limits"]
    assert limit["limit"] == "budget_usd" and Decimal(limit["used"]) == Decimal("1.25")
    assert Decimal(limit["limit_value"]) == 10 and Decimal(limit["reserved"]) == 0
