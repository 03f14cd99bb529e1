"""No byte of an upstream key or a tenant key in a reply, a log line or a metric (issue 16,
items 4 and 7): one scrubber for upstream bodies and streams, one redaction for log lines."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import orjson
import pytest

from proxy.logs import install_redaction
from proxy.middleware import access_line
from proxy.redact import StreamScrubber, redact, register_secrets, scrub, scrub_bytes
from tests.conftest import UPSTREAM_KEY, RunningProxy
from tests.fakes.gemini import ErrorReply, JsonReply, StreamReply, error_body, stream_events

POOL_KEY = "pool-key-not-google-shaped-42"  # a second key of the pool, of no known shape
GOOGLE_KEY = "AIzaSyD-0123456789abcdefghijklmnopqrstu"
SUSPENDED = f"Permission denied: Consumer 'api_key:{GOOGLE_KEY}' has been suspended."

register_secrets(POOL_KEY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nothing to see", "nothing to see"),
        (SUSPENDED, "Permission denied: Consumer '[redacted]' has been suspended."),
        (f"key {GOOGLE_KEY}.", "key [redacted]."),
        (f"uses {POOL_KEY}!", "uses [redacted]!"),
        ("tenant gm-" + "A" * 43, "tenant [redacted]"),
        ('{"msg": "api_key:\\"x\\""}', '{"msg": "api_key:\\"x\\""}'),  # escapes stay whole
        ("AIza short", "AIza short"),
        ("gm-short", "gm-short"),
    ],
)
def test_scrub(text: str, expected: str) -> None:
    assert scrub(text) == expected
    assert scrub_bytes(text.encode()) == expected.encode()


@pytest.mark.parametrize("secret", [GOOGLE_KEY, POOL_KEY, f"api_key:{GOOGLE_KEY}"])
def test_a_secret_split_anywhere_over_two_chunks_never_passes(secret: str) -> None:
    event = b'data: {"error": {"message": "' + secret.encode() + b' bad"}}\r\n\r\n'
    for cut in range(1, len(event)):
        s = StreamScrubber()
        out = s.feed(event[:cut]) + s.feed(event[cut:]) + s.flush()
        assert secret.encode() not in out and b"[redacted]" in out, cut
        assert out.replace(b"[redacted]", b"") == event.replace(secret.encode(), b"")


def test_a_stream_without_secrets_passes_unchanged_and_unheld() -> None:
    s = StreamScrubber()
    events = [b'data: {"a": 1}\r\n\r\n', b'data: {"text": "Answer"}\r\n\r\n', b"[{}"]
    assert [s.feed(e) for e in events] == events
    assert s.flush() == b""


@pytest.mark.parametrize(
    "query",
    [
        "key=gm-secretvalue",
        "%6bey=gm-secretvalue",
        "%6B%65%79=gm-secretvalue",
        "KEY=gm-secretvalue",
        "Key=gm-secretvalue",
        "key+=gm-secretvalue",
        "+key=gm-secretvalue",
        "api_key=gm-secretvalue",
        "x-goog-api-key=gm-secretvalue",
        "alt=sse&key=gm-secretvalue",
        "foo=%67m-secretvalue-long-enough-to-be-a-key",
        "foo=gm%2Dsecretvalue-long-enough-to-be-a-key",
        "%67m-secretvalue-long-enough-to-be-a-key",
    ],
)
def test_no_spelling_of_a_key_parameter_reaches_the_access_line(query: str) -> None:
    scope = {
        "type": "http", "method": "GET", "path": "/v1beta/models", "client": ("10.0.0.1", 1),
        "query_string": query.encode(), "http_version": "1.1",
    }  # fmt: skip
    line = access_line(scope, 200, 0.001)
    assert "secretvalue" not in line, line
    assert "secretvalue" not in redact(f'"GET /v1beta/models?{query} HTTP/1.1" 200')


def test_log_records_of_any_logger_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install_redaction()
    tenant_key = "gm-" + "b" * 43
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info("calling %s?KEY=%s", "/x", "plain-secret")
        logging.getLogger("gemini_meter.x").warning("upstream said %r", SUSPENDED)
        logging.getLogger("other.server.access").info(  # shaped like uvicorn's access lines
            '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/v1/x?%6bey={tenant_key}", "1.1", 200
        )
        try:
            raise ValueError(f"bad key {UPSTREAM_KEY}")
        except ValueError:
            logging.getLogger("gemini_meter").exception("failed with %s", POOL_KEY)
    text = caplog.text
    for secret in ("plain-secret", GOOGLE_KEY, tenant_key, UPSTREAM_KEY, POOL_KEY):
        assert secret not in text, secret
    assert "REDACTED" in text and "[redacted]" in text
    uvicorn_record = next(r for r in caplog.records if r.name == "other.server.access")
    assert isinstance(uvicorn_record.args, tuple) and len(uvicorn_record.args) == 5  # shape kept


# -- end to end ---------------------------------------------------------------------------------


def _native(p: RunningProxy, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(
        method, f"{p.url}{path}", headers={"x-goog-api-key": p.key}, timeout=30, **kw
    )  # type: ignore[arg-type]


NATIVE = [
    ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", "generateContent"),
    ("POST", "/v1/models/gemini-2.5-flash:countTokens", "countTokens"),
    ("POST", "/v1beta/models/gemini-embedding-001:embedContent", "embedContent"),
    ("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "streamGenerateContent"),
    ("GET", "/v1beta/models", "listModels"),
    ("GET", "/v1beta/models/gemini-2.5-flash", "getModel"),
]


@pytest.mark.parametrize(("method", "path", "action"), NATIVE)
@pytest.mark.parametrize("status", [403, 400, 429, 500])
def test_native_error_bodies_never_carry_a_key(
    proxy: RunningProxy, method: str, path: str, action: str, status: int
) -> None:
    body = error_body(status, f"{SUSPENDED} Also {UPSTREAM_KEY} and {POOL_KEY}.")
    proxy.fake.enqueue(*[ErrorReply(body, status)] * 3, action=action)
    r = _native(proxy, method, path, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == status
    for secret in (GOOGLE_KEY, UPSTREAM_KEY, POOL_KEY):
        assert secret not in r.text
    assert "[redacted]" in r.json()["error"]["message"]


@pytest.mark.parametrize("alt", ["sse", None])
def test_an_error_event_split_over_two_chunks_is_scrubbed(proxy: RunningProxy, alt: str) -> None:
    first = stream_events(["Hello"])[0]
    error = orjson.dumps({"error": {"code": 403, "message": SUSPENDED, "status": "DENIED"}})
    cut = error.index(GOOGLE_KEY.encode()) + 9  # in the middle of the key
    if alt == "sse":
        events: list[object] = [first, b"data: " + error[:cut], error[cut:] + b"\r\n\r\n"]
    else:
        events = [b"[" + orjson.dumps(first), b",\r\n" + error[:cut], error[cut:] + b"]"]
    proxy.fake.enqueue(StreamReply(events), action="streamGenerateContent")
    query = "?alt=sse" if alt else ""
    path = f"/v1beta/models/gemini-2.5-flash:streamGenerateContent{query}"
    r = _native(proxy, "POST", path, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 200
    assert GOOGLE_KEY[:12] not in r.text and "[redacted]" in r.text
    assert "Hello" in r.text


def test_openai_routes_scrub_errors_and_stream_error_events(proxy: RunningProxy) -> None:
    auth = {"authorization": f"Bearer {proxy.key}"}
    chat = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
    proxy.fake.enqueue(
        ErrorReply(error_body(400, f"Bad request for {UPSTREAM_KEY}"), 400),
        action="generateContent",
    )
    r = httpx.post(f"{proxy.url}/v1/chat/completions", headers=auth, json=chat)
    assert r.status_code == 400 and UPSTREAM_KEY not in r.text and "[redacted]" in r.text
    error = {"error": {"code": 500, "message": SUSPENDED, "status": "INTERNAL"}}
    events = [stream_events(["a"])[0], error]
    proxy.fake.enqueue(StreamReply(events), action="streamGenerateContent")
    r = httpx.post(f"{proxy.url}/v1/chat/completions", headers=auth, json=chat | {"stream": True})
    assert r.status_code == 200 and GOOGLE_KEY not in r.text and "[redacted]" in r.text


def test_no_secret_in_metrics_or_logs_after_key_quoting_errors(
    start_proxy: Callable[..., RunningProxy],
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = start_proxy(sqlite_url, gemini_api_key=f"{UPSTREAM_KEY},{POOL_KEY}")
    p.fake.api_keys = {UPSTREAM_KEY, POOL_KEY}
    with caplog.at_level(logging.DEBUG):
        p.fake.enqueue(JsonReply(error_body(403, SUSPENDED), 403), action="generateContent")
        _native(p, "POST", f"/v1beta/models/x:generateContent?%6bey={p.key}&KEY={p.key}", json={})
        _native(p, "POST", "/v1beta/models/gemini-2.5-flash:generateContent", json={})
        metrics = httpx.get(f"{p.url}/metrics").text
    for secret in (UPSTREAM_KEY, POOL_KEY, GOOGLE_KEY, p.key):
        assert secret not in metrics
        assert secret not in caplog.text, secret
    assert "REDACTED" in caplog.text  # the access lines were there, redacted
