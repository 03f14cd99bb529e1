"""One bad row never takes other rows down (issue 16, item 2): strings are made safe for every
database before they are written, rows the database still refuses are isolated and set aside
(dead letter), and no spool file holds up the ones behind it — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from proxy.db.engine import make_engine
from proxy.db.faults import rows_refused
from proxy.db.queries import insert_usage_events
from proxy.db.tables import UsageEvent
from proxy.metering.ledger_event import LedgerEvent, safe_text
from proxy.metering.spool import Spool
from proxy.usage import Usage
from tests.conftest import RunningProxy, fetch_rows
from tests.fakes.gemini import JsonReply, StreamReply, stream_events, text_response, usage_metadata
from tests.test_ledger_writer import _count, _event, running_writer


def _dead_lettered() -> float:
    return REGISTRY.get_sample_value("gemini_meter_ledger_dead_letter_events_total") or 0.0


# A cost beyond NUMERIC(20, 10) (PostgreSQL) and beyond a 64-bit count of 1e-10 USD (SQLite):
# no database can store it, so only isolation saves the rows around it.
UNSTORABLE = {"cost_usd": Decimal("1e12")}


def _poison(tenant: int, **fields: Any) -> LedgerEvent:
    e = _event(tenant)
    kinds = {k: v for k, v in fields.items() if k in Usage.__dataclass_fields__}
    if kinds:
        e.usage = replace(e.usage, **kinds)
    for name, value in fields.items():
        if name not in kinds:
            setattr(e, name, value)
    return e


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("plain", 10, "plain"),
        ("x" * 12, 10, "x" * 10),
        ("a\x00b", 10, "a\ufffdb"),
        ("a\ud800b", 10, "a\ufffdb"),
        ("\x00" * 20, 4, "\ufffd" * 4),
        ("é€😀", 3, "é€😀"),
    ],
)
def test_safe_text(value: str, limit: int, expected: str) -> None:
    assert safe_text(value, limit) == expected


async def test_strings_from_clients_and_upstream_are_stored_safely(db_url: str) -> None:
    """NUL, lone surrogates and over-long strings in any text column: the row is written."""
    async with running_writer(db_url, flush_interval=0.02) as (writer, tenant):
        poisoned = _poison(
            tenant, end_user="u\x00" + "x" * 300, response_id="r\ud800" * 100,
            model_version="v\x00", error_class="e" * 100,
        )  # fmt: skip
        writer.submit(poisoned)
        assert await writer.flush(timeout=10)
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(select(UsageEvent))).one()._mapping
    finally:
        await engine.dispose()
    assert row["end_user"] == "u\ufffd" + "x" * 254
    assert row["response_id"] == ("r\ufffd" * 64)
    assert row["model_version"] == "v\ufffd" and row["error_class"] == "e" * 64


async def test_a_refused_row_is_set_aside_and_its_batch_is_written(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path / "spool")
    before = _dead_lettered()
    async with running_writer(db_url, spool=spool, flush_interval=0.05) as (writer, tenant):
        good = [_event(tenant) for _ in range(40)]
        bad = [_poison(tenant, **UNSTORABLE) for _ in range(2)]
        for e in good[:10] + bad[:1] + good[10:30] + bad[1:] + good[30:]:
            writer.submit(e)
        with caplog.at_level(logging.ERROR, logger="gemini_meter.ledger"):
            assert await writer.flush(timeout=20)
    assert await _count(db_url) == (40, 40)  # every good row, and the rollups agree
    assert spool.files() == []  # nothing left to replay: the batch went through
    [dead] = spool.dead_letter_files()
    kept = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(r["id"] for r in kept) == sorted(e.id for e in bad)
    assert all(r["cost_usd"] == "1E+12" and r["dead_letter_error"] for r in kept)
    assert _dead_lettered() == before + 2
    assert any("refused 2 ledger row" in r.getMessage() for r in caplog.records)


async def test_a_repaired_dead_letter_file_is_replayed(db_url: str, tmp_path: Path) -> None:
    """What docs/operations.md tells an operator to do: fix the row, move the file back."""
    spool = Spool(tmp_path / "spool")
    async with running_writer(db_url, spool=spool, flush_interval=0.05) as (writer, tenant):
        bad = _poison(tenant, **UNSTORABLE)
        writer.submit(bad)
        assert await writer.flush(timeout=20)
        [dead] = spool.dead_letter_files()
        rows = [json.loads(line) for line in dead.read_text().splitlines()]
        rows[0]["cost_usd"] = "0.25"
        (spool.directory / dead.name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        dead.unlink()
        for _ in range(200):
            if await _count(db_url) == (1, 1):
                break
            await asyncio.sleep(0.05)
    assert await _count(db_url) == (1, 1)
    [row] = await fetch_rows(db_url)
    assert row["id"] == bad.id and row["cost_usd"] == Decimal("0.25")
    assert spool.files() == [] and spool.dead_letter_files() == []


async def test_a_spool_file_with_a_refused_row_never_blocks_the_ones_behind_it(
    db_url: str, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    async with running_writer(db_url, spool=spool, flush_interval=0.05) as (writer, tenant):
        await writer.stop()  # started only for the tenant: now fill the spool by hand
        first = [_event(tenant) for _ in range(5)] + [_poison(tenant, **UNSTORABLE)]
        second = [_event(tenant) for _ in range(7)]
        spool.append(first)
        spool.append(second)
        writer.start()
        for _ in range(200):
            if not spool.files():
                break
            await asyncio.sleep(0.05)
    assert spool.files() == []
    assert await _count(db_url) == (12, 12)
    [dead] = spool.dead_letter_files()
    assert [json.loads(line)["id"] for line in dead.read_text().splitlines()] == [first[-1].id]


async def test_a_file_that_keeps_failing_for_another_reason_does_not_block_later_ones(
    db_url: str, tmp_path: Path
) -> None:
    """An error that is not the data's (here a reset on one file's rows) is retried — and
    meanwhile the files behind it are replayed."""
    spool = Spool(tmp_path / "spool")
    async with running_writer(db_url, spool=spool, flush_interval=0.05, max_backoff=0.2) as (
        writer,
        tenant,
    ):
        await writer.stop()
        stuck = [_event(tenant) for _ in range(3)]
        later = [_event(tenant) for _ in range(4)]
        stuck_path, _ = spool.append(stuck), spool.append(later)
        poisoned = {e.id for e in stuck}

        def reset_on_stuck(_conn: Any, _cur: Any, _stmt: str, params: Any, *_: Any) -> None:
            rows = params if isinstance(params, list | tuple) else [params]
            if any(isinstance(r, dict) and r.get("id") in poisoned for r in rows) or any(
                isinstance(p, str) and p in poisoned for r in rows for p in _values(r)
            ):
                raise ConnectionResetError("the line dropped")

        event.listen(writer._engine.sync_engine, "before_cursor_execute", reset_on_stuck)
        writer.start()
        for _ in range(200):
            if spool.files() == [stuck_path]:
                break
            await asyncio.sleep(0.05)
        assert spool.files() == [stuck_path]  # retried, not thrown away ...
        assert await _count(db_url) == (4, 4)  # ... and the later file went through
        event.remove(writer._engine.sync_engine, "before_cursor_execute", reset_on_stuck)
        for _ in range(200):
            if not spool.files():
                break
            await asyncio.sleep(0.05)
    assert await _count(db_url) == (7, 7) and spool.dead_letter_files() == []


def _values(row: Any) -> list[Any]:
    if isinstance(row, dict):
        return list(row.values())
    return list(row) if isinstance(row, list | tuple) else [row]


async def test_refusals_are_told_from_outages(db_url: str) -> None:
    """Real errors from the real databases: refused data is the row's fault; a server that
    does not answer is not."""
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await insert_usage_events(conn, [_event(1).as_row()])
        for bad in ({"cost_usd": Decimal("1e12")}, {"prompt_tokens": 2**70}):
            with pytest.raises(Exception) as caught:
                async with engine.begin() as conn:
                    await insert_usage_events(conn, [_poison(1, **bad).as_row()], fresh=True)
            assert rows_refused(caught.value), caught.value
        dup = (await fetch_rows(db_url))[0]["id"]
        with pytest.raises(Exception) as caught:
            async with engine.begin() as conn:
                await insert_usage_events(conn, [_poison(1, id=dup).as_row()], fresh=True)
        assert rows_refused(caught.value)
    finally:
        await engine.dispose()
    gone = make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/x")  # nobody listens
    try:
        with pytest.raises(Exception) as caught:
            async with gone.begin() as conn:
                await insert_usage_events(conn, [_event(1).as_row()])
        assert not rows_refused(caught.value), caught.value
    finally:
        await gone.dispose()
    locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    assert not rows_refused(locked)
    assert not rows_refused(ConnectionResetError()) and not rows_refused(TimeoutError())


# -- end to end: the drill of the issue ------------------------------------------------------


def _chat(p: RunningProxy, **extra: Any) -> httpx.Response:
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        f"{p.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {p.key}"},
        json=body | extra,
        timeout=30,
    )


@pytest.mark.parametrize("user", ["x" * 257, "a\x00b"], ids=["too-long", "nul"])
def test_the_user_field_is_checked_at_the_edge(start_proxy: Any, pg_url: str, user: str) -> None:
    p = start_proxy(pg_url)
    r = _chat(p, user=user)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "user"
    assert p.fake.requests == []  # refused before anything was sent (or billed)
    r = _chat(p, safety_identifier=user)
    assert r.status_code == 400 and r.json()["error"]["param"] == "safety_identifier"
    r = httpx.post(
        f"{p.url}/v1/embeddings", headers={"authorization": f"Bearer {p.key}"},
        json={"model": "gemini-embedding-001", "input": "hi", "user": user},
    )  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "user"
    assert _chat(p, user="x" * 256).status_code == 200  # the column's length is fine


def test_a_poisoned_upstream_reply_costs_no_other_tenant_a_row(
    start_proxy: Any, pg_url: str
) -> None:
    """Upstream ids with NUL or over-long, and a count no int4 column holds, among a burst of
    ordinary calls on PostgreSQL: every call leaves its row; the unstorable one is set aside."""
    p = start_proxy(pg_url, ledger_flush_interval=0.2)
    poisoned = text_response("hi") | {"responseId": "r\x00" * 200, "modelVersion": "m\x00"}
    huge = text_response("hi", usage_metadata(3_000_000_000, 2))
    p.fake.enqueue(JsonReply(poisoned), JsonReply(huge), action="generateContent")
    events = stream_events(["a", "b"])
    events[-1] |= {"responseId": "s\x00"}
    p.fake.enqueue(StreamReply(events), action="streamGenerateContent")
    url = f"{p.url}/v1beta/models/gemini-2.5-flash"

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            h = {"x-goog-api-key": p.key}
            body = {"contents": [{"parts": [{"text": "hi"}]}]}
            calls = [client.post(f"{url}:generateContent", headers=h, json=body) for _ in range(40)]
            calls.append(client.post(f"{url}:streamGenerateContent?alt=sse", headers=h, json=body))
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert asyncio.run(burst()) == [200] * 41
    rows = p.rows(40)
    assert len(rows) == 40, len(rows)  # 41 calls: one row set aside (3e9 tokens overflow int4)
    assert any(r["response_id"] == ("r\ufffd" * 64) for r in rows)
    assert any(r["response_id"] == "s\ufffd" for r in rows)
    [dead] = Spool(p.settings.spool_dir).dead_letter_files()
    [kept] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert kept["prompt_tokens"] == 3_000_000_000 and "int32" in kept["dead_letter_error"]
    assert Spool(p.settings.spool_dir).files() == []
    shutil.rmtree(p.settings.spool_dir, ignore_errors=True)
