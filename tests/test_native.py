"""Native Gemini routes end to end: the google-genai SDK and raw httpx through a running proxy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from google import genai

from proxy.cli import main
from tests.conftest import UPSTREAM_KEY, RunningProxy
from tests.fakes.gemini import (
    ErrorReply,
    FakeGemini,
    Hang,
    JsonReply,
    StreamReply,
    fixture,
    fixture_bytes,
    stream_events,
    text_reply,
    usage_metadata,
)


def run_sync_main(argv: list[str]) -> int:
    # The CLI runs its own event loop; keep it off any loop the test may have.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(main, argv).result()


def comparable(resp: Any) -> Any:
    # The SDK keeps the raw HTTP headers on the object; the replies themselves must be equal.
    return resp.model_dump(exclude={"sdk_http_response"}, exclude_none=True)


# -- the SDK gets what it would get from the upstream directly --------------------------------


def test_sdk_generate_matches_direct(
    proxy: RunningProxy,
    fake_server: tuple[FakeGemini, str],
    sdk: Callable[[str, str], genai.Client],
) -> None:
    through, direct_client = sdk(proxy.url, proxy.key), sdk(fake_server[1], UPSTREAM_KEY)
    via_proxy = through.models.generate_content(model="gemini-2.5-flash", contents="hi")
    direct = direct_client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert comparable(via_proxy) == comparable(direct)
    assert (
        via_proxy.text == fixture("generate_text")["candidates"][0]["content"]["parts"][0]["text"]
    )
    upstream = proxy.fake.calls("generateContent")[0]
    assert upstream.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert proxy.key not in str(upstream.headers) + upstream.query_string


def test_sdk_stream_matches_direct(
    proxy: RunningProxy,
    fake_server: tuple[FakeGemini, str],
    sdk: Callable[[str, str], genai.Client],
) -> None:
    through, direct_client = sdk(proxy.url, proxy.key), sdk(fake_server[1], UPSTREAM_KEY)
    via = list(through.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    direct = list(
        direct_client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
    )
    assert [comparable(c) for c in via] == [comparable(c) for c in direct]
    assert (
        "".join(c.text or "" for c in via)
        == "Proxies forward requests from clients to servers and relay the replies back."
    )


def test_sdk_count_tokens_embed_and_models(
    proxy: RunningProxy, sdk: Callable[[str, str], genai.Client]
) -> None:
    client = sdk(proxy.url, proxy.key)
    assert client.models.count_tokens(model="gemini-2.5-flash", contents="hello").total_tokens == 31
    emb = client.models.embed_content(
        model="gemini-embedding-001", contents=["one", "two", "three"]
    )
    assert emb.embeddings is not None and len(emb.embeddings) == 3
    names = [m.name for m in client.models.list()]
    assert (
        "models/gemini-2.5-flash" in names and "models/gemini-3-pro-preview" in names
    )  # both pages
    assert client.models.get(model="gemini-2.5-pro").display_name == "Gemini 2.5 Pro"


# -- streaming: byte for byte, event by event --------------------------------------------------


def test_sse_passes_through_byte_for_byte(proxy: RunningProxy) -> None:
    raw = fixture_bytes("stream_text.sse")
    proxy.fake.enqueue(StreamReply([raw]))
    r = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        headers={"x-goog-api-key": proxy.key},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == raw
    assert proxy.fake.calls("streamGenerateContent")[0].query == {"alt": "sse"}


def test_json_array_stream_passes_through_and_is_metered(proxy: RunningProxy) -> None:
    raw = fixture_bytes("stream_text.json_array")
    proxy.fake.enqueue(StreamReply([raw[:100], raw[100:700], raw[700:]]))
    r = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        params={"key": proxy.key},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert r.content == raw
    [row] = proxy.rows()
    assert (row["prompt_tokens"], row["output_tokens"], row["thinking_tokens"]) == (12, 14, 272)
    assert row["streamed"] is True and row["operation"] == "streamGenerateContent"


async def test_first_event_arrives_before_upstream_finishes(proxy: RunningProxy) -> None:
    events = stream_events(["one", " two", " three"], usage_metadata(5, 3))
    proxy.fake.enqueue(StreamReply(events, hold_after=1))
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "POST",
            f"{proxy.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            headers={"x-goog-api-key": proxy.key},
            json={"contents": [{"parts": [{"text": "hi"}]}]},
        ) as r,
    ):
        it = r.aiter_bytes()
        first = await anext(it)
        # The upstream is still holding the rest of its stream.
        assert b'"one"' in first
        assert not proxy.fake.stream_done.is_set()
        proxy.fake.release()
        rest = b"".join([chunk async for chunk in it])
    assert b'" three"' in rest
    [row] = proxy.rows()
    assert (row["prompt_tokens"], row["output_tokens"]) == (5, 3)
    assert row["ttfb_ms"] is not None and row["ttfb_ms"] <= row["latency_ms"]


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    ["x-goog-api-key", "query", "bearer"],
)
def test_each_way_to_send_the_tenant_key(proxy: RunningProxy, how: str) -> None:
    headers: dict[str, str] = {}
    params: dict[str, str] = {"foo": "bar"}
    if how == "x-goog-api-key":
        headers["x-goog-api-key"] = proxy.key
    elif how == "query":
        params["key"] = proxy.key
    else:
        headers["authorization"] = f"Bearer {proxy.key}"
    r = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers=headers,
        params=params,
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert r.status_code == 200, r.text
    [up] = proxy.fake.calls("generateContent")
    assert up.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert "authorization" not in up.headers
    assert up.query == {}  # neither the client's key nor a parameter off the allow-list


@pytest.mark.parametrize("key", [None, "gm-not-a-real-key"])
def test_missing_or_unknown_key_is_401_in_gemini_envelope(
    proxy: RunningProxy, key: str | None
) -> None:
    headers = {"x-goog-api-key": key} if key else {}
    r = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers=headers,
        json={"contents": []},
    )
    assert r.status_code == 401
    assert r.json()["error"]["status"] == "UNAUTHENTICATED"
    assert r.json()["error"]["code"] == 401
    assert proxy.fake.requests == []


def test_revoked_key_is_refused(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = start_proxy(sqlite_url, key_cache_ttl=0.0)
    url = f"{p.url}/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    assert httpx.post(url, headers={"x-goog-api-key": p.key}, json=body).status_code == 200
    monkeypatch.setenv("GEMINI_METER_DATABASE_URL", sqlite_url)
    assert run_sync_main(["keys", "revoke", p.key[:11]]) == 0
    assert httpx.post(url, headers={"x-goog-api-key": p.key}, json=body).status_code == 401


# -- the ledger --------------------------------------------------------------------------------


def test_ledger_rows_carry_exact_usage(
    start_proxy: Callable[..., RunningProxy], db_url: str, sdk: Callable[[str, str], genai.Client]
) -> None:
    p = start_proxy(db_url)
    p.fake.enqueue(JsonReply(fixture("generate_cached_audio")))
    client = sdk(p.url, p.key)
    client.models.generate_content(model="models/gemini-2.5-flash", contents="hi")
    list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    rows = p.rows(2)
    assert len(rows) == 2
    plain, streamed = sorted(rows, key=lambda r: r["streamed"])
    # generate_cached_audio.json's usageMetadata, field by field
    assert plain["model"] == "gemini-2.5-flash"
    assert (plain["prompt_tokens"], plain["cached_tokens"], plain["output_tokens"]) == (
        5230,
        4096,
        11,
    )
    assert (
        plain["thinking_tokens"],
        plain["audio_prompt_tokens"],
        plain["cached_audio_tokens"],
    ) == (144, 4800, 4096)
    assert plain["total_tokens"] == 5385
    assert plain["response_id"] == "Zk1saP2aBNqkz7IPl8e4qQM" and plain["status"] == 200
    assert plain["estimated"] is False and plain["route"] == "native"
    # the stream's LAST usageMetadata, not a sum of its chunks
    assert (streamed["prompt_tokens"], streamed["output_tokens"], streamed["thinking_tokens"]) == (
        12,
        14,
        272,
    )
    assert streamed["total_tokens"] == 298
    for row in rows:
        assert row["tenant_id"] and row["key_id"] and row["latency_ms"] > 0


def test_embeddings_rows_are_estimated(proxy: RunningProxy) -> None:
    r = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-embedding-001:embedContent",
        headers={"x-goog-api-key": proxy.key},
        json={"content": {"parts": [{"text": "x" * 40}]}},
    )
    assert r.status_code == 200
    [row] = proxy.rows()
    assert row["estimated"] is True and row["prompt_tokens"] == 10


def test_upstream_errors_pass_through_unchanged_and_are_recorded(proxy: RunningProxy) -> None:
    proxy.fake.enqueue(ErrorReply("error_400"), action="generateContent")
    r = httpx.post(
        f"{proxy.url}/v1/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": proxy.key},
        json={"contentz": []},
    )
    assert r.status_code == 400
    assert r.json() == fixture("error_400")
    [row] = proxy.rows()
    assert row["status"] == 400 and row["error_class"] == "upstream_400"
    assert row["cost_usd"] == 0  # only HTTP 200 replies are billed


# -- errors the proxy makes itself -------------------------------------------------------------


def _post(proxy: RunningProxy, path: str, content: bytes, **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}{path}",
        headers={"x-goog-api-key": proxy.key, "content-type": "application/json"},
        content=content,
        **kw,
    )


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", b"{not json", 400),
        ("/v1beta/models/gemini-2.5-flash:generateContent", b"[1, 2]", 400),
        ("/v1beta/models/gemini-2.5-flash:generateContent", b"", 400),
        ("/v1beta/models/gemini-2.5-flash:deleteEverything", b"{}", 404),
        ("/v1beta/models/..%2F..%2Ffiles:generateContent", b"{}", 400),
        ("/v1beta/models/gemini%2F..%2F..%2Fx:generateContent", b"{}", 400),
        ("/v1beta/models/http:%2F%2Fevil.example:generateContent", b"{}", 400),
    ],
    ids=[
        "malformed",
        "array",
        "empty",
        "unknown-method",
        "dotdot",
        "slash-in-model",
        "absolute-url",
    ],
)
def test_bad_input_is_a_gemini_4xx_and_never_forwarded(
    proxy: RunningProxy, path: str, body: bytes, status: int
) -> None:
    r = _post(proxy, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["status"] and err["message"]
    assert proxy.fake.requests == []


def test_body_over_the_limit_is_413(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    p = start_proxy(sqlite_url, max_body_bytes=1000)
    r = _post(
        p, "/v1beta/models/gemini-2.5-flash:generateContent", orjson.dumps({"contents": "x" * 2000})
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == 413


def test_upstream_unreachable_is_502(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    p = start_proxy(sqlite_url, upstream_url="http://127.0.0.1:9", upstream_retries=0)
    r = _post(p, "/v1beta/models/gemini-2.5-flash:generateContent", b"{}")
    assert r.status_code == 502
    assert r.json()["error"]["status"] == "UNAVAILABLE"
    assert UPSTREAM_KEY not in r.text


def test_upstream_timeout_is_504(start_proxy: Callable[..., RunningProxy], sqlite_url: str) -> None:
    p = start_proxy(sqlite_url, upstream_read_timeout=0.3)
    p.fake.enqueue(Hang(2.0), action="generateContent")
    r = _post(p, "/v1beta/models/gemini-2.5-flash:generateContent", b"{}")
    assert r.status_code == 504
    assert r.json()["error"]["status"] == "DEADLINE_EXCEEDED"
    [row] = p.rows()
    assert row["status"] == 504 and row["error_class"] == "UpstreamTimeout"


def test_retries_before_first_byte_give_one_row(proxy: RunningProxy) -> None:
    proxy.fake.enqueue(ErrorReply(503), ErrorReply(503), text_reply("ok", usage_metadata(7, 2)))
    r = _post(proxy, "/v1beta/models/gemini-2.5-flash:generateContent", b"{}")
    assert r.status_code == 200
    [row] = proxy.rows()
    assert row["retries"] == 2 and row["status"] == 200 and row["prompt_tokens"] == 7


def test_upstream_key_never_in_replies(proxy: RunningProxy) -> None:
    paths = [
        ("GET", "/v1beta/models", b""),
        ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", b"{bad"),
        ("POST", "/v1beta/models/x:countTokens", b"{}"),
        ("GET", "/metrics", b""),
        ("GET", "/readyz", b""),
    ]
    for method, path, body in paths:
        r = httpx.request(
            method, f"{proxy.url}{path}", headers={"x-goog-api-key": proxy.key}, content=body
        )
        assert UPSTREAM_KEY not in r.text
        assert all(UPSTREAM_KEY not in v for v in r.headers.values())


def test_upstream_cookies_are_neither_kept_nor_passed_on(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str, fake_server: tuple[Any, str]
) -> None:
    # The proxy's upstream connection is shared by every tenant: a cookie the upstream sets on
    # one call must not ride along on the next one, nor reach the client. (By a host name:
    # HTTP clients keep no cookies for bare IP addresses anyway.)
    proxy = start_proxy(sqlite_url, upstream_url=fake_server[1].replace("127.0.0.1", "localhost"))
    reply = text_reply("ok", usage_metadata(3, 1))
    reply.headers["set-cookie"] = "NID=tenant-a-session; Path=/; HttpOnly"
    proxy.fake.enqueue(reply, action="generateContent")
    proxy.fake.enqueue(text_reply("ok", usage_metadata(3, 1)), action="generateContent")
    for _ in range(2):
        r = httpx.post(
            f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent",
            headers={"x-goog-api-key": proxy.key},
            json={"contents": [{"parts": [{"text": "hi"}]}]},
        )
        assert r.status_code == 200 and "set-cookie" not in r.headers
    calls = proxy.fake.calls("generateContent")
    assert len(calls) == 2 and "cookie" not in calls[1].headers


def test_overhead_header_is_the_time_outside_the_upstream(proxy: RunningProxy) -> None:
    proxy.fake.enqueue(Hang(0.3, then=text_reply("ok")), action="generateContent")
    r = _post(proxy, "/v1beta/models/gemini-2.5-flash:generateContent", b"{}")
    overhead = float(r.headers["x-gemini-meter-overhead-ms"])
    [row] = proxy.rows()
    # The 300 ms the upstream took is not the proxy's: overhead is the rest of the call's time.
    assert row["latency_ms"] >= 300
    assert 0 <= overhead < row["latency_ms"] - 250
    assert "gemini_meter_proxy_overhead_seconds_bucket" in httpx.get(f"{proxy.url}/metrics").text


def test_latency_and_overhead_count_from_the_request_arrival(proxy: RunningProxy) -> None:
    # A client that takes 300 ms to send its body: that time is the call's, and the proxy's
    # (the upstream was not yet asked), so it shows in the row's latency and in the overhead.
    def slow_body() -> Iterator[bytes]:
        yield b'{"contents": [{"parts": '
        time.sleep(0.3)
        yield b'[{"text": "hi"}]}]}'

    proxy.fake.enqueue(text_reply("ok", usage_metadata(3, 1)), action="generateContent")
    r = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": proxy.key, "content-type": "application/json"},
        content=slow_body(),
    )
    assert r.status_code == 200
    assert float(r.headers["x-gemini-meter-overhead-ms"]) >= 250
    [row] = proxy.rows()
    assert row["latency_ms"] >= 250


# -- query parameters (issue 16, item 6) ---------------------------------------------------------


@pytest.mark.parametrize("param", ["fields", "$fields", "%24fields"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_partial_response_cannot_strip_usage(
    proxy: RunningProxy, param: str, stream: bool
) -> None:
    """``fields=candidates`` (Google's partial responses) would leave usageMetadata out of the
    reply and the call unbilled: the parameter never reaches the upstream."""
    method = "streamGenerateContent?alt=sse&" if stream else "generateContent?"
    r = httpx.post(
        f"{proxy.url}/v1beta/models/gemini-2.5-flash:{method}{param}=candidates",
        headers={"x-goog-api-key": proxy.key},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert r.status_code == 200
    [up] = proxy.fake.requests
    assert "fields" not in up.query and "$fields" not in up.query
    assert "usageMetadata" in r.text
    [row] = proxy.rows(1)
    assert row["total_tokens"] > 0 and row["cost_usd"] > 0


def test_the_fake_upstream_honours_fields(fake: FakeGemini, fake_server: Any) -> None:
    """(So the test above could fail: the fake strips what Google would.)"""
    r = httpx.post(
        f"{fake_server[1]}/v1beta/models/gemini-2.5-flash:generateContent?fields=candidates",
        headers={"x-goog-api-key": UPSTREAM_KEY},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert list(r.json()) == ["candidates"]


@pytest.mark.parametrize(
    ("path", "query", "forwarded"),
    [
        ("gemini-2.5-flash:generateContent", "prettyPrint=false&callback=x&quotaUser=u", {}),
        ("gemini-2.5-flash:generateContent", "alt=json", {}),
        ("gemini-2.5-flash:streamGenerateContent", "alt=sse&$alt=proto", {"alt": "sse"}),
        ("gemini-2.5-flash:countTokens", "fields=totalTokens", {}),
    ],
)
def test_only_allowed_parameters_reach_the_upstream(
    proxy: RunningProxy, path: str, query: str, forwarded: dict[str, str]
) -> None:
    r = httpx.post(
        f"{proxy.url}/v1beta/models/{path}?{query}",
        headers={"x-goog-api-key": proxy.key},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert r.status_code == 200, r.text
    assert proxy.fake.requests[-1].query == forwarded


def test_list_models_keeps_its_paging_parameters(proxy: RunningProxy) -> None:
    r = httpx.get(
        f"{proxy.url}/v1beta/models?pageSize=2&fields=models&key={proxy.key}",
    )
    assert r.status_code == 200 and "nextPageToken" in r.json()
    assert proxy.fake.requests[-1].query == {"pageSize": "2"}


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("gemini-2.5-flash:generateContent", "alt=proto"),
        ("gemini-2.5-flash:generateContent", "alt=sse"),
        ("gemini-2.5-flash:streamGenerateContent", "alt=media"),
        ("gemini-2.5-flash:streamGenerateContent", "alt=sse&alt=json"),
    ],
)
def test_an_alt_the_proxy_cannot_meter_is_a_400(proxy: RunningProxy, path: str, query: str) -> None:
    r = httpx.post(
        f"{proxy.url}/v1beta/models/{path}?{query}",
        headers={"x-goog-api-key": proxy.key},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert proxy.fake.requests == []
