"""The Files API through the proxy: uploads relayed chunk by chunk with the proxy's own upload
URL, a ledger row per upload, and every file visible to the tenant that uploaded it only."""

from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import _api_client, types
from google.genai import errors as genai_errors

from proxy.caller import Caller
from proxy.db import queries
from proxy.db.engine import make_engine, make_sessionmaker
from proxy.db.resources import add_resource
from proxy.errors import BadRequest
from proxy.native.files import file_name, upload_headers
from proxy.resources.references import may_reference, referenced_names
from tests.conftest import RunningProxy, run_sync
from tests.fakes.gemini import FakeGemini

MODEL = "gemini-2.5-flash"


@pytest.fixture
def small_chunks(fake: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> int:
    """The SDK reads its chunk size from a module global at call time: make it 64 KiB."""
    size = 64 * 1024
    monkeypatch.setattr(_api_client, "CHUNK_SIZE", size)
    fake.resources.files.chunk_granularity = size
    return size


def upload(client: genai.Client, data: bytes, mime: str = "text/plain") -> types.File:
    return client.files.upload(file=io.BytesIO(data), config={"mime_type": mime})


def named(resource: Any) -> str:
    assert isinstance(resource.name, str)
    return resource.name


# -- unit: the pure parts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [("abc123", "files/abc123"), ("files/abc-1", "files/abc-1"), ("files/ABC", "files/abc")],
)
def test_file_names_are_normalised(raw: str, name: str) -> None:
    assert file_name(raw) == name


@pytest.mark.parametrize(
    "raw", ["", "files/", "files/a/b", "files/a.b", "x" * 41, "../x", "files/é", "a b"]
)
def test_bad_file_names_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest, match="Invalid file name"):
        file_name(raw)


def test_only_upload_protocol_headers_reach_the_client() -> None:
    upstream = {
        "x-goog-upload-status": "active",
        "x-goog-upload-url": "https://generativelanguage.googleapis.com/upload?upload_id=G",
        "x-guploader-uploadid": "G",
        "x-goog-upload-chunk-granularity": "8388608",
    }
    assert upload_headers(upstream) == {
        "x-goog-upload-status": "active",
        "x-goog-upload-chunk-granularity": "8388608",
    }


G = "https://generativelanguage.googleapis.com"


@pytest.mark.parametrize(
    ("request_body", "names"),
    [
        ({"contents": [{"parts": [{"text": "files/abc is just text"}]}]}, []),
        (
            {"contents": [{"parts": [{"fileData": {"fileUri": f"{G}/v1beta/files/abc"}}]}]},
            ["files/abc"],
        ),
        (
            {"contents": [{"parts": [{"file_data": {"file_uri": f"{G}/v1/files/AbC"}}]}]},
            ["files/abc"],
        ),
        ({"contents": [{"parts": [{"fileData": {"fileUri": "files/x1"}}]}]}, ["files/x1"]),
        (
            {
                "contents": [
                    {
                        "parts": [
                            {
                                "fileData": {
                                    "fileUri": f"{G}/download/v1beta/files/v:download?alt=media"
                                }
                            }
                        ]
                    }
                ]
            },
            ["files/v"],
        ),
        ({"contents": [{"parts": [{"fileData": {"fileUri": "https://youtu.be/x"}}]}]}, []),
        ({"contents": [{"parts": [{"fileData": {"fileUri": "https://x.test/files/a"}}]}]}, []),
        ({"cachedContent": "cachedContents/c1"}, ["cachedContents/c1"]),
        ({"cached_content": "c2"}, ["cachedContents/c2"]),
        (
            {
                "cachedContent": "cachedContents/c",
                "contents": [
                    {"parts": [{"fileData": {"fileUri": "files/a"}}]},
                    {"parts": [{"fileData": {"fileUri": "files/a"}}, {"text": "again"}]},
                ],
            },
            ["cachedContents/c", "files/a"],
        ),
    ],
)
def test_referenced_names(request_body: dict[str, Any], names: list[str]) -> None:
    assert referenced_names(request_body) == names


def test_bodies_without_markers_are_not_walked() -> None:
    assert not may_reference(b'{"contents": [{"parts": [{"text": "hello"}]}]}')
    assert may_reference(b'{"cachedContent": "cachedContents/x"}')
    assert may_reference(b'{"fileUri": "files/x"}')


# -- e2e: the SDK through the proxy ----------------------------------------------------------


def test_sdk_upload_in_chunks_through_the_proxy_then_generate(
    proxy: RunningProxy, sdk: Callable[[str, str], genai.Client], small_chunks: int
) -> None:
    client = sdk(proxy.url, proxy.key)
    data = bytes(range(256)) * 800 + b"tail"  # 204,804 bytes: four chunks of 64 KiB at most

    f = upload(client, data)

    fake = proxy.fake
    start, *chunks = [r for r in fake.requests if r.action and r.action.startswith("files.")]
    assert start.action == "files.upload" and len(chunks) == 4
    assert [c.headers["x-goog-upload-command"] for c in chunks][-1] == "upload, finalize"
    assert b"".join(c.body for c in chunks) == data
    assert f.size_bytes == len(data) and f.mime_type == "text/plain"
    [row] = proxy.rows(1)
    assert (row["operation"], row["status"], row["resource"]) == ("files.upload", 200, f.name)
    assert row["cost_usd"] == Decimal(0) and row["priced"]
    assert row["detail"] == {"bytes": len(data), "mimeType": "text/plain"}
    scraped = httpx.get(f"{proxy.url}/metrics").text
    assert (
        'gemini_meter_resource_calls_total{operation="files.upload",status_class="2xx",'
        'tenant="team-a"}' in scraped
    )

    usage = httpx.get(
        f"{proxy.url}/admin/usage?group_by=operation",
        headers={"authorization": "Bearer admin-token-for-tests"},
    )
    assert usage.status_code == 200, usage.text
    assert [(r["operation"], r["requests"]) for r in usage.json()] == [("files.upload", 1)]

    reply = client.models.generate_content(
        model=MODEL,
        contents=[types.Part.from_uri(file_uri=f.uri or "", mime_type="text/plain"), "summary?"],
    )
    assert reply.text
    assert fake.calls("generateContent")


def test_sdk_upload_beyond_one_default_chunk(
    proxy: RunningProxy, sdk: Callable[[str, str], genai.Client]
) -> None:
    data = b"\x07" * (8 * 1024 * 1024 + 10)  # the SDK's CHUNK_SIZE is 8 MiB
    f = upload(sdk(proxy.url, proxy.key), data, "application/octet-stream")
    chunks = proxy.fake.calls("files.uploadChunk")
    assert [len(c.body) for c in chunks] == [8 * 1024 * 1024, 10]
    assert f.size_bytes == len(data)


def test_the_client_never_sees_googles_upload_url(proxy: RunningProxy) -> None:
    with httpx.Client(base_url=proxy.url, headers={"x-goog-api-key": proxy.key}) as http:
        r = http.post(
            "/upload/v1beta/files",
            json={"file": {"display_name": "raw"}},
            headers={
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": "5",
                "X-Goog-Upload-Header-Content-Type": "text/plain",
            },
        )
    assert r.status_code == 200 and r.headers["x-goog-upload-status"] == "active"
    url = r.headers["x-goog-upload-url"]
    assert url.startswith(f"{proxy.url}/upload/v1beta/files?upload_id=")
    [session] = proxy.fake.resources.files.sessions
    assert session not in url and session not in str(r.headers)
    assert "x-guploader-uploadid" not in r.headers
    assert proxy.rows(0, timeout=0.2) == []  # nothing recorded before the upload ends


def test_an_upload_moves_between_replicas(
    start_proxy: Callable[..., RunningProxy], pg_url: str, sdk: Callable[[str, str], genai.Client]
) -> None:
    a, b = start_proxy(pg_url), start_proxy(pg_url)
    a.fake.resources.files.chunk_granularity = 64 * 1024
    with httpx.Client(timeout=10) as http:
        r = http.post(
            f"{a.url}/upload/v1/files",
            json={"file": {}},
            headers={
                "x-goog-api-key": a.key,
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(64 * 1024 + 3),
                "X-Goog-Upload-Header-Content-Type": "text/plain",
            },
        )
        path = r.headers["x-goog-upload-url"].removeprefix(a.url)
        first = http.post(  # to the other replica
            f"{b.url}{path}",
            content=b"a" * 64 * 1024,
            headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"},
        )
        assert first.headers["x-goog-upload-status"] == "active"
        last = http.post(
            f"{a.url}{path}",
            content=b"end",
            headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "65536"},
        )
        assert last.status_code == 200, last.text
        name = last.json()["file"]["name"]
        again = http.post(
            f"{b.url}{path}",
            content=b"x",
            headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"},
        )
        assert again.status_code == 404 and again.headers["x-goog-upload-status"] == "final"
    rows = a.rows(1)
    assert [(r["operation"], r["resource"], r["status"]) for r in rows] == [
        ("files.upload", name, 200)
    ]
    assert rows[0]["detail"] == {"bytes": 64 * 1024 + 3, "mimeType": "text/plain"}
    got = httpx.get(f"{b.url}/v1/{name}", headers={"x-goog-api-key": b.key})
    assert got.status_code == 200 and got.json()["name"] == name  # one tenant, any replica


def test_multipart_upload_is_recorded(proxy: RunningProxy) -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Type: application/json\r\n\r\n{{"file": {{"displayName": "m"}}}}'
        f"\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\nhello multipart\r\n--{boundary}--"
    ).encode()
    r = httpx.post(
        f"{proxy.url}/upload/v1beta/files?uploadType=multipart",
        content=body,
        headers={
            "x-goog-api-key": proxy.key,
            "Content-Type": f"multipart/related; boundary={boundary}",
        },
    )
    assert r.status_code == 200, r.text
    name = r.json()["file"]["name"]
    [row] = proxy.rows(1)
    assert (row["operation"], row["resource"]) == ("files.upload", name)
    assert row["detail"] == {"bytes": len(b"hello multipart"), "mimeType": "text/plain"}


def test_tenant_b_gets_404_for_a_file_of_tenant_a_in_every_verb(
    start_proxy: Callable[..., RunningProxy],
    db_url: str,
    sdk: Callable[[str, str], genai.Client],
) -> None:
    proxy = start_proxy(db_url)
    a = sdk(proxy.url, proxy.key)
    b = sdk(proxy.url, proxy.new_key("team-b"))
    f = upload(a, b"secret notes of team a")
    name = named(f)

    for attempt in (
        lambda: b.files.get(name=name),
        lambda: b.files.delete(name=name),
        lambda: b.files.download(file=name),
        lambda: b.models.generate_content(
            model=MODEL,
            contents=[types.Part.from_uri(file_uri=f.uri or "", mime_type="text/plain"), "hi"],
        ),
        lambda: b.models.count_tokens(
            model=MODEL, contents=[types.Part.from_uri(file_uri=name, mime_type="text/plain")]
        ),
    ):
        with pytest.raises(genai_errors.ClientError) as err:
            attempt()
        assert err.value.code == 404 and err.value.status == "NOT_FOUND"
    assert list(b.files.list()) == []
    assert [x.name for x in a.files.list()] == [name]
    assert a.files.get(name=name).display_name is None
    assert not proxy.fake.calls("generateContent")  # never reached the upstream
    a.files.delete(name=name)
    assert list(a.files.list()) == []
    with pytest.raises(genai_errors.ClientError) as err:
        a.files.get(name=name)
    assert err.value.code == 404


async def _own(url: str, name: str, tenant: str) -> None:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            t = await queries.get_tenant(session, tenant)
            assert t is not None
            await add_resource(session, name, "file", Caller(t.id, tenant, None))
            await session.commit()
    finally:
        await engine.dispose()


def test_a_generated_file_downloads_streamed_to_its_tenant_only(proxy: RunningProxy) -> None:
    # Google serves downloads of generated files (batch results, videos) only; the feature that
    # makes one records it for its tenant, as done here by hand.
    data = bytes(range(256)) * 4096  # 1 MiB
    f = proxy.fake.resources.files.add(data, "application/jsonl", source="GENERATED")
    run_sync(lambda: _own(proxy.settings.database_url, f.name, proxy.tenant))
    other = proxy.new_key("team-b")
    for path in (f"/v1beta/{f.name}:download", f"/download/v1beta/{f.name}:download"):
        r = httpx.get(f"{proxy.url}{path}?alt=media", headers={"x-goog-api-key": proxy.key})
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-type"] == "application/jsonl"
        refused = httpx.get(f"{proxy.url}{path}?alt=media", headers={"x-goog-api-key": other})
        assert refused.status_code == 404
    rows = proxy.rows(2)
    assert [(r["operation"], r["resource"], r["status"]) for r in rows] == [
        ("files.download", f.name, 200)
    ] * 2


def test_openai_route_refuses_another_tenants_file(
    proxy: RunningProxy, sdk: Callable[[str, str], genai.Client]
) -> None:
    f = upload(sdk(proxy.url, proxy.key), b"an image, say", "image/png")
    image = {"type": "image_url", "image_url": {"url": f.uri}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": [image]}]}
    r = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {proxy.new_key('team-b')}"},
        json=body,
    )
    assert r.status_code == 404 and "not found" in r.json()["error"]["message"]
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}  # OpenAI's envelope
    ok = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {proxy.key}"},
        json=body,
    )
    assert ok.status_code == 200, ok.text


def test_files_list_pages_through_the_tenants_own_files(
    proxy: RunningProxy, sdk: Callable[[str, str], genai.Client]
) -> None:
    a = sdk(proxy.url, proxy.key)
    b = sdk(proxy.url, proxy.new_key("team-b"))
    mine = [named(upload(a, f"file {i}".encode())) for i in range(3)]
    upload(b, b"not yours")
    pager = a.files.list(config={"page_size": 2})
    assert len(pager.page) == 2
    assert sorted(named(x) for x in pager) == sorted(mine)


def test_a_revoked_key_is_refused_at_the_next_chunk(
    start_proxy: Callable[..., RunningProxy], sqlite_url: str
) -> None:
    proxy = start_proxy(sqlite_url, key_cache_ttl=0)  # no caching: revocation shows at once
    headers = {"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"}
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        r = http.post(
            "/upload/v1beta/files",
            json={"file": {}},
            headers={
                "x-goog-api-key": proxy.key,
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(2 * 64 * 1024),
            },
        )
        url = r.headers["x-goog-upload-url"]
        proxy.fake.resources.files.chunk_granularity = 64 * 1024
        first = http.post(url, content=b"a" * 64 * 1024, headers=headers)
        assert first.status_code == 200 and first.headers["x-goog-upload-status"] == "active"
        run_sync(lambda: revoke(proxy))
        second = http.post(
            url,
            content=b"b" * 64 * 1024,
            headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "65536"},
        )
    assert second.status_code == 401 and second.headers["x-goog-upload-status"] == "final"
    assert second.json()["error"]["status"] == "UNAUTHENTICATED"
    assert len(proxy.fake.calls("files.uploadChunk")) == 1  # the refused chunk never went up
    [row] = proxy.rows(1)
    assert (row["operation"], row["status"], row["error_class"]) == (
        "files.upload",
        401,
        "key_revoked",
    )


async def _revoke(url: str) -> None:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            for key, _tenant in await queries.list_keys(session, "team-a"):
                await queries.revoke_key(session, str(key.id))
            await session.commit()
    finally:
        await engine.dispose()


def revoke(proxy: RunningProxy) -> Any:
    return _revoke(proxy.settings.database_url)


def test_an_unknown_upload_session_is_final(proxy: RunningProxy) -> None:
    r = httpx.post(
        f"{proxy.url}/upload/v1beta/files?upload_id=nope",
        content=b"x",
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
    )
    assert r.status_code == 404 and r.headers["x-goog-upload-status"] == "final"
    assert r.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "path",
    ["/v1beta/tunedModels", "/v1/corpora/x", "/v1beta/files/abc:frobnicate", "/v1/nothing"],
)
def test_unknown_native_routes_get_geminis_404(proxy: RunningProxy, path: str) -> None:
    r = httpx.get(f"{proxy.url}{path}", headers={"x-goog-api-key": proxy.key})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["status"] == "NOT_FOUND" and error["code"] == 404
    assert path.split(":")[0] in error["message"] or "frobnicate" in error["message"]


@pytest.mark.parametrize("path", ["/v1/assistants", "/v1/organization/projects", "/v1/files"])
def test_unknown_openai_routes_keep_openais_envelope(proxy: RunningProxy, path: str) -> None:
    r = httpx.post(f"{proxy.url}{path}", headers={"authorization": f"Bearer {proxy.key}"})
    assert r.status_code in (404, 405) and "Invalid URL" in r.json()["error"]["message"]
    assert "status" not in r.json()["error"]
