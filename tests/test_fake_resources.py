"""The fake's stateful resources speak Google's protocols: the real google-genai SDK (pointed at
the fake directly) and raw REST clients drive Files, context caches, Batch mode, Imagen and Veo."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import _api_client, types
from google.genai import errors as genai_errors

from tests.conftest import UPSTREAM_KEY as KEY
from tests.fakes.caches import IMAGE_TOKENS
from tests.fakes.gemini import ErrorReply, FakeGemini
from tests.fakes.media import png
from tests.fakes.rest import GOOGLE_ORIGIN, parse_time
from tests.fakes.server import serve

MODEL = "gemini-2.5-flash"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
BIG_TEXT = "cache me " * 600  # 5,400 characters: 1,350 tokens, over the 1,024 minimum


@pytest.fixture
def url(fake_server: tuple[FakeGemini, str]) -> str:
    return fake_server[1]


@pytest.fixture(scope="module")
def clients(
    fake_server: tuple[FakeGemini, str],
) -> Iterator[tuple[genai.Client, httpx.Client]]:
    # Made once: building a client takes a quarter of a second (its TLS context). The served
    # fake and the `fake` fixture that resets it for every test come from conftest.
    url = fake_server[1]
    sdk = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=url))
    with httpx.Client(base_url=url, headers={"x-goog-api-key": KEY}, timeout=10) as rest:
        yield sdk, rest


@pytest.fixture(scope="module")
def keyless() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def client(clients: tuple[genai.Client, httpx.Client], fake: FakeGemini) -> genai.Client:
    return clients[0]


@pytest.fixture
def http(clients: tuple[genai.Client, httpx.Client], fake: FakeGemini) -> httpx.Client:
    return clients[1]


@pytest.fixture
def clock(fake: FakeGemini) -> list[datetime]:
    """The fake's clock, frozen at T0; a test moves it with ``clock[0] += ...``."""
    now = [T0]
    fake.resources.env.clock = lambda: now[0]
    return now


@pytest.fixture
def small_chunks(fake: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> int:
    """The SDK reads its chunk size from a module global at call time: make it 64 KiB."""
    size = 64 * 1024
    monkeypatch.setattr(_api_client, "CHUNK_SIZE", size)
    fake.resources.files.chunk_granularity = size
    return size


def named(resource: Any) -> str:
    """A resource's name, which the SDK's types leave optional."""
    assert isinstance(resource.name, str)
    return resource.name


def upload(client: genai.Client, data: bytes, mime: str = "text/plain", **config: Any) -> Any:
    config_ = types.UploadFileConfig(mime_type=mime, **config)
    return client.files.upload(file=io.BytesIO(data), config=config_)


def start_upload(http: httpx.Client, size: int, mime: str = "text/plain") -> str:
    headers = {
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(size),
        "X-Goog-Upload-Header-Content-Type": mime,
    }
    r = http.post("/upload/v1beta/files", json={"file": {"display_name": "raw"}}, headers=headers)
    assert r.status_code == 200 and r.headers["x-goog-upload-status"] == "active"
    return r.headers["x-goog-upload-url"]


def chunk(
    c: httpx.Client, url: str, data: bytes, offset: int, command: str = "upload"
) -> httpx.Response:
    headers = {"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)}
    return c.post(url, content=data, headers=headers)  # no key: the URL is the credential


# -- Files ----------------------------------------------------------------------------------


def test_sdk_upload_in_chunks_follows_the_upload_url(
    client: genai.Client, fake: FakeGemini, url: str, small_chunks: int, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 800 + b"tail"  # 204,804 bytes: three full chunks and a short one
    path = tmp_path / "notes.txt"
    path.write_bytes(data)

    f = client.files.upload(file=path, config={"display_name": "Notes"})

    start, *chunks = fake.requests
    assert (start.method, start.path, start.action) == ("POST", "/upload/v1/files", "files.upload")
    assert {k: start.headers[k] for k in start.headers if k.startswith("x-goog-upload")} == {
        "x-goog-upload-protocol": "resumable",
        "x-goog-upload-command": "start",
        "x-goog-upload-header-content-length": str(len(data)),
        "x-goog-upload-header-content-type": "text/plain",
        "x-goog-upload-file-name": "notes.txt",
    }
    assert orjson.loads(start.body) == {
        "file": {"display_name": "Notes", "mime_type": "text/plain", "size_bytes": len(data)}
    }
    assert [c.headers["x-goog-upload-command"] for c in chunks] == ["upload"] * 3 + [
        "upload, finalize"
    ]
    assert [int(c.headers["x-goog-upload-offset"]) for c in chunks] == [0, 65536, 131072, 196608]
    assert all(c.action == "files.uploadChunk" for c in chunks)
    assert all("x-goog-api-key" not in c.headers for c in chunks)  # the SDK sends none
    assert b"".join(c.body for c in chunks) == data
    assert chunks[0].query["upload_id"] and chunks[0].query["upload_protocol"] == "resumable"

    assert f.name and f.name.startswith("files/") and f.display_name == "Notes"
    assert (f.size_bytes, f.mime_type, f.state, f.source) == (
        len(data),
        "text/plain",
        "ACTIVE",
        "UPLOADED",
    )
    sha_hex = hashlib.sha256(data).hexdigest().encode()
    assert f.sha256_hash == base64.b64encode(sha_hex).decode()
    assert f.uri == f"https://generativelanguage.googleapis.com/v1beta/{f.name}"
    assert f.create_time and f.expiration_time == f.create_time + timedelta(hours=48)


def test_sdk_upload_beyond_one_default_chunk(client: genai.Client, fake: FakeGemini) -> None:
    data = b"\x07" * (8 * 1024 * 1024 + 10)  # the SDK's CHUNK_SIZE is 8 MiB

    f = upload(client, data, "application/octet-stream")

    chunks = fake.calls("files.uploadChunk")
    assert [len(c.body) for c in chunks] == [8 * 1024 * 1024, 10]
    assert f.size_bytes == len(data)


def test_the_sdk_follows_the_upload_url_to_whatever_host_it_names(
    client: genai.Client, fake: FakeGemini
) -> None:
    elsewhere = FakeGemini(api_key=KEY)
    with serve(elsewhere) as other:
        fake.resources.files.upload_origin = other  # as Google names its own host

        with pytest.raises(genai_errors.ClientError) as err:
            upload(client, b"hello")

    assert [r.action for r in fake.requests] == ["files.upload"]
    (went,) = elsewhere.requests  # the chunk went straight to the other host
    assert went.action == "files.uploadChunk" and went.body == b"hello"
    assert err.value.code == 404  # that host holds no such session (said with status final)


def test_resumable_protocol_over_rest(
    http: httpx.Client, keyless: httpx.Client, fake: FakeGemini
) -> None:
    fake.resources.files.chunk_granularity = 4
    session = start_upload(http, 10)
    assert session.startswith(str(http.base_url).rstrip("/") + "/upload/v1beta/files?upload_id=")

    assert chunk(keyless, session, b"abcd", 0).headers["x-goog-upload-status"] == "active"
    queried = chunk(keyless, session, b"", 0, "query")
    assert queried.headers["x-goog-upload-size-received"] == "4"
    done = chunk(keyless, session, b"efghij", 4, "upload, finalize")
    assert done.headers["x-goog-upload-status"] == "final"
    assert done.json()["file"]["sizeBytes"] == "10"  # int64 travels as a string
    assert done.json()["file"]["displayName"] == "raw"
    again = chunk(keyless, session, b"x", 10)
    assert (again.status_code, again.headers["x-goog-upload-status"]) == (404, "final")

    cancelled = start_upload(http, 4)
    assert (
        chunk(keyless, cancelled, b"", 0, "cancel").headers["x-goog-upload-status"] == "cancelled"
    )
    assert chunk(keyless, cancelled, b"abcd", 0, "upload, finalize").status_code == 404


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([(b"abcd", 1, "upload")], "X-Goog-Upload-Offset '1'"),
        ([(b"abc", 0, "upload")], "multiple of 4 bytes"),
        ([(b"abcd", 0, "upload"), (b"ef", 4, "upload, finalize")], "differs from the declared"),
        ([(b"abcdefghijkl", 0, "upload, finalize")], "exceeds the declared"),
        ([(b"abcd", 0, "upload, stop")], "Invalid X-Goog-Upload-Command"),
    ],
)
def test_resumable_protocol_errors_end_the_session(
    http: httpx.Client,
    keyless: httpx.Client,
    fake: FakeGemini,
    steps: list[tuple[bytes, int, str]],
    message: str,
) -> None:
    fake.resources.files.chunk_granularity = 4
    session = start_upload(http, 10)
    for data, offset, command in steps:
        r = chunk(keyless, session, data, offset, command)
    assert r.status_code == 400 and message in r.json()["error"]["message"]
    assert r.headers["x-goog-upload-status"] == "final"  # else the SDK sleeps 7 s retrying
    assert chunk(keyless, session, b"", 0, "query").status_code == 404
    assert fake.resources.files.files == {}


def test_multipart_and_raw_uploads(http: httpx.Client) -> None:
    meta = orjson.dumps({"file": {"displayName": "pic", "name": "files/my-pic-1"}})
    body = (
        b"--BOUND\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
        + meta
        + b"\r\n--BOUND\r\nContent-Type: image/png\r\n\r\n"
        + png(2, 2)
        + b"\r\n--BOUND--\r\n"
    )
    r = http.post(
        "/upload/v1beta/files?uploadType=multipart",
        content=body,
        headers={"Content-Type": "multipart/related; boundary=BOUND"},
    )
    assert r.status_code == 200 and r.headers["x-goog-upload-status"] == "final"
    f = r.json()["file"]
    assert (f["name"], f["displayName"], f["mimeType"]) == ("files/my-pic-1", "pic", "image/png")
    assert f["sizeBytes"] == str(len(png(2, 2)))

    taken = http.post(
        "/upload/v1beta/files?uploadType=multipart",
        content=body,
        headers={"Content-Type": "multipart/related; boundary=BOUND"},
    )
    assert (taken.status_code, taken.json()["error"]["status"]) == (409, "ALREADY_EXISTS")

    raw = http.post(
        "/upload/v1/files",
        content=b"plain words",
        headers={"X-Goog-Upload-Protocol": "raw", "Content-Type": "text/plain"},
    )
    assert raw.json()["file"]["mimeType"] == "text/plain"
    assert http.post("/upload/v1/files", content=b"x").status_code == 400  # no protocol


def test_sdk_files_get_list_in_pages_delete(client: genai.Client, fake: FakeGemini) -> None:
    names = [upload(client, f"file {i}".encode()).name for i in range(3)]

    listed = [named(f) for f in client.files.list(config={"page_size": 2})]

    assert sorted(listed) == sorted(names)
    pages = fake.calls("files.list")
    assert [p.query.get("pageSize") for p in pages] == ["2", "2"]
    assert "pageToken" not in pages[0].query and pages[1].query["pageToken"]
    assert client.files.get(name=names[0]).name == names[0]

    client.files.delete(name=names[0])

    with pytest.raises(genai_errors.ClientError) as err:
        client.files.get(name=names[0])
    assert err.value.code == 403 and "or it may not exist" in str(err.value.message)
    assert sorted(named(f) for f in client.files.list()) == sorted(names[1:])


def test_a_file_is_usable_once_active_and_gone_after_48_hours(
    client: genai.Client, fake: FakeGemini, clock: list[datetime]
) -> None:
    fake.resources.files.processing_gets = 1
    f = upload(client, b"\x00" * 100, "video/mp4")
    part = types.Part.from_uri(file_uri=f.uri, mime_type="video/mp4")
    assert f.state == "PROCESSING"

    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model=MODEL, contents=[part, "describe"])
    assert err.value.status == "FAILED_PRECONDITION"
    assert client.files.get(name=f.name).state == "PROCESSING"
    assert client.files.get(name=f.name).state == "ACTIVE"
    assert client.models.generate_content(model=MODEL, contents=[part, "describe"]).text

    clock[0] += timedelta(hours=48)
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model=MODEL, contents=[part, "describe"])
    assert err.value.code == 403 and f.name.removeprefix("files/") in str(err.value.message)


def test_uploaded_files_cannot_be_downloaded(client: genai.Client, http: httpx.Client) -> None:
    f = upload(client, b"secret")
    with pytest.raises(ValueError, match="uploaded files can't be downloaded"):
        client.files.download(file=f)  # the SDK itself refuses a File without downloadUri
    r = http.get(f"/v1beta/{f.name}:download", params={"alt": "media"})
    assert (r.status_code, r.json()["error"]["status"]) == (400, "FAILED_PRECONDITION")


# -- Context caches -------------------------------------------------------------------------


def test_sdk_cache_lifecycle(client: genai.Client, fake: FakeGemini, clock: list[datetime]) -> None:
    tokens = len(BIG_TEXT) // 4 + 3  # contents, plus the system instruction "Be brief." (9 chars)
    cache = client.caches.create(
        model=MODEL,
        config={
            "contents": [BIG_TEXT],
            "system_instruction": "Be brief.",
            "ttl": "600s",
            "display_name": "manual",
        },
    )

    assert cache.name and cache.name.startswith("cachedContents/")
    assert cache.usage_metadata and cache.usage_metadata.total_token_count == tokens
    assert (cache.model, cache.display_name) == (f"models/{MODEL}", "manual")
    assert (cache.create_time, cache.expire_time) == (T0, T0 + timedelta(seconds=600))
    assert orjson.loads(fake.calls("cachedContents.create")[0].body)["ttl"] == "600s"

    reply = client.models.generate_content(
        model=MODEL, contents="Summarise.", config={"cached_content": cache.name}
    )
    usage = reply.usage_metadata
    assert usage and usage.cached_content_token_count == tokens
    assert usage.prompt_token_count == 12 + tokens  # the fixture's 12 new tokens plus the cache
    streamed = list(
        client.models.generate_content_stream(
            model=MODEL, contents="Summarise.", config={"cached_content": cache.name}
        )
    )
    last = streamed[-1].usage_metadata
    assert last and last.cached_content_token_count == tokens

    clock[0] += timedelta(seconds=300)
    updated = client.caches.update(name=cache.name, config={"ttl": "7200s"})
    patch = fake.calls("cachedContents.patch")[0]
    assert (patch.method, patch.query, orjson.loads(patch.body)) == ("PATCH", {}, {"ttl": "7200s"})
    assert updated.expire_time == T0 + timedelta(seconds=300 + 7200)
    assert updated.update_time == T0 + timedelta(seconds=300)
    assert [named(c) for c in client.caches.list()] == [cache.name]

    client.caches.delete(name=cache.name)

    for call in (
        lambda: client.caches.get(name=cache.name),
        lambda: client.models.generate_content(
            model=MODEL, contents="x", config={"cached_content": cache.name}
        ),
    ):
        with pytest.raises(genai_errors.ClientError) as err:
            call()
        assert err.value.code == 403
        assert err.value.message == "CachedContent not found (or permission denied)"
    assert list(client.caches.list()) == []


def test_a_cache_ends_at_its_expire_time(
    http: httpx.Client, clock: list[datetime], fake: FakeGemini
) -> None:
    at = T0 + timedelta(minutes=5)
    body: dict[str, Any] = {
        "model": f"models/{MODEL}",
        "contents": [{"role": "user", "parts": [{"text": BIG_TEXT}]}],
        "expireTime": at.isoformat().replace("+00:00", "Z"),
    }
    created = http.post("/v1beta/cachedContents", json=body).json()
    assert parse_time(created["expireTime"]) == at
    assert created["usageMetadata"] == {"totalTokenCount": len(BIG_TEXT) // 4}
    name = created["name"]

    moved = http.patch(
        f"/v1beta/{name}",
        params={"updateMask": "expireTime"},
        json={"expireTime": "2025-06-01T13:00:00Z"},
    )
    assert moved.json()["expireTime"] == "2025-06-01T13:00:00.000000Z"

    clock[0] = datetime(2025, 6, 1, 13, 0, tzinfo=UTC)
    assert http.get(f"/v1beta/{name}").status_code == 403
    assert fake.resources.caches.caches == {}


def test_a_cache_counts_an_uploaded_image(client: genai.Client) -> None:
    image = upload(client, png(1, 1), "image/png")
    part = types.Part.from_uri(file_uri=image.uri, mime_type="image/png")
    cache = client.caches.create(model=MODEL, config={"contents": [part, BIG_TEXT]})
    assert cache.usage_metadata and cache.usage_metadata.total_token_count == (
        IMAGE_TOKENS + len(BIG_TEXT) // 4
    )


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (
            lambda h, n: h.post(
                "/v1beta/cachedContents",
                json={"model": MODEL, "contents": [{"parts": [{"text": "tiny"}]}]},
            ),
            400,
            "Cached content is too small. total_token_count=1, min_total_token_count=1024",
        ),
        (
            lambda h, n: h.post(
                "/v1beta/cachedContents",
                json={"model": MODEL, "ttl": "60s", "expireTime": "2030-01-01T00:00:00Z"},
            ),
            400,
            "Only one of ttl and expire_time",
        ),
        (
            lambda h, n: h.post("/v1beta/cachedContents", json={"contents": []}),
            400,
            "CachedContent.model is required.",
        ),
        (lambda h, n: h.patch(f"/v1beta/{n}", json={"ttl": "soon"}), 400, "Invalid value at 'ttl'"),
        (
            lambda h, n: h.patch(f"/v1beta/{n}?updateMask=displayName", json={"displayName": "x"}),
            400,
            "Only the expiration",
        ),
        (
            lambda h, n: h.post(
                "/v1beta/models/gemini-2.5-pro:generateContent",
                json={"contents": [{"parts": [{"text": "x"}]}], "cachedContent": n},
            ),
            400,
            "Model used by GenerateContent request (models/gemini-2.5-pro) and CachedContent "
            "(models/gemini-2.5-flash) has to be the same.",
        ),
        (
            lambda h, n: h.post(
                f"/v1beta/models/{MODEL}:generateContent",
                json={
                    "contents": [],
                    "cachedContent": n,
                    "systemInstruction": {"parts": [{"text": "x"}]},
                },
            ),
            400,
            "CachedContent can not be used with GenerateContent request setting",
        ),
        (
            lambda h, n: h.get("/v1beta/cachedContents/nosuchcache"),
            403,
            "CachedContent not found (or permission denied)",
        ),
    ],
)
def test_cache_refusals(
    http: httpx.Client,
    call: Callable[[httpx.Client, str], httpx.Response],
    status: int,
    message: str,
) -> None:
    body = {"model": MODEL, "contents": [{"parts": [{"text": BIG_TEXT}]}]}
    name = http.post("/v1beta/cachedContents", json=body).json()["name"]
    r = call(http, name)
    assert r.status_code == status and message in r.json()["error"]["message"]


# -- Batch mode -----------------------------------------------------------------------------


def test_sdk_batch_with_inline_requests_polled_to_done(
    client: genai.Client, fake: FakeGemini, http: httpx.Client
) -> None:
    requests: list[Any] = [
        {
            "contents": [{"role": "user", "parts": [{"text": "one two three four"}]}],
            "metadata": {"key": "first"},
        },
        {
            "contents": [{"role": "user", "parts": [{"text": "five"}]}],
            "metadata": {"key": "second"},
        },
    ]
    job = client.batches.create(model=MODEL, src=requests, config={"display_name": "nightly"})

    sent = orjson.loads(fake.calls("batchGenerateContent")[0].body)
    assert sent["batch"]["displayName"] == "nightly"
    assert sent["batch"]["inputConfig"]["requests"]["requests"][0]["metadata"] == {"key": "first"}
    assert job.name and job.name.startswith("batches/") and job.state == "JOB_STATE_PENDING"
    assert (job.model, job.display_name) == (f"models/{MODEL}", "nightly")

    states = [client.batches.get(name=named(job)).state for _ in range(3)]
    assert states == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED", "JOB_STATE_SUCCEEDED"]

    done = client.batches.get(name=named(job))
    assert done.dest and done.dest.inlined_responses and done.end_time
    results = done.dest.inlined_responses
    assert [r.metadata for r in results] == [{"key": "first"}, {"key": "second"}]
    usages = [r.response.usage_metadata for r in results if r.response]
    assert [u.prompt_token_count for u in usages if u] == [5, 1]  # ceil(len(text) / 4)
    raw = http.get(f"/v1/{job.name}").json()
    assert raw["done"] is True and raw["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert raw["metadata"]["batchStats"] == {"requestCount": "2", "successfulRequestCount": "2"}
    assert raw["response"]["@type"].endswith("GenerateContentBatchOutput")
    assert raw["response"]["inlinedResponses"] == raw["metadata"]["output"]["inlinedResponses"]


def test_sdk_batch_from_an_input_file_writes_a_results_file(
    client: genai.Client, fake: FakeGemini
) -> None:
    lines = [
        {"key": "a", "request": {"contents": [{"parts": [{"text": "alpha"}]}]}},
        "not json",
        {"key": "c", "request": {"contents": [{"parts": [{"text": "gamma"}]}]}},
    ]
    data = b"".join((x.encode() if isinstance(x, str) else orjson.dumps(x)) + b"\n" for x in lines)
    source = upload(client, data, "jsonl", display_name="batch input")  # the guide's mime type
    fake.resources.batches.polls_per_state = None

    job = client.batches.create(model=MODEL, src=source.name)
    assert orjson.loads(fake.calls("batchGenerateContent")[0].body)["batch"]["inputConfig"] == {
        "fileName": source.name
    }
    assert client.batches.get(name=named(job)).state == "JOB_STATE_PENDING"  # no auto progress
    fake.resources.batches.finish(named(job))
    done = client.batches.get(name=named(job))

    assert done.state == "JOB_STATE_SUCCEEDED" and done.dest and done.dest.file_name
    results = client.files.download(file=done.dest.file_name)
    parsed = [orjson.loads(line) for line in results.splitlines()]
    assert [p.get("key") for p in parsed] == ["a", None, "c"]
    assert parsed[0]["response"]["usageMetadata"]["promptTokenCount"] == 2
    assert parsed[1]["error"]["code"] == 3  # INVALID_ARGUMENT, as a google.rpc.Status
    stored = client.files.get(name=done.dest.file_name)
    assert stored.source == "GENERATED" and stored.download_uri
    assert client.files.download(file=stored) == results  # a File with downloadUri downloads


def test_batch_requests_can_name_caches_and_files(client: genai.Client, http: httpx.Client) -> None:
    cache = client.caches.create(model=MODEL, config={"contents": [BIG_TEXT]})
    missing = "https://generativelanguage.googleapis.com/v1beta/files/nosuchfile"
    inline: Any = [
        {"contents": [{"parts": [{"text": "hi"}]}], "config": {"cached_content": cache.name}},
        {
            "contents": [
                {"parts": [{"file_data": {"file_uri": missing, "mime_type": "text/plain"}}]}
            ]
        },
    ]
    job = client.batches.create(model=MODEL, src=inline)
    while (done := client.batches.get(name=named(job))).state != "JOB_STATE_SUCCEEDED":
        pass

    assert done.dest and done.dest.inlined_responses
    first, second = done.dest.inlined_responses
    assert first.response and first.response.usage_metadata
    assert first.response.usage_metadata.cached_content_token_count == len(BIG_TEXT) // 4
    assert second.error and second.error.code == 7  # PERMISSION_DENIED
    stats = http.get(f"/v1beta/{job.name}").json()["metadata"]["batchStats"]
    assert stats == {"requestCount": "2", "successfulRequestCount": "1", "failedRequestCount": "1"}


def test_batches_cancel_delete_and_list(
    client: genai.Client, fake: FakeGemini, http: httpx.Client
) -> None:
    fake.resources.batches.polls_per_state = None
    src: Any = [{"contents": [{"parts": [{"text": "x"}]}]}]
    names = [named(client.batches.create(model=MODEL, src=src)) for _ in range(3)]

    listed = [named(b) for b in client.batches.list(config={"page_size": 2})]
    assert sorted(listed) == sorted(names) and len(fake.calls("batches.list")) == 2

    client.batches.cancel(name=names[0])
    cancelled = http.get(f"/v1beta/{names[0]}").json()
    assert cancelled["metadata"]["state"] == "BATCH_STATE_CANCELLED" and cancelled["done"] is True
    assert cancelled["error"]["code"] == 1
    with pytest.raises(genai_errors.ClientError) as err:
        client.batches.cancel(name=names[0])
    assert err.value.status == "FAILED_PRECONDITION"

    fake.resources.batches.final_state = "BATCH_STATE_FAILED"
    fake.resources.batches.advance(names[1])
    assert fake.resources.batches.advance(names[1]).state == "BATCH_STATE_FAILED"
    assert client.batches.get(name=names[1]).state == "JOB_STATE_FAILED"

    client.batches.delete(name=names[2])  # running or not, the batch is forgotten
    with pytest.raises(genai_errors.ClientError) as err:
        client.batches.get(name=names[2])
    assert err.value.code == 404
    assert sorted(named(b) for b in client.batches.list()) == sorted(names[:2])


def test_a_responder_scripts_batch_results(client: genai.Client, fake: FakeGemini) -> None:
    def responder(model: str, request: dict[str, Any], index: int) -> dict[str, Any]:
        if index == 1:
            return {"error": {"code": 8, "message": "quota"}}
        return {"candidates": [], "usageMetadata": {"promptTokenCount": 40, "totalTokenCount": 40}}

    fake.resources.batches.responder = responder
    fake.resources.batches.polls_per_state = 0  # done at the first poll
    src: Any = [{"contents": "a"}, {"contents": "b"}]
    job = client.batches.create(model=MODEL, src=src)
    done = client.batches.get(name=named(job))
    assert done.dest and done.dest.inlined_responses
    ok, failed = done.dest.inlined_responses
    assert ok.response and ok.response.usage_metadata
    assert ok.response.usage_metadata.prompt_token_count == 40
    assert failed.error and (failed.error.code, failed.error.message) == (8, "quota")


def test_sdk_async_batch_embeddings(client: genai.Client, fake: FakeGemini) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_embeddings is marked experimental
        job = client.batches.create_embeddings(
            model="gemini-embedding-001",
            src={"inlined_requests": {"contents": ["short", "a longer text"]}},
        )
    assert fake.calls("asyncBatchEmbedContent")
    fake.resources.batches.finish(job.name or "")
    done = client.batches.get(name=named(job) or "")
    assert done.dest and done.dest.inlined_embed_content_responses
    counts = [
        r.response.token_count for r in done.dest.inlined_embed_content_responses if r.response
    ]
    assert counts == [2, 4]


# -- Imagen and Veo ---------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_imagen_predict(http: httpx.Client, fake: FakeGemini) -> None:
    path = "/v1beta/models/imagen-4.0-generate-001:predict"
    body: dict[str, Any] = {
        "instances": [{"prompt": "a red boat"}],
        "parameters": {"sampleCount": 3, "aspectRatio": "16:9"},
    }

    predictions = http.post(path, json=body).json()["predictions"]

    assert [p["mimeType"] for p in predictions] == ["image/png"] * 3
    assert {_png_size(base64.b64decode(p["bytesBase64Encoded"])) for p in predictions} == {(16, 9)}
    default = http.post(path, json={"instances": [{"prompt": "x"}]}).json()["predictions"]
    assert len(default) == 4

    fake.resources.media.filtered = 1
    body["parameters"] |= {"includeRaiReason": True}
    filtered = http.post(path, json=body).json()["predictions"]
    assert ["bytesBase64Encoded" in p for p in filtered] == [True, True, False]
    assert "raiFilteredReason" in filtered[2]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (
            "imagen-4.0-generate-001:predict",
            {"instances": [{"prompt": "x"}], "parameters": {"sampleCount": 5}},
            400,
            "sampleCount",
        ),
        (
            "imagen-4.0-generate-001:predict",
            {"instances": [{"prompt": "x"}], "parameters": {"aspectRatio": "2:1"}},
            400,
            "aspect",
        ),
        ("imagen-4.0-generate-001:predict", {"instances": []}, 400, "non-empty"),
        (
            "gemini-2.5-flash:predict",
            {"instances": [{"prompt": "x"}]},
            404,
            "is not supported for predict",
        ),
        (
            "veo-3.0-generate-001:predictLongRunning",
            {"instances": [{"prompt": "x"}], "parameters": {"durationSeconds": 5}},
            400,
            "[4, 6, 8]",
        ),
        (
            "veo-2.0-generate-001:predictLongRunning",
            {"instances": [{"prompt": "x"}], "parameters": {"durationSeconds": 9}},
            400,
            "[5, 6, 7, 8]",
        ),
        ("veo-3.0-generate-001:predictLongRunning", {"instances": [{}]}, 400, "prompt or an image"),
        (
            "imagen-4.0-generate-001:predictLongRunning",
            {"instances": [{"prompt": "x"}]},
            404,
            "not supported for predictLongRunning",
        ),
    ],
)
def test_media_refusals(
    http: httpx.Client, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    r = http.post(f"/v1beta/models/{path}", json=body)
    assert r.status_code == status and message in r.json()["error"]["message"]


def test_veo_operation_polled_over_rest_and_by_the_sdk(
    http: httpx.Client, client: genai.Client, fake: FakeGemini
) -> None:
    fake.resources.media.polls_until_done = 2
    body: dict[str, Any] = {
        "instances": [{"prompt": "waves"}],
        "parameters": {"durationSeconds": 6, "aspectRatio": "9:16", "sampleCount": 2},
    }

    started = http.post("/v1beta/models/veo-3.0-generate-001:predictLongRunning", json=body).json()

    name = started["name"]
    assert name.startswith("models/veo-3.0-generate-001/operations/") and "done" not in started
    assert http.get(f"/v1beta/{name}").json() == {"name": name}
    assert fake.requests[-1].action == "operations.get"
    done = http.get(f"/v1beta/{name}").json()
    assert done["done"] is True and done["response"]["@type"].endswith("PredictLongRunningResponse")
    samples = done["response"]["generateVideoResponse"]["generatedSamples"]
    assert len(samples) == 2  # no duration in the reply: it is the request's durationSeconds
    uri = samples[0]["video"]["uri"]
    assert uri.startswith("https://generativelanguage.googleapis.com/v1beta/files/")
    file_path = uri.removeprefix("https://generativelanguage.googleapis.com")
    video = http.get(file_path)  # the URI's own path and query (alt=media) on the fake
    assert video.headers["content-type"] == "video/mp4" and video.content.startswith(b"\x00\x00")

    pending = types.GenerateVideosOperation(name=name)  # type: ignore[call-arg]
    op = client.operations.get(pending)
    assert op.done and op.result and op.result.generated_videos
    sdk_video = op.result.generated_videos[0].video
    assert sdk_video and sdk_video.uri == uri
    assert client.files.download(file=sdk_video) == video.content  # the SDK parses the https URI
    stored = client.files.get(name=file_path.split("/")[-1].split(":")[0])
    assert (stored.source, stored.mime_type) == ("GENERATED", "video/mp4")


def test_veo_operation_errors_and_filtering(http: httpx.Client, fake: FakeGemini) -> None:
    start = "/v1beta/models/veo-2.0-generate-001:predictLongRunning"
    fake.resources.media.filtered = 1
    name = http.post(start, json={"instances": [{"prompt": "x"}]}).json()["name"]
    filtered = http.get(f"/v1beta/{name}").json()["response"]["generateVideoResponse"]
    assert filtered["raiMediaFilteredCount"] == 1 and "generatedSamples" not in filtered

    fake.resources.media.video_error = {"code": 3, "message": "prompt refused"}
    name = http.post(start, json={"instances": [{"prompt": "x"}]}).json()["name"]
    assert http.get(f"/v1beta/{name}").json()["error"]["message"] == "prompt refused"
    missing = http.get("/v1beta/models/veo-2.0-generate-001/operations/nosuchop")
    assert missing.status_code == 404


def test_the_sdk_refuses_imagen_and_veo_in_gemini_api_mode(client: genai.Client) -> None:
    refused = pytest.raises(ValueError, match="only supported in Gemini Enterprise Agent Platform")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generate_images also warns that it is deprecated
        with refused:
            client.models.generate_images(model="imagen-4.0-generate-001", prompt="x")
        with refused:
            client.models.generate_videos(model="veo-3.0-generate-001", prompt="x")


# -- routing, keys, scripting ---------------------------------------------------------------


def test_resources_check_the_key_and_serve_both_versions(http: httpx.Client) -> None:
    upload_reply = http.post(
        "/upload/v1beta/files",
        content=b"x",
        headers={"X-Goog-Upload-Protocol": "raw", "Content-Type": "text/plain"},
    )
    name = upload_reply.json()["file"]["name"]
    for version in ("v1", "v1beta"):
        assert http.get(f"/{version}/files").json()["files"][0]["name"] == name
    bad = http.get("/v1beta/files", headers={"x-goog-api-key": "wrong"})
    assert bad.status_code == 400 and "API_KEY_INVALID" in bad.text
    unknown = http.get("/v1beta/tunedModels/x/operations")
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"


def test_scripted_replies_by_resource_action(
    http: httpx.Client, fake: FakeGemini, client: genai.Client
) -> None:
    f = upload(client, b"abc")
    fake.enqueue(ErrorReply(500), action="files.get")
    assert http.get(f"/v1beta/{f.name}").status_code == 500
    assert http.get(f"/v1beta/{f.name}").status_code == 200
    assert fake.pending == 0


def test_list_pages_refuse_a_foreign_token(http: httpx.Client) -> None:
    for i in range(3):
        http.post(
            "/upload/v1beta/files",
            content=b"%d" % i,
            headers={"X-Goog-Upload-Protocol": "raw", "Content-Type": "text/plain"},
        )
    first = http.get("/v1beta/files", params={"pageSize": 2}).json()
    assert len(first["files"]) == 2 and first["nextPageToken"]
    second = http.get("/v1beta/files", params={"pageSize": 2, "pageToken": first["nextPageToken"]})
    assert len(second.json()["files"]) == 1 and "nextPageToken" not in second.json()
    foreign = http.get("/v1beta/cachedContents", params={"pageToken": first["nextPageToken"]})
    assert foreign.status_code == 400
    assert http.get("/v1beta/cachedContents").json() == {}  # an empty list is an empty object


def test_downloads_may_redirect_to_keyless_storage(
    client: genai.Client, fake: FakeGemini, url: str, http: httpx.Client, keyless: httpx.Client
) -> None:
    fake.resources.files.download_redirect = True
    start = "/v1beta/models/veo-3.0-generate-001:predictLongRunning"
    name = http.post(start, json={"instances": [{"prompt": "x"}]}).json()["name"]
    done = http.get(f"/v1beta/{name}").json()
    uri = done["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]

    r = http.get(uri.removeprefix(GOOGLE_ORIGIN))

    assert r.status_code == 302 and r.headers["location"].startswith(f"{url}/_fake_storage/")
    stored = keyless.get(r.headers["location"])  # no key: the URL is the credential
    assert stored.status_code == 200 and stored.headers["content-type"] == "video/mp4"
    assert client.files.download(file=types.Video(uri=uri)) == stored.content  # SDK follows
