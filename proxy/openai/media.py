"""Non-text user content parts → Gemini ``inlineData`` / ``fileData`` parts.

- ``image_url`` with a ``data:`` URI → ``inlineData`` (MIME type from the URI).
- ``image_url`` with an http(s) URL → ``fileData`` with the URL as ``fileUri``: Gemini fetches
  it (as it does for Files API URIs), the proxy stays free of outbound fetches and their
  SSRF and size risks. The MIME type is guessed from the path's extension, else ``image/jpeg``.
  ``detail`` is ignored.
- ``input_audio {data, format}`` → ``inlineData`` with ``audio/<format>``.
- ``file {file_data}`` (a data URI, or bare base64 with a ``filename`` whose extension names the
  type) → ``inlineData``; ``file_id`` (OpenAI's Files API) has no counterpart: 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from proxy.errors import BadRequest
from proxy.openai.validate import opt_str, req_object, req_str
from proxy.wire.gemini import Part

__all__ = ["file_data_part", "file_url_part", "image_url_part", "media_part"]

_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
_FILE_TYPES = {
    **_IMAGE_TYPES,
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".html": "text/html",
    ".json": "application/json",
    ".wav": "audio/wav",
    ".mp3": "audio/mp3",
    ".mp4": "video/mp4",
}
_AUDIO_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mp3",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "aac": "audio/aac",
    "aiff": "audio/aiff",
}


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _data_uri(uri: str, param: str) -> Part | None:
    """``inlineData`` for a ``data:<mime>;base64,<data>`` URI; None if ``uri`` isn't one."""
    if not uri.startswith("data:"):
        return None
    header, sep, data = uri[5:].partition(",")
    mime, *params = header.split(";")
    if not sep or "base64" not in params or "/" not in mime or not data:
        raise BadRequest(
            f"Invalid '{param}': a data URI must look like 'data:<mime type>;base64,<data>'.",
            param=param,
            code="invalid_value",
        )
    return {"inlineData": {"mimeType": mime.strip().lower(), "data": data}}


def _image(obj: Mapping[str, Any], param: str) -> Part:
    value = obj.get("image_url")
    # Some clients send the URL as a bare string instead of {"url": ...}.
    if isinstance(value, str):
        url, p = value, f"{param}.image_url"
    else:
        url = req_str(req_object(value, f"{param}.image_url").get("url"), f"{param}.image_url.url")
        p = f"{param}.image_url.url"
    return image_url_part(url, p)


def image_url_part(url: str, param: str) -> Part:
    """The part for an image given as a data URI or an http(s) URL (``param`` names it)."""
    inline = _data_uri(url, param)
    if inline is not None:
        return inline
    if url.startswith(("https://", "http://")):
        mime = _IMAGE_TYPES.get(_suffix(urlsplit(url).path), "image/jpeg")
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise BadRequest(
        f"Invalid '{param}': expected a data URI or an http(s) URL.",
        param=param,
        code="invalid_value",
    )


def _audio(obj: Mapping[str, Any], param: str) -> Part:
    audio = req_object(obj.get("input_audio"), f"{param}.input_audio")
    data = req_str(audio.get("data"), f"{param}.input_audio.data", non_empty=True)
    fmt = req_str(audio.get("format"), f"{param}.input_audio.format")
    mime = _AUDIO_TYPES.get(fmt.lower())
    if mime is None:
        raise BadRequest(
            f"Invalid '{param}.input_audio.format': {fmt!r}; expected one of "
            f"{', '.join(_AUDIO_TYPES)}.",
            param=f"{param}.input_audio.format",
            code="invalid_value",
        )
    return {"inlineData": {"mimeType": mime, "data": data}}


def _file(obj: Mapping[str, Any], param: str) -> Part:
    file = req_object(obj.get("file"), f"{param}.file")
    if file.get("file_id") is not None:
        raise BadRequest(
            f"'{param}.file.file_id' is not supported: OpenAI file ids do not exist upstream; "
            "send the content as 'file_data'.",
            param=f"{param}.file.file_id",
            code="unsupported_parameter",
        )
    data = req_str(file.get("file_data"), f"{param}.file.file_data", non_empty=True)
    filename = opt_str(file.get("filename"), f"{param}.file.filename") or ""
    return file_data_part(data, filename, f"{param}.file.file_data")


def file_data_part(data: str, filename: str, param: str) -> Part:
    """``inlineData`` for file content: a data URI, or bare base64 whose type the extension of
    ``filename`` gives (``param`` names the data)."""
    inline = _data_uri(data, param)
    if inline is not None:
        return inline
    mime = _FILE_TYPES.get(_suffix(filename))
    if mime is None:
        raise BadRequest(
            f"Invalid '{param}': send a data URI, or a 'filename' whose extension gives the type.",
            param=param,
            code="invalid_value",
        )
    return {"inlineData": {"mimeType": mime, "data": data}}


def file_url_part(url: str, filename: str, param: str) -> Part:
    """``fileData`` for a file at an http(s) URL, which Gemini fetches; the type comes from the
    URL's or the ``filename``'s extension."""
    if not url.startswith(("https://", "http://")):
        raise BadRequest(f"Invalid '{param}': expected an http(s) URL.", param=param)
    mime = _FILE_TYPES.get(_suffix(urlsplit(url).path)) or _FILE_TYPES.get(_suffix(filename))
    if mime is None:
        raise BadRequest(
            f"Invalid '{param}': the file type cannot be told from the URL; give a 'filename' "
            "with an extension.",
            param=param,
            code="invalid_value",
        )
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def media_part(kind: str, obj: Mapping[str, Any], param: str) -> Part:
    """The Gemini part for a user content part of type ``kind`` (not ``text``)."""
    if kind == "image_url":
        return _image(obj, param)
    if kind == "input_audio":
        return _audio(obj, param)
    if kind == "file":
        return _file(obj, param)
    raise BadRequest(
        f"Invalid '{param}.type': {kind!r}; expected 'text', 'image_url', 'input_audio' or 'file'.",
        param=f"{param}.type",
        code="invalid_value",
    )
