"""Hostile input on every route: never a 500, never a secret, never an unintended upstream path.

Property-based (hypothesis), in process: the proxy app and the fake upstream are joined by
httpx's ASGI transport, so thousands of requests take seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.app import create_app
from proxy.services import Services
from tests.conftest import UPSTREAM_KEY, make_tenant_key, proxy_settings
from tests.fakes.asgi_sender import AsgiSender
from tests.fakes.gemini import FakeGemini

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
]
# Paths the upstream may legitimately see: /{v1,v1beta}/models[/{id}[:{method}]].
_ALLOWED_UPSTREAM = re.compile(r"/(v1|v1beta)/models(/[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z]+)?)?")


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


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One proxy app in process for the whole module, its upstream the fake (also in process)."""
    from proxy.db.migrate import upgrade

    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    fake = FakeGemini(api_key=UPSTREAM_KEY)
    settings_ = proxy_settings(
        url, "http://upstream.invalid", max_body_bytes=4096, upstream_retries=0
    )
    loop = asyncio.new_event_loop()
    key = loop.run_until_complete(make_tenant_key(url, "fuzz"))
    svc = Services.build(settings_, upstream_sender=AsgiSender(fake))
    app = create_app(settings_, svc=svc)
    app.state.services = svc
    loop.run_until_complete(svc.start())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy")
    yield loop, client, key, fake
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(svc.stop())
    loop.close()


def _check(r: httpx.Response, key: str) -> None:
    assert r.status_code < 500 or r.status_code in (502, 503, 504), (r.status_code, r.text)
    assert UPSTREAM_KEY not in r.text and key not in r.text
    assert all(UPSTREAM_KEY not in v for v in r.headers.values())
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"]


FORWARDED: list[str] = []  # every upstream path the fuzzing produced, to prove it reached there


def _upstream_paths_ok(fake: FakeGemini) -> None:
    for req in fake.requests:
        FORWARDED.append(req.path)
        assert _ALLOWED_UPSTREAM.fullmatch(req.path), req.path
        assert req.headers.get("x-goog-api-key") == UPSTREAM_KEY
    fake.requests.clear()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(ROUTES), body=bodies, auth=st.sampled_from(["header", "bearer", "query"])
)
def test_any_body_on_any_route(
    harness: Any, route: tuple[str, str], body: bytes, auth: str
) -> None:
    loop, client, key, fake = harness
    method, path = route
    headers = {"content-type": "application/json"}
    params = {}
    if auth == "header":
        headers["x-goog-api-key"] = key
    elif auth == "bearer":
        headers["authorization"] = f"Bearer {key}"
    else:
        params["key"] = key

    async def go() -> httpx.Response:
        return await client.request(method, path, content=body, headers=headers, params=params)

    r = loop.run_until_complete(go())
    _check(r, key)
    _upstream_paths_ok(fake)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(model=path_junk, method=st.sampled_from(["generateContent", "countTokens", "x", ""]))
def test_model_names_never_escape_the_upstream_path(harness: Any, model: str, method: str) -> None:
    loop, client, key, fake = harness
    raw = f"/v1beta/models/{model}:{method}".encode("utf-8", "surrogatepass")

    async def go() -> httpx.Response | None:
        try:
            url = httpx.URL("http://proxy").copy_with(raw_path=raw)
        except Exception:  # not even a URL httpx would send
            return None
        return await client.post(url, content=b"{}", headers={"x-goog-api-key": key})

    r = loop.run_until_complete(go())
    if r is not None:
        _check(r, key)
    _upstream_paths_ok(fake)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.text(max_size=60),
    name=st.sampled_from(["x-goog-api-key", "authorization", "content-length", "content-type"]),
)
def test_header_junk(harness: Any, value: str, name: str) -> None:
    loop, client, key, fake = harness
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return  # not sendable as a header

    async def go() -> httpx.Response | None:
        try:
            return await client.post(
                "/v1beta/models/gemini-2.5-flash:generateContent",
                content=b'{"contents": []}',
                headers={"x-goog-api-key": key, name: value},
            )
        except (httpx.LocalProtocolError, ValueError):
            return None

    r = loop.run_until_complete(go())
    if r is not None:
        _check(r, key)
    _upstream_paths_ok(fake)


def test_the_fuzzing_reached_the_upstream() -> None:
    # Runs after the property tests (file order): they must not all have been refused early.
    assert len(FORWARDED) > 20, FORWARDED
    assert any(":generateContent" in p for p in FORWARDED)


def test_oversized_body_is_413_on_both_apis(harness: Any) -> None:
    loop, client, key, _ = harness

    async def go(path: str) -> httpx.Response:
        return await client.post(
            path,
            content=b"{" + b" " * 5000 + b"}",
            headers={"x-goog-api-key": key, "authorization": f"Bearer {key}"},
        )

    gemini = loop.run_until_complete(go("/v1beta/models/gemini-2.5-flash:generateContent"))
    openai_ = loop.run_until_complete(go("/v1/chat/completions"))
    assert gemini.status_code == openai_.status_code == 413
    assert gemini.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert openai_.json()["error"]["type"] == "invalid_request_error"


def test_unknown_routes_and_methods_answer_in_an_envelope(harness: Any) -> None:
    loop, client, key, _ = harness

    async def go() -> list[httpx.Response]:
        return [
            await client.get("/v1/nothing-here", headers={"authorization": f"Bearer {key}"}),
            await client.get("/v1beta/nothing", headers={"x-goog-api-key": key}),
            await client.delete("/v1/chat/completions"),
        ]

    missing, native_missing, wrong_method = loop.run_until_complete(go())
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert (
        native_missing.status_code == 404
        and native_missing.json()["error"]["status"] == "NOT_FOUND"
    )
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"]


def test_cors_is_off(harness: Any) -> None:
    loop, client, key, _ = harness

    async def go() -> list[httpx.Response]:
        origin = {"origin": "https://evil.example", "access-control-request-method": "POST"}
        return [
            await client.options("/v1/chat/completions", headers=origin),
            await client.get("/v1/models", headers={**origin, "authorization": f"Bearer {key}"}),
        ]

    for r in loop.run_until_complete(go()):
        assert not any(h.startswith("access-control-") for h in r.headers)
