"""Hostile input on every route family — native, OpenAI, /v1/usage, the admin API with and
without its token, health and metrics: never a 5xx of the proxy's own (one the fake upstream
answered may pass through), never a secret (the upstream key, a tenant key, the admin token) in
a reply's body or headers or in a log line, never an unintended upstream path.

Property-based (hypothesis), in process: the proxy app and the fake upstream are joined by
httpx's ASGI transport, so thousands of requests take seconds. The upstream is sometimes told to
answer an error that quotes its key, as Google's do. Bounded: a fixed number of examples each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.app import create_app
from proxy.db.migrate import upgrade
from proxy.services import Services
from tests.conftest import UPSTREAM_KEY, make_tenant_key, proxy_settings, run_sync, truncate_pg
from tests.fakes.asgi_sender import AsgiSender
from tests.fakes.gemini import ErrorReply, FakeGemini, StreamReply, error_body, stream_events

ADMIN_TOKEN = "admin-token-for-tests"
SUSPENDED = f"Permission denied: Consumer 'api_key:{UPSTREAM_KEY}' has been suspended."

ROUTES = [
    ("POST", "/v1beta/models/gemini-2.5-flash:generateContent"),
    ("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
    ("POST", "/v1/models/gemini-2.5-flash:countTokens"),
    ("POST", "/v1beta/models/gemini-embedding-001:embedContent"),
    ("POST", "/v1beta/models/gemini-embedding-001:batchEmbedContents"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("GET", "/v1beta/models"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/images/generations"),
    ("POST", "/v1beta/models/gemini-2.5-flash:batchGenerateContent"),
    ("POST", "/v1beta/models/imagen-3.0-generate-002:predict"),
    ("POST", "/v1beta/models/veo-2.0-generate-001:predictLongRunning"),
    ("POST", "/v1beta/cachedContents"),
    ("GET", "/v1beta/cachedContents"),
    ("POST", "/upload/v1beta/files"),
    ("GET", "/v1beta/files"),
    ("GET", "/v1beta/batches"),
]
# Paths the upstream may legitimately see: /{v1,v1beta}/models[/{id}[:{method}]], the stored
# resources' collections and members, and the upload route.
_ID = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_ALLOWED_UPSTREAM = re.compile(
    rf"/(v1|v1beta)/models(/{_ID}(:[A-Za-z]+)?)?"
    rf"|/(v1|v1beta)/(files|cachedContents|batches)(/{_ID}(:[A-Za-z]+)?)?"
    rf"|/upload/(v1|v1beta)/files"
)


def _dumps(value: Any) -> bytes:
    # The stdlib encoder: it also writes integers beyond 64 bits, which orjson refuses.
    return json.dumps(value).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Bodies that look like each API's requests, with fields of the wrong type or shape.
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values | st.sampled_from(["gemini-2.5-flash", "../x", "a/b", "models/x:y"]),
        "messages": json_values
        | st.lists(
            st.fixed_dictionaries({"role": json_values, "content": json_values}), max_size=3
        ),
        "stream": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "response_format": json_values,
        "temperature": json_values,
        "max_tokens": json_values,
        "n": json_values,
        "stop": json_values,
        "input": json_values,
        "encoding_format": json_values,
        "dimensions": json_values,
        "stream_options": json_values,
        "reasoning_effort": json_values,
    },
)
gemini_like = st.fixed_dictionaries(
    {},
    optional={
        "contents": json_values,
        "generationConfig": json_values,
        "content": json_values,
        "requests": json_values,
        "systemInstruction": json_values,
    },
)
bodies = (
    chat_like.map(_dumps)
    | gemini_like.map(_dumps)
    | json_values.map(_dumps)
    | st.binary(max_size=64)
)
path_junk = st.text(alphabet=string.printable + "%:/.\\é", max_size=40)


class Recorder:
    """The fake upstream behind a tap: what it answered, so a 5xx can be told to be its own."""

    def __init__(self, fake: FakeGemini) -> None:
        self.fake = fake
        self.statuses: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def tap(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
            await send(message)

        try:
            await self.fake(scope, receive, tap)
        except Exception:
            self.statuses.append(599)  # the fake itself failed: the proxy may say 502
            raise


class Logs(logging.Handler):
    """Every log line the proxy writes while the module runs, formatted as a handler would."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Harness:
    def __init__(self, url: str, upstream_retries: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeGemini(api_key=UPSTREAM_KEY)
        self.upstream = Recorder(self.fake)
        self.key = self.loop.run_until_complete(make_tenant_key(url, "fuzz"))
        # Another tenant's key: it must never show up anywhere either.
        self.secrets = [UPSTREAM_KEY, ADMIN_TOKEN, self.key]
        self.secrets.append(self.loop.run_until_complete(make_tenant_key(url, "other")))
        settings_ = proxy_settings(
            url, "http://upstream.invalid", max_body_bytes=4096,
            upstream_retries=upstream_retries, admin_token=ADMIN_TOKEN,
        )  # fmt: skip
        self.svc = Services.build(settings_, upstream_sender=AsgiSender(self.upstream))
        app = create_app(settings_, svc=self.svc)
        self.loop.run_until_complete(self.svc.start())
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://proxy"
        )

    def request(self, method: str, url: Any, **kw: Any) -> httpx.Response:
        self.upstream.statuses.clear()
        return self.loop.run_until_complete(self.client.request(method, url, **kw))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.svc.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def logs() -> Iterator[Logs]:
    handler = Logs()
    root, ours = logging.getLogger(), logging.getLogger("gemini_meter")
    level = ours.level
    root.addHandler(handler)
    ours.setLevel(logging.INFO)  # the access lines too
    yield handler
    root.removeHandler(handler)
    ours.setLevel(level)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, logs: Logs) -> Iterator[Harness]:
    """One proxy app in process for the model routes, its upstream the fake (also in process)."""
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    h = Harness(url)
    yield h
    h.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs: Logs
) -> Iterator[Harness]:
    """A proxy of its own for the routes that read and write the database (the admin API can
    disable tenants and set quotas), on each database."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("fuzz-store") / "store.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
    else:
        url = request.getfixturevalue("pg_database")
        run_sync(lambda: truncate_pg(url))
    h = Harness(url)
    yield h
    h.close()


def _check(r: httpx.Response, h: Harness, logs: Logs, *, minted: bool = False) -> None:
    """No 5xx of the proxy's own, no secret in the reply or the log, errors in an envelope."""
    upstream_failed = any(s >= 500 or s in (401, 403) for s in h.upstream.statuses)
    assert r.status_code < 500 or upstream_failed, (r.status_code, r.text)
    # A key the admin API just minted is in its own reply (once, by design); no other is.
    text = r.text if not minted else r.text.replace(r.json().get("secret", "\0"), "")
    for secret in h.secrets:
        assert secret not in text, (secret, r.text)
        assert all(secret not in v for v in r.headers.values())
    for line in logs.lines:
        assert not any(secret in line for secret in h.secrets), line
    logs.lines.clear()
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"]


FORWARDED: list[str] = []  # every upstream path the fuzzing produced, to prove it reached there


def _upstream_paths_ok(fake: FakeGemini) -> None:
    for req in fake.requests:
        FORWARDED.append(req.path)
        assert _ALLOWED_UPSTREAM.fullmatch(req.path), req.path
        assert req.headers.get("x-goog-api-key") == UPSTREAM_KEY
        assert not {"fields", "$fields", "key", "prettyPrint"} & set(req.query), req.query
    fake.requests.clear()
    fake.reset()  # what an example enqueued and did not use is not the next one's


# What the upstream answers: its default, or an error quoting its key (as Google's do), on a
# plain reply or inside a stream.
upstream_script = st.one_of(
    st.none(),
    st.sampled_from([400, 403, 404, 429, 500, 503]).map(
        lambda code: ErrorReply(error_body(code, SUSPENDED), code)
    ),
    st.just(
        StreamReply([*stream_events(["a"])[:1], {"error": {"code": 403, "message": SUSPENDED}}])
    ),
)
# Query strings: Google's system parameters, spellings of the key parameter, junk.
query_junk = st.lists(
    st.tuples(
        st.sampled_from(
            ["alt", "fields", "$fields", "%24fields", "prettyPrint", "pageSize", "pageToken",
             "KEY", "%6bey", "k%65y", "api_key"]
        ) | st.text(string.ascii_letters + "%$_", max_size=8),
        st.sampled_from(["sse", "json", "proto", "candidates", "1", "%00"])
        | st.text(string.printable, max_size=12),
    ),
    max_size=3,
)  # fmt: skip


FUZZ = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None
)


@settings(FUZZ, max_examples=250)
@given(
    route=st.sampled_from(ROUTES),
    body=bodies,
    auth=st.sampled_from(["header", "bearer", "query", "query-encoded"]),
    script=upstream_script,
    query=query_junk,
)
def test_any_body_on_any_route(
    harness: Harness,
    logs: Logs,
    route: tuple[str, str],
    body: bytes,
    auth: str,
    script: Any,
    query: list[tuple[str, str]],
) -> None:
    h = harness
    method, path = route
    headers = {"content-type": "application/json"}
    # Sent as written (so %6bey stays %6bey), less what no URL may hold.
    raw_query = "&".join(f"{quote(k, safe='%$')}={quote(v, safe='%')}" for k, v in query)
    if auth == "header":
        headers["x-goog-api-key"] = h.key
    elif auth == "bearer":
        headers["authorization"] = f"Bearer {h.key}"
    else:
        name = "key" if auth == "query" else "%6bey"
        raw_query = f"{raw_query}&{name}={h.key}" if raw_query else f"{name}={h.key}"
    if script is not None:
        h.fake.enqueue(script)
    try:
        url = httpx.URL("http://proxy" + path).copy_with(query=raw_query.encode() or None)
    except httpx.InvalidURL:
        return
    r = h.request(method, url, content=body, headers=headers)
    _check(r, h, logs)
    _upstream_paths_ok(h.fake)


@settings(FUZZ, max_examples=200)
@given(model=path_junk, method=st.sampled_from(["generateContent", "countTokens", "x", ""]))
def test_model_names_never_escape_the_upstream_path(
    harness: Harness, logs: Logs, model: str, method: str
) -> None:
    h = harness
    raw = f"/v1beta/models/{model}:{method}".encode("utf-8", "surrogatepass")
    try:
        url = httpx.URL("http://proxy").copy_with(raw_path=raw)
    except Exception:  # not even a URL httpx would send
        return
    r = h.request("POST", url, content=b"{}", headers={"x-goog-api-key": h.key})
    _check(r, h, logs)
    _upstream_paths_ok(h.fake)


@settings(FUZZ, max_examples=100)
@given(
    value=st.text(max_size=60),
    name=st.sampled_from(["x-goog-api-key", "authorization", "content-length", "content-type"]),
)
def test_header_junk(harness: Harness, logs: Logs, value: str, name: str) -> None:
    h = harness
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return  # not sendable as a header
    try:
        r = h.request(
            "POST",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            content=b'{"contents": []}',
            headers={"x-goog-api-key": h.key, name: value},
        )
    except (httpx.LocalProtocolError, ValueError):
        return
    _check(r, h, logs)
    _upstream_paths_ok(h.fake)


# -- /v1/usage, the admin API, health and metrics --------------------------------------------

text_junk = (
    st.text(max_size=24)
    | st.sampled_from(
        ["\x00", "%00", "9999-12-31T23:30:00", "0001-01-01T00:00:00+05:00", "2026-01-01",
         "99999999999999999999", "-1", "1e400", "fuzz", "other", "gm-", "../x", ""]
    )
)  # fmt: skip
dates = (
    st.sampled_from(
        ["9999-12-31T23:30:00", "0001-01-01T00:00:00+05:00", "9999-12-31", "0001-01-01",
         "2026-02-30", "2026-01-01T00:00:00-23:59", "1970-01-01"]
    )
    | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
    | text_junk
)  # fmt: skip
usage_query = st.fixed_dictionaries(
    {},
    optional={
        "from": dates, "to": dates, "model": text_junk, "tenant": text_junk,
        "key": text_junk | st.integers().map(str), "format": text_junk | st.just("csv"),
        "group_by": text_junk | st.sampled_from(["model,day", "tenant,hour,key"]),
    },
)  # fmt: skip
numbers = (
    st.integers()
    | st.sampled_from([2**63, 2**64, 10**30, -(2**63) - 1])
    | st.floats(allow_nan=False)
    | st.sampled_from(["1e400", "123456789012345678901234567890", "0.00000000001", "nan"])
)
quota_body = st.fixed_dictionaries(
    {},
    optional={
        "budget_usd": numbers | text_junk, "tokens": numbers, "rpm": numbers, "tpm": numbers,
        "period": text_junk | st.sampled_from(["day", "month"]),
        "mode": text_junk | st.sampled_from(["hard", "soft"]), "key": text_junk | numbers,
        "allowed_models": st.lists(text_junk, max_size=3) | json_values,
    },
)  # fmt: skip
admin_body = (
    quota_body
    | st.fixed_dictionaries({"name": text_junk | json_values})
    | st.fixed_dictionaries({"disabled": json_values})
    | json_values
)
admin_path = st.one_of(
    st.sampled_from(["/tenants", "/keys", "/usage", "/openapi.json", "/docs", ""]),
    st.tuples(
        st.sampled_from(["/tenants/{}", "/tenants/{}/keys", "/tenants/{}/quota", "/keys/{}"]),
        text_junk | st.sampled_from(["fuzz", "other", "1", "%C2%B2", "a%00b"]),
    ).map(lambda t: t[0].format(t[1].replace("/", "%2F").replace("?", "%3F").replace("#", "%23"))),
)
admin_auth = st.sampled_from(
    [None, f"Bearer {ADMIN_TOKEN}", "Bearer", "Bearer wrong", f"Basic {ADMIN_TOKEN}", "tenant"]
)


def _url(path: str, query: dict[str, str]) -> httpx.URL | None:
    raw = path.encode("utf-8", "surrogatepass")
    if query:
        raw += b"?" + str(httpx.QueryParams(query)).encode()
    try:
        return httpx.URL("http://proxy").copy_with(raw_path=raw)
    except Exception:  # not even a URL httpx would send
        return None


@settings(FUZZ, max_examples=120)
@given(query=usage_query, auth=st.sampled_from(["bearer", "header", "none"]))
def test_tenant_usage_never_fails(
    store_harness: Harness, logs: Logs, query: dict[str, str], auth: str
) -> None:
    h = store_harness
    headers = {"authorization": f"Bearer {h.key}"} if auth == "bearer" else {}
    if auth == "header":
        headers["x-goog-api-key"] = h.key
    url = _url("/v1/usage", query)
    if url is None:
        return
    r = h.request("GET", url, headers=headers)
    _check(r, h, logs)
    assert r.status_code in (200, 400, 401, 403), (r.status_code, r.text)


@settings(FUZZ, max_examples=200)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    path=admin_path,
    query=usage_query,
    body=admin_body.map(_dumps) | st.binary(max_size=32),
    auth=admin_auth,
)
def test_admin_api_never_fails_and_never_opens(
    store_harness: Harness,
    logs: Logs,
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes,
    auth: str | None,
) -> None:
    h = store_harness
    headers = {"content-type": "application/json"}
    if auth == "tenant":
        headers["authorization"] = f"Bearer {h.key}"
    elif auth is not None:
        headers["authorization"] = auth
    url = _url(f"/admin{path}", query)
    if url is None:
        return
    r = h.request(method, url, content=body, headers=headers)
    minted = r.status_code == 201 and path.endswith("/keys")
    _check(r, h, logs, minted=minted)
    if auth != f"Bearer {ADMIN_TOKEN}" and path != "/openapi.json":
        assert not 200 <= r.status_code < 300, (r.status_code, r.text)  # never in


@settings(FUZZ, max_examples=60)
@given(
    method=st.sampled_from(["GET", "POST", "HEAD", "DELETE"]),
    path=st.sampled_from(["/healthz", "/readyz", "/metrics"]),
    query=usage_query,
)
def test_health_and_metrics_never_fail_nor_tell(
    store_harness: Harness, logs: Logs, method: str, path: str, query: dict[str, str]
) -> None:
    h = store_harness
    url = _url(path, query)
    if url is None:
        return
    r = h.request(method, url)
    _check(r, h, logs)
    if method == "GET":
        assert r.status_code == 200, r.text


def test_the_fuzzing_reached_the_upstream() -> None:
    # Runs after the property tests (file order): they must not all have been refused early.
    assert len(FORWARDED) > 20, FORWARDED
    assert any(":generateContent" in p for p in FORWARDED)


def test_oversized_body_is_413_on_both_apis(harness: Harness) -> None:
    h = harness

    def go(path: str) -> httpx.Response:
        return h.request(
            "POST",
            path,
            content=b"{" + b" " * 5000 + b"}",
            headers={"x-goog-api-key": h.key, "authorization": f"Bearer {h.key}"},
        )

    gemini = go("/v1beta/models/gemini-2.5-flash:generateContent")
    openai_ = go("/v1/chat/completions")
    assert gemini.status_code == openai_.status_code == 413
    assert gemini.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert openai_.json()["error"]["type"] == "invalid_request_error"


def test_unknown_routes_and_methods_answer_in_an_envelope(harness: Harness) -> None:
    h = harness
    missing = h.request("GET", "/v1/nothing-here", headers={"authorization": f"Bearer {h.key}"})
    native_missing = h.request("GET", "/v1beta/nothing", headers={"x-goog-api-key": h.key})
    wrong_method = h.request("DELETE", "/v1/chat/completions")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert (
        native_missing.status_code == 404
        and native_missing.json()["error"]["status"] == "NOT_FOUND"
    )
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"]


def test_cors_is_off(harness: Harness) -> None:
    h = harness
    origin = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    replies = [
        h.request("OPTIONS", "/v1/chat/completions", headers=origin),
        h.request("GET", "/v1/models", headers={**origin, "authorization": f"Bearer {h.key}"}),
    ]
    for r in replies:
        assert not any(h.startswith("access-control-") for h in r.headers)
