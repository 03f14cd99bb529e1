"""Gemini's Files API, faked: resumable, multipart and raw upload; get, list, delete, download.

Resumable upload, as Google runs it and google-genai drives it (``_api_client._upload_fd``):

1. ``POST /upload/{v}/files`` with ``X-Goog-Upload-Protocol: resumable``, ``X-Goog-Upload-Command:
   start``, ``X-Goog-Upload-Header-Content-Length`` / ``-Content-Type`` and a JSON body
   ``{"file": {...metadata}}`` -> 200, empty body, ``X-Goog-Upload-Status: active`` and
   ``X-Goog-Upload-URL`` (absolute; here on the host the start request named, or ``upload_origin``).
2. ``POST <upload URL>`` per chunk, ``X-Goog-Upload-Command: upload`` and ``X-Goog-Upload-Offset``
   (bytes received so far) -> ``active``; the last chunk says ``upload, finalize`` -> ``final``
   and the body ``{"file": <File>}``. Chunk requests carry no API key: the upload id is the
   credential. ``query`` and ``cancel`` commands work too.

Errors on the upload URL carry ``X-Goog-Upload-Status: final`` (the session is over): without the
header google-genai retries the chunk three times, sleeping 1, 2 and 4 seconds.

Only generated files (batch results, Veo videos) can be downloaded, as on Google.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tests.fakes.gemini import JsonReply, RecordedRequest
from tests.fakes.rest import (
    Env,
    Route,
    get,
    google_error,
    json_body,
    json_object,
    new_id,
    no_route,
    page,
    rfc3339,
    rpc_status,
)

CHUNK_GRANULARITY = 8 * 1024 * 1024  # Google's, and google-genai's CHUNK_SIZE
FILE_TTL = timedelta(hours=48)
_FILE_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_FILE_URI = re.compile(
    r"https?://[^/]+/(?:download/)?v1(?:beta)?/files/([a-z0-9-]+)(?::download.*)?"
)
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


@dataclass
class StoredFile:
    name: str  # "files/abc123"
    mime_type: str
    data: bytes
    created: datetime
    source: str = "UPLOADED"  # or "GENERATED"
    display_name: str | None = None
    state: str = "ACTIVE"  # "PROCESSING" / "ACTIVE" / "FAILED"
    gets_processing: int = 0  # files.get calls answered while PROCESSING
    error: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.name.removeprefix("files/")

    def resource(self, env: Env) -> dict[str, Any]:
        res: dict[str, Any] = {"name": self.name}
        if self.display_name:
            res["displayName"] = self.display_name
        res |= {
            "mimeType": self.mime_type,
            "sizeBytes": str(len(self.data)),  # int64: a string
            "createTime": rfc3339(self.created),
            "updateTime": rfc3339(self.created),
            "expirationTime": rfc3339(self.created + FILE_TTL),
            # The SDK documents "SHA-256 of the bytes, base64"; Google's replies carry the
            # base64 of the hex digest. Opaque to clients either way.
            "sha256Hash": base64.b64encode(hashlib.sha256(self.data).hexdigest().encode()).decode(),
            "uri": f"{env.origin}/v1beta/{self.name}",
            "state": self.state,
            "source": self.source,
        }
        if self.source == "GENERATED":
            res["downloadUri"] = f"{env.origin}/download/v1beta/{self.name}:download?alt=media"
        if self.error:
            res["error"] = self.error
        return res


@dataclass
class UploadSession:
    upload_id: str
    metadata: dict[str, Any]
    mime_type: str
    declared: int | None  # X-Goog-Upload-Header-Content-Length, if the client sent it
    received: bytearray = field(default_factory=bytearray)


def missing_file(file_id: str) -> JsonReply:
    """Google's answer for a file it does not hold (or that is not the caller's): 403."""
    file_id = file_id.removeprefix("files/")
    return google_error(
        403, f"You do not have permission to access the File {file_id} or it may not exist."
    )


def _upload_reply(status: str, body: Any = b"", code: int = 200, **headers: str) -> JsonReply:
    hdrs = {"X-Goog-Upload-Status": status} | {k.replace("_", "-"): v for k, v in headers.items()}
    return JsonReply(body, code, hdrs)


def _upload_error(code: int, message: str, status: str | None = None) -> JsonReply:
    reply = google_error(code, message, status)
    reply.headers["X-Goog-Upload-Status"] = "final"
    return reply


def _parse_multipart(req: RecordedRequest) -> tuple[dict[str, Any], bytes, str] | JsonReply:
    """``multipart/related``: a JSON metadata part, then the media part (its own Content-Type)."""
    ctype = req.headers.get("content-type", "")
    m = _BOUNDARY.search(ctype)
    if not ctype.startswith("multipart/") or not m:
        return google_error(400, "Multipart upload needs a multipart/related body with a boundary.")
    sections: list[tuple[dict[str, str], bytes]] = []
    for part in req.body.split(b"--" + m[1].encode())[1:]:
        if part.startswith(b"--"):
            break
        part = part.removeprefix(b"\r\n").removeprefix(b"\n")
        sep = b"\r\n\r\n" if b"\r\n\r\n" in part else b"\n\n"
        head, found, content = part.partition(sep)
        if not found:
            return google_error(400, "Malformed multipart body.")
        lines = head.decode("latin-1").splitlines()
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        sections.append((headers, content.removesuffix(b"\n").removesuffix(b"\r")))
    if len(sections) != 2:
        return google_error(400, "Multipart upload takes two parts: metadata, then media.")
    meta = json_object(sections[0][1])
    if isinstance(meta, JsonReply):
        return meta
    return meta, sections[1][1], sections[1][0].get("content-type", "")


class Files:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.files: dict[str, StoredFile] = {}
        self.sessions: dict[str, UploadSession] = {}
        self.processing_gets = 0  # files.get calls that still see PROCESSING (0: ACTIVE at once)
        self.chunk_granularity: int | None = CHUNK_GRANULARITY  # None: any chunk size
        self.upload_origin: str | None = None  # None: the host the start request was sent to
        self.download_redirect = False  # True: downloads answer 302 to a keyless storage URL

    # -- what other resources use ---------------------------------------------------------

    def lookup(self, ref: str) -> StoredFile | None:
        """A live file by name (``files/x``), id or URI (``https://.../v1beta/files/x``)."""
        if m := _FILE_URI.fullmatch(ref):
            ref = m[1]
        f = self.files.get(ref if ref.startswith("files/") else f"files/{ref}")
        if f is not None and self.env.clock() >= f.created + FILE_TTL:
            del self.files[f.name]
            return None
        return f

    def check_uri(self, uri: str) -> JsonReply | None:
        """Google's refusal of a ``fileData.fileUri`` naming a missing or unready file, if any.
        URIs that are not Files API URIs (YouTube, ...) pass."""
        m = _FILE_URI.fullmatch(uri)
        if not m:
            return None
        f = self.lookup(m[1])
        if f is None:
            return missing_file(m[1])
        if f.state != "ACTIVE":
            return google_error(
                400,
                f"The File {m[1]} is not in an ACTIVE state and usage is not allowed.",
                "FAILED_PRECONDITION",
            )
        return None

    def add(
        self,
        data: bytes,
        mime_type: str,
        *,
        source: str = "UPLOADED",
        display_name: str | None = None,
        name: str | None = None,
    ) -> StoredFile:
        name = name or f"files/{new_id()}"
        state = "PROCESSING" if self.processing_gets and source == "UPLOADED" else "ACTIVE"
        f = StoredFile(name, mime_type, data, self.env.clock(), source, display_name, state)
        self.files[name] = f
        return f

    def activate(self, name: str) -> None:
        self.files[name].state = "ACTIVE"

    def fail(self, name: str, message: str = "File processing failed.") -> None:
        self.files[name].state = "FAILED"
        self.files[name].error = rpc_status("INTERNAL", message)

    # -- routes ---------------------------------------------------------------------------

    @staticmethod
    def action(method: str, route: Route, query: dict[str, str]) -> str | None:
        if route.parts[:1] != ["files"]:
            return None
        if route.prefix == "upload":
            return "files.uploadChunk" if "upload_id" in query else "files.upload"
        if route.verb == "download" or route.prefix == "download":
            return "files.download"
        if len(route.parts) == 1:
            return "files.list" if method == "GET" else None
        return {"GET": "files.get", "DELETE": "files.delete"}.get(method)

    def serve(self, req: RecordedRequest, route: Route) -> JsonReply:
        match req.action, route.parts:
            case "files.upload", ["files"] if req.method == "POST":
                return self._upload(req, route)
            case "files.uploadChunk", ["files"] if req.method == "POST":
                return self._chunk(req)
            case "files.list", _:
                live = [f for f in list(self.files.values()) if self.lookup(f.name)]
                live.sort(key=lambda f: f.created, reverse=True)  # newest first
                return page([f.resource(self.env) for f in live], req.query, "files", self.env)
            case (("files.get" | "files.delete" | "files.download"), ["files", file_id]):
                return self._one(req, file_id)
        return no_route(req)

    def _one(self, req: RecordedRequest, file_id: str) -> JsonReply:
        f = self.lookup(file_id)
        if f is None:
            return missing_file(file_id)
        if req.action == "files.delete":
            del self.files[f.name]
            return JsonReply({})
        if req.action == "files.download":
            return self.download(req, f)
        if f.state == "PROCESSING":
            f.gets_processing += 1
            if f.gets_processing > self.processing_gets:
                f.state = "ACTIVE"
        return JsonReply(f.resource(self.env))

    def download(self, req: RecordedRequest, f: StoredFile) -> JsonReply:
        if f.source != "GENERATED":
            return google_error(
                400,
                "Only generated files can be downloaded; uploaded files can't be.",
                "FAILED_PRECONDITION",
            )
        if req.query.get("alt") != "media":
            return JsonReply({})  # the method's own (empty) reply; the bytes need alt=media
        if self.download_redirect and req.action != "files.storage":
            host = req.headers.get("host", "localhost")
            return JsonReply(
                b"", 302, {"Location": f"http://{host}/_fake_storage/{f.id}?alt=media"}
            )
        return JsonReply(f.data, 200, {"Content-Type": f.mime_type})

    # -- upload ---------------------------------------------------------------------------

    def _upload(self, req: RecordedRequest, route: Route) -> JsonReply:
        protocol = req.headers.get("x-goog-upload-protocol") or req.query.get("uploadType") or ""
        protocol = {"media": "raw"}.get(protocol.lower(), protocol.lower())
        if protocol == "resumable":
            return self._start(req, route)
        if protocol == "multipart":
            parsed = _parse_multipart(req)
            if isinstance(parsed, JsonReply):
                return parsed
            meta, data, mime = parsed
        elif protocol == "raw":
            meta, data, mime = {}, req.body, req.headers.get("content-type", "")
        else:
            return google_error(
                400,
                "Upload requests need X-Goog-Upload-Protocol (resumable, "
                "multipart or raw) or uploadType.",
            )
        file_meta = get(meta, "file") or {}
        checked = self._check_name(file_meta)
        if isinstance(checked, JsonReply):
            return checked
        mime = mime or get(file_meta, "mimeType") or "application/octet-stream"
        f = self.add(data, mime, display_name=get(file_meta, "displayName"), name=checked)
        return _upload_reply("final", {"file": f.resource(self.env)})

    def _check_name(self, meta: Any) -> str | JsonReply | None:
        if not isinstance(meta, dict):
            return google_error(400, "Invalid value at 'file': expected an object.")
        name = get(meta, "name")
        if name is None:
            return None
        file_id = str(name).removeprefix("files/")
        if not _FILE_ID.fullmatch(file_id):
            return google_error(
                400,
                f"Invalid file name {name!r}: up to 40 lowercase letters, "
                "digits or dashes, not starting or ending with a dash.",
            )
        if f"files/{file_id}" in self.files:
            return google_error(409, f"File files/{file_id} already exists.")
        return f"files/{file_id}"

    def _start(self, req: RecordedRequest, route: Route) -> JsonReply:
        if req.headers.get("x-goog-upload-command", "").strip() != "start":
            return google_error(400, "A resumable upload starts with X-Goog-Upload-Command: start.")
        body = json_body(req)
        if isinstance(body, JsonReply):
            return body
        meta = get(body, "file") or {}
        checked = self._check_name(meta)
        if isinstance(checked, JsonReply):
            return checked
        length = req.headers.get("x-goog-upload-header-content-length") or get(meta, "sizeBytes")
        try:
            declared = None if length is None else int(length)
        except ValueError:
            return google_error(400, f"Invalid X-Goog-Upload-Header-Content-Length: {length!r}")
        mime = (
            req.headers.get("x-goog-upload-header-content-type")
            or get(meta, "mimeType")
            or "application/octet-stream"
        )
        if checked:
            meta["name"] = checked
        upload_id = new_id(24) + new_id(24).upper()  # long and opaque, like Google's
        self.sessions[upload_id] = UploadSession(upload_id, meta, mime, declared)
        origin = self.upload_origin or f"http://{req.headers.get('host', 'localhost')}"
        url = (
            f"{origin}/upload/{route.version}/files?upload_id={upload_id}&upload_protocol=resumable"
        )
        return _upload_reply(
            "active",
            X_Goog_Upload_URL=url,
            X_Goog_Upload_Control_URL=url,
            X_Goog_Upload_Chunk_Granularity=str(self.chunk_granularity or CHUNK_GRANULARITY),
            X_GUploader_UploadID=upload_id,
        )

    def _chunk(self, req: RecordedRequest) -> JsonReply:
        session = self.sessions.get(req.query["upload_id"])
        if session is None:
            return _upload_error(
                404, "No upload session with this id (finished, cancelled or never started)."
            )
        received = len(session.received)
        raw = req.headers.get("x-goog-upload-command", "")
        commands = {c.strip() for c in raw.split(",") if c.strip()}
        if commands == {"query"}:
            return _upload_reply("active", X_Goog_Upload_Size_Received=str(received))
        if commands == {"cancel"}:
            del self.sessions[session.upload_id]
            return _upload_reply("cancelled")
        error = self._chunk_error(req, session, commands)
        if error:
            del self.sessions[session.upload_id]
            return _upload_error(400, error)
        session.received += req.body
        if "finalize" not in commands:
            return _upload_reply("active", X_Goog_Upload_Size_Received=str(len(session.received)))
        del self.sessions[session.upload_id]
        name = get(session.metadata, "name")
        if name and name in self.files:
            return _upload_error(409, f"File {name} already exists.")
        f = self.add(
            bytes(session.received),
            session.mime_type,
            name=name,
            display_name=get(session.metadata, "displayName"),
        )
        return _upload_reply("final", {"file": f.resource(self.env)})

    def _chunk_error(self, req: RecordedRequest, s: UploadSession, commands: set[str]) -> str:
        if not commands or not commands <= {"upload", "finalize"}:
            return f"Invalid X-Goog-Upload-Command: {req.headers.get('x-goog-upload-command')!r}"
        if "upload" not in commands:
            return "" if not req.body else "A finalize without upload carries no bytes."
        offset = req.headers.get("x-goog-upload-offset", "")
        if offset != str(len(s.received)):
            return f"X-Goog-Upload-Offset {offset!r} is not the {len(s.received)} bytes received."
        total = len(s.received) + len(req.body)
        if s.declared is not None and total > s.declared:
            return f"Upload exceeds the declared {s.declared} bytes."
        if "finalize" in commands:
            if s.declared is not None and total != s.declared:
                return f"Upload size {total} differs from the declared {s.declared} bytes."
            return ""
        g = self.chunk_granularity
        return (
            f"A chunk before the last must be a multiple of {g} bytes."
            if g and len(req.body) % g
            else ""
        )
