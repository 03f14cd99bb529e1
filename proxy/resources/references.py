"""Stored resources named inside a model call (a ``fileData.fileUri``, the ``cachedContent``):
each must be the caller's tenant's, or the call is refused as if the resource did not exist.

Cheap on the hot path: a body that contains neither ``files/`` nor ``cachedContent`` /
``cached_content`` is not walked at all (a substring test over its bytes); ownership answers
are cached by Owners, so a file used in every turn of a chat costs one lookup per process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..caller import Caller
from ..errors import NotFound
from .owners import Owners

__all__ = ["check_references", "may_reference", "referenced_names"]

_MARKERS = (b"files/", b"cachedContent", b"cached_content")
# A Files API URI (Google's host, either version, download form included) or a bare name.
_FILE_URI = re.compile(
    r"(?:https?://generativelanguage\.googleapis\.com/(?:download/)?v1(?:beta)?/)?"
    r"(files/[A-Za-z0-9-]+)(?::download(?:\?.*)?)?"
)
_FILE_DATA = ("fileData", "file_data")
_FILE_URI_KEYS = ("fileUri", "file_uri")
_CACHED = ("cachedContent", "cached_content")


def may_reference(body: bytes) -> bool:
    """Whether a request body can name a stored resource at all (else: nothing to check)."""
    return any(marker in body for marker in _MARKERS)


def referenced_names(request: Mapping[str, Any]) -> list[str]:
    """The stored resources a Gemini request names: ``files/x`` for each Files API URI in a
    ``fileData`` part (other URIs — YouTube, gs://, the web — are not the proxy's), and the
    ``cachedContents/x`` it uses. Pure; in order of appearance, without repeats."""
    names: list[str] = []
    for key in _CACHED:
        cached = request.get(key)
        if isinstance(cached, str) and cached:
            name = cached if cached.startswith("cachedContents/") else f"cachedContents/{cached}"
            names.append(name)
    stack: list[Any] = [request]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in _FILE_DATA and isinstance(value, Mapping):
                    uri = next((value[k] for k in _FILE_URI_KEYS if k in value), None)
                    if isinstance(uri, str) and (m := _FILE_URI.fullmatch(uri.strip())):
                        names.append(m[1].lower())
                elif isinstance(value, Mapping | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return list(dict.fromkeys(names))


async def check_references(
    owners: Owners, caller: Caller, body: bytes, request: Mapping[str, Any]
) -> None:
    """Raise NotFound (404) if ``request`` names a stored resource not the caller's tenant's."""
    if not may_reference(body):
        return
    for name in referenced_names(request):
        if not await owners.owns(name, caller):
            kind = "File" if name.startswith("files/") else "CachedContent"
            raise NotFound(f"{kind} {name} was not found (or is not yours).")
