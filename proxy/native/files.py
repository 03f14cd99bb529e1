"""Gemini's Files API through the proxy, scoped to the tenant that uploaded each file.

Uploads are relayed, never held whole: a resumable upload's start goes upstream and the client
gets an upload URL on the proxy (``/upload/{v}/files?upload_id=<the proxy's id>``) instead of
Google's, whose URL is kept in the proxy's database (a ``resources`` row of kind ``upload``, named
by a hash of the proxy's id), so any worker or replica can take the next chunk; each chunk
streams through as it arrives. Chunks carry no API key (the SDK sends none: the upload URL is
the credential), so the key that started the session is checked again on every chunk: a key
revoked mid-way is refused at its next chunk. A multipart or raw upload is one request, streamed
the same way.

An upload is one ledger row, written when it ends (the start and the chunks before the last
record nothing): at the finalize, when the file's name is recorded as the tenant's (before the
client learns it) and the row names it with its size and mime type (storage is free: $0,
priced); or when the session ends without a file (an upstream refusal, a revoked key).

``files.get`` / ``delete`` / ``download`` answer 404 for a file that is not the tenant's, as if it
did not exist; ``files.list`` pages through the tenant's own files (Owners.page, newest first)
and reads each from the upstream, so another tenant's files never appear and files Google has
dropped (after 48 hours) fall out of the list.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..auth import client_key
from ..caller import Caller
from ..db.queries import hash_key
from ..errors import BadRequest, NotFound, ProxyError, Unauthenticated, to_response
from ..httputil import read_body, reply_headers
from ..model_ids import ANY_MODEL
from ..pipeline import MeteredCall, meter_headers, read_whole
from ..services import Services, authenticate, services
from ..streaming import Outcome, WatchedStream
from ..upstream import UpstreamResponse
from .owned import list_owned
from .relay import passthrough
from .relay import version_of as api_version

__all__ = ["file_name", "routes", "upload_headers"]

log = logging.getLogger("gemini_meter.files")

VERSIONS = ("v1beta", "v1")
# Headers of Google's upload protocol a client sends and the upstream must see.
_UPLOAD_REQUEST = (
    "x-goog-upload-protocol", "x-goog-upload-command", "x-goog-upload-offset",
    "x-goog-upload-header-content-length", "x-goog-upload-header-content-type",
    "x-goog-upload-file-name", "content-type", "content-length",
)  # fmt: skip
# Headers of Google's upload replies the client may see (never X-GUploader-UploadID nor the
# upload URL, which name Google's session).
_UPLOAD_REPLY = (
    "x-goog-upload-status", "x-goog-upload-size-received", "x-goog-upload-chunk-granularity",
)  # fmt: skip


UPLOAD = "upload"  # resources.kind of an upload session in progress
_ID = re.compile(r"[A-Za-z0-9-]+")


def session_name(upload_id: str) -> str:
    """The record of an upload session: named by a hash of its id (the id is the credential
    of the chunks, so it is not stored as it is)."""
    return "uploads/" + hashlib.sha256(upload_id.encode()).hexdigest()[:48]


def file_name(raw: str) -> str:
    """``abc`` / ``files/abc`` → ``files/abc``; anything else a file id cannot be is a 400."""
    file_id = raw.removeprefix("files/")
    if not file_id or len(file_id) > 40 or not _ID.fullmatch(file_id):
        raise BadRequest(f"Invalid file name {raw[:60]!r}.")
    return f"files/{file_id.lower()}"


def upload_headers(headers: Any) -> dict[str, str]:
    """The upload-protocol headers of an upstream reply the client may see."""
    return {name: value for name in _UPLOAD_REPLY if (value := headers.get(name)) is not None}


def _forward(request: Request) -> dict[str, str]:
    return {name: value for name in _UPLOAD_REQUEST if (value := request.headers.get(name))}


def _not_yours(name: str) -> NotFound:
    # Another tenant's file reads exactly like a missing one.
    return NotFound(f"File {name} was not found (or is not yours).")


def _upload_refusal(exc: ProxyError) -> Response:
    # "final": the session is over; without it google-genai retries the chunk three times.
    exc.headers = {**exc.headers, "X-Goog-Upload-Status": "final"}
    return to_response(exc, "gemini")


# -- upload ------------------------------------------------------------------------------------


async def upload(request: Request) -> Response:
    version = api_version(request)
    if "upload_id" in request.query_params:
        return await _chunk(request)
    protocol = (
        request.headers.get("x-goog-upload-protocol")
        or request.query_params.get("uploadType")
        or ""
    ).lower()
    if protocol not in ("resumable", "multipart", "raw", "media"):
        raise BadRequest(
            "Upload requests need X-Goog-Upload-Protocol (resumable, multipart or raw) "
            "or uploadType."
        )
    svc, caller = await authenticate(request)
    call = _open(svc, caller, "files.upload")
    params = [("uploadType", t) for t in request.query_params.getlist("uploadType")[:1]]
    path = f"/upload/{version}/files"
    if protocol != "resumable":  # one request: the metadata and the bytes, streamed through
        reply = await call.send(
            "POST", path, params=params, content=request.stream(), headers=_forward(request)
        )
        return await _final(svc, call, caller, reply)
    body = await read_body(request, svc.settings.max_body_bytes)
    reply = await call.send("POST", path, params=params, content=body, headers=_forward(request))
    google_url = reply.headers.get("x-goog-upload-url")
    if reply.status_code != 200 or not google_url:
        return await passthrough(call, reply)
    target = urlsplit(google_url)
    if not target.path.startswith("/upload/"):
        log.warning("upstream named an unexpected upload URL path; upload refused")
        call.close(502, error_class="upload_url")
        raise ProxyError("The upstream answered the upload start unexpectedly.", status_code=502)
    # The start records nothing on the ledger: the upload's one row comes when it ends (this
    # call is not closed). The session is kept in the database, so any worker or replica can
    # take the next chunk.
    upload_id = secrets.token_urlsafe(32)
    digest = hash_key(client_key(request.headers, request.query_params) or "")
    detail = {
        "target": f"{target.path}?{target.query}",
        "keyDigest": digest,
        "tenant": caller.tenant_name,
    }
    await svc.owners.add(session_name(upload_id), UPLOAD, caller, detail=detail)
    query = f"upload_id={upload_id}&upload_protocol=resumable"
    own = f"{request.base_url}upload/{version}/files?{query}"
    headers = upload_headers(reply.headers) | {
        "X-Goog-Upload-URL": own,
        "X-Goog-Upload-Control-URL": own,
    }
    return Response(b"", status_code=200, headers=headers)


def _no_session() -> Response:
    return _upload_refusal(NotFound("No upload session with this id on this proxy."))


async def _chunk(request: Request) -> Response:
    svc = services(request)
    name = session_name(request.query_params["upload_id"])
    session = await svc.owners.find(name, UPLOAD)
    detail = session.detail if session is not None else None
    if session is None or not isinstance(detail, dict):
        return _no_session()
    try:
        caller = await _chunk_caller(svc, request, session.tenant_id, str(detail["keyDigest"]))
    except Unauthenticated as exc:
        # The key was revoked (or its tenant disabled) since the upload started: it ends here,
        # and the upload's row says so.
        await svc.owners.delete(name)
        revoked = Caller(session.tenant_id, str(detail.get("tenant", "")), session.key_id)
        call = _open(svc, revoked, "files.upload")
        call.close(401, error_class="key_revoked")
        return _upload_refusal(exc)
    if caller is None:
        return _no_session()
    call = _open(svc, caller, "files.upload")
    reply = await call.send(
        "POST", str(detail["target"]), content=request.stream(), headers=_forward(request)
    )
    status = reply.headers.get("x-goog-upload-status")
    if reply.status_code == 200 and status == "final":
        await svc.owners.delete(name)
        return await _final(svc, call, caller, reply)
    if reply.status_code != 200 and (status == "final" or reply.status_code < 500):
        await svc.owners.delete(name)
        return await passthrough(call, reply)  # the upload ends: its row has the status
    # Still active (or a transient upstream failure the client may retry): no row yet.
    content = await read_whole(reply)
    headers = reply_headers(reply.headers) | upload_headers(reply.headers)
    return Response(content, status_code=reply.status_code, headers=headers)


async def _chunk_caller(
    svc: Services, request: Request, tenant_id: int, key_digest: str
) -> Caller | None:
    """Who sends this chunk: the session's tenant, its starting key still valid (or the key
    the chunk carries, of the same tenant); None for another tenant's key (told the session
    does not exist)."""
    secret = client_key(request.headers, request.query_params)
    caller = await (
        svc.keys.authenticate(secret) if secret else svc.keys.authenticate_digest(key_digest)
    )
    return caller if caller.tenant_id == tenant_id else None


async def _final(
    svc: Services, call: MeteredCall, caller: Caller, reply: UpstreamResponse
) -> Response:
    """The upload's last reply: record the file as the caller's tenant's, then close and answer."""
    if reply.status_code != 200:
        return await passthrough(call, reply)
    content = await read_whole(reply)
    try:
        found = orjson.loads(content).get("file") or {}
        name = file_name(str(found["name"]))
    except (orjson.JSONDecodeError, AttributeError, KeyError, BadRequest):
        call.close(502, error_class="malformed_upload_reply")
        raise ProxyError("The upstream's upload reply names no file.", status_code=502) from None
    detail = {"bytes": _int(found.get("sizeBytes")), "mimeType": str(found.get("mimeType", ""))}
    call.meter.resource, call.meter.detail = name, detail
    try:
        await svc.owners.add(name, "file", caller, detail=detail)
    except ProxyError:
        call.close(503, error_class="owner_not_recorded")  # the upload happened: its row stays
        raise
    result = call.close(200)
    headers = reply_headers(reply.headers) | upload_headers(reply.headers)
    return Response(content, status_code=200, headers=headers | meter_headers(call, result))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# -- get, list, delete, download -----------------------------------------------------------


async def _owned(request: Request) -> tuple[Services, Caller, str, str]:
    version = api_version(request)
    svc, caller = await authenticate(request)
    name = file_name(request.path_params["file"])
    if await svc.owners.get(name, caller, kind="file") is None:
        raise _not_yours(name)
    return svc, caller, version, name


def _open(svc: Services, caller: Caller, operation: str, name: str | None = None) -> MeteredCall:
    call = svc.pipeline.open(caller, route="native", operation=operation, model=ANY_MODEL)
    call.meter.resource = name
    return call


async def one_file(request: Request) -> Response:
    target = request.path_params["file"]
    if target.endswith(":download") and request.method == "GET":
        request.path_params["file"] = target.removesuffix(":download")
        return await download(request)
    if ":" in target:
        raise NotFound(f"Unknown method {target.partition(':')[2][:40]!r} on files.")
    svc, caller, version, name = await _owned(request)
    operation = "files.delete" if request.method == "DELETE" else "files.get"
    call = _open(svc, caller, operation, name)
    reply = await call.send(request.method, f"/{version}/{name}")
    if operation == "files.delete" and reply.status_code in (200, 403, 404):
        await svc.owners.delete(name)  # deleted, or already gone upstream (expired)
    return await passthrough(call, reply)


async def list_files(request: Request) -> Response:
    return await list_owned(request, "file", "files", "files.list")


async def download(request: Request) -> Response:
    svc, caller, version, name = await _owned(request)
    call = _open(svc, caller, "files.download", name)
    params = [("alt", a) for a in request.query_params.getlist("alt")[:1]]
    reply = await call.send("GET", f"/{version}/{name}:download", params=params, stream=True)
    if reply.status_code != 200:
        return await passthrough(call, reply)

    async def pump() -> AsyncIterator[bytes]:
        # The tenant's own bytes, as they come: never buffered, nothing to observe.
        async for chunk in reply.aiter_bytes():
            call.meter.first_byte()
            yield chunk

    async def on_close(outcome: Outcome) -> None:
        try:
            await reply.aclose()
        finally:
            if outcome != "completed":
                call.meter.error_class = outcome
            call.close(200)

    return WatchedStream(  # type: ignore[return-value]
        pump(), headers=reply_headers(reply.headers) | call.quota_headers, on_close=on_close
    )


async def download_prefixed(request: Request) -> Response:
    """``/download/{v}/files/{id}:download``: the download URL Google names in ``downloadUri``."""
    target = request.path_params["file"]
    if not target.endswith(":download"):
        raise NotFound("Unknown download route.")
    request.path_params["file"] = target.removesuffix(":download")
    return await download(request)


def routes() -> list[BaseRoute]:
    return [
        route
        for v in VERSIONS
        for route in (
            Route(f"/upload/{v}/files", upload, methods=["POST"]),
            Route(f"/download/{v}/files/{{file}}", download_prefixed, methods=["GET"]),
            Route(f"/{v}/files", list_files, methods=["GET"]),
            Route(f"/{v}/files/{{file}}", one_file, methods=["GET", "DELETE"]),
        )
    ]
