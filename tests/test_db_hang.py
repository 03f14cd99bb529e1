"""A database that hangs — connections open, no answer — stalls no request (issue 16, item 3).

Keys in use are refreshed in the background and served from the last good copy; a key never
seen gets a quick 503; /v1/usage, the admin API and /readyz answer 503 within their bounds.
The client timeout below is no performance target: it is under the 5-30 s a request used to
wait (a new connection's timeout, the command timeout), and far above the bounded waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
from sqlalchemy import update

from proxy.db.engine import make_engine
from proxy.db.tables import ApiKey
from tests.conftest import RunningProxy, run_sync
from tests.fakes.tcpcut import TcpCut
from tests.test_reliability import count_rows, pg_line, wait_for

__all__ = ["pg_line"]  # the fixture, shared with test_reliability

BODY = {"contents": [{"parts": [{"text": "hi"}]}]}
CLIENT_TIMEOUT = 4.0


def test_a_frozen_database_stalls_no_request(
    start_proxy: Callable[..., RunningProxy], pg_line: tuple[TcpCut, str], pg_url: str
) -> None:
    line, via = pg_line
    p = start_proxy(via, key_cache_ttl=0.2, key_lookup_timeout=0.5, database_request_timeout=1.0)
    url = f"{p.url}/v1beta/models/gemini-2.5-flash:generateContent"
    known = {"x-goog-api-key": p.key}
    unseen = {"x-goog-api-key": p.new_key("team-b")}  # in the database, never used yet
    admin = {"authorization": "Bearer admin-token-for-tests"}
    with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
        assert client.post(url, headers=known, json=BODY).status_code == 200
        wait_for(lambda: len(count_rows(pg_url)) == 1)

        line.freeze()
        try:
            for _ in range(4):
                # Each call comes after the key's cache entry went stale: no wait.
                time.sleep(0.3)
                r = client.post(url, headers=known, json=BODY)
                assert r.status_code == 200, r.text
            r = client.post(url, headers=unseen, json=BODY)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["status"] == "UNAVAILABLE"
            r = client.get(f"{p.url}/v1/usage", headers={"authorization": f"Bearer {p.key}"})
            assert r.status_code == 503 and r.json()["error"]["type"] == "api_error"
            r = client.get(f"{p.url}/admin/tenants", headers=admin)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            r = client.get(f"{p.url}/readyz")
            assert r.status_code == 503 and r.json()["checks"]["database"] == "error: timeout"
        finally:
            line.restore()

        # Back: the new key is checked, reports and the admin API answer, no call was lost.
        wait_for(lambda: client.post(url, headers=unseen, json=BODY).status_code == 200)
        assert client.get(f"{p.url}/admin/tenants", headers=admin).status_code == 200
        assert client.get(f"{p.url}/readyz").status_code == 200
    wait_for(lambda: len(count_rows(pg_url)) == 6, timeout=60)


def test_many_calls_during_a_freeze_all_answer(
    start_proxy: Callable[..., RunningProxy], pg_line: tuple[TcpCut, str], pg_url: str
) -> None:
    """A burst while frozen: every call with a known key is served, none waits on the
    database (they would all queue behind one stale reload otherwise)."""
    line, via = pg_line
    p = start_proxy(via, key_cache_ttl=0.2, key_lookup_timeout=0.5)
    url = f"{p.url}/v1beta/models/gemini-2.5-flash:generateContent"
    assert httpx.post(url, headers={"x-goog-api-key": p.key}, json=BODY).status_code == 200
    line.freeze()
    try:
        time.sleep(0.5)

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
                calls = [
                    client.post(url, headers={"x-goog-api-key": p.key}, json=BODY)
                    for _ in range(50)
                ]
                return [r.status_code for r in await asyncio.gather(*calls)]

        assert asyncio.run(burst()) == [200] * 50
    finally:
        line.restore()
    wait_for(lambda: len(count_rows(pg_url)) == 51, timeout=60)


def test_a_revoked_key_stops_working_with_the_background_refresh(
    start_proxy: Callable[..., RunningProxy], pg_url: str
) -> None:
    """Revocations still apply within (about) the TTL: the background refresh notices them."""
    p = start_proxy(pg_url, key_cache_ttl=0.3)
    url = f"{p.url}/v1beta/models/gemini-2.5-flash:generateContent"
    headers = {"x-goog-api-key": p.key}
    assert httpx.post(url, headers=headers, json=BODY).status_code == 200
    run_sync(lambda: _revoke_all(pg_url))
    wait_for(lambda: httpx.post(url, headers=headers, json=BODY).status_code == 401, timeout=5)


async def _revoke_all(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(ApiKey).values(revoked_at=ApiKey.created_at))
    finally:
        await engine.dispose()


def test_without_a_cache_an_outage_serves_known_keys_and_ends(
    start_proxy: Callable[..., RunningProxy], pg_line: tuple[TcpCut, str], pg_url: str
) -> None:
    """``GEMINI_METER_KEY_CACHE_TTL=0``: every request asks the database — in an outage the last
    good answer serves, and once the database is back a revocation is seen again."""
    line, via = pg_line
    p = start_proxy(via, key_cache_ttl=0.0, key_lookup_timeout=0.5)
    url = f"{p.url}/v1beta/models/gemini-2.5-flash:generateContent"
    headers = {"x-goog-api-key": p.key}
    with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
        assert client.post(url, headers=headers, json=BODY).status_code == 200
        line.cut()
        try:
            for _ in range(3):
                assert client.post(url, headers=headers, json=BODY).status_code == 200
        finally:
            line.restore()
        run_sync(lambda: _revoke_all(pg_url))
        wait_for(lambda: client.post(url, headers=headers, json=BODY).status_code == 401)
