"""Garbage-collector tuning at start-up (settings.gc_tuning): on by default, off in the tests'
own proxies, which share the test process."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.app import GC_GEN0_THRESHOLD, create_app
from proxy.settings import Settings
from tests.conftest import proxy_settings
from tests.fakes.gemini import FakeGemini
from tests.fakes.server import serve


@pytest.fixture
def pristine_gc() -> Iterator[None]:
    """CPython's defaults, nothing frozen; the test process's own state put back afterwards."""
    threshold = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, *threshold[1:])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_gc_tuning_is_on_by_default() -> None:
    assert Settings().gc_tuning is True


@pytest.mark.parametrize("tuning", [True, False])
def test_started_proxy_freezes_and_raises_gen0_threshold(
    pristine_gc: None, fake_server: tuple[FakeGemini, str], tmp_path: Path, tuning: bool
) -> None:
    settings = proxy_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", fake_server[1], gc_tuning=tuning
    )
    with serve(create_app(settings)) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        if tuning:
            # Start-up's objects (modules, catalog, pools) are out of the collector's sight.
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
        else:
            assert gc.get_freeze_count() == 0
            assert gc.get_threshold()[0] == 700
