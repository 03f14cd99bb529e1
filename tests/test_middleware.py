"""The access line: what a request looks like in the log, with tenant keys redacted."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.middleware import access_line


def scope(path: str, query: bytes = b"", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http", "method": "POST", "path": path, "query_string": query,
        "http_version": "1.1", "client": ("10.0.0.7", 51234), **extra,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        (b"", ""),
        (b"alt=sse", "?alt=sse"),
        (b"key=gm-secret", "?key=REDACTED"),
        (b"alt=sse&key=gm-secret", "?alt=sse&key=REDACTED"),
        (b"KEY=gm-secret&alt=sse", "?KEY=REDACTED&alt=sse"),
        (b"key=gm-a&key=gm-b", "?key=REDACTED&key=REDACTED"),
        (b"monkey=1", "?monkey=1"),  # a parameter that merely ends in "key" is no key
        (b"key=", "?key=REDACTED"),
    ],
)
def test_access_line_redacts_key_parameters(query: bytes, shown: str) -> None:
    line = access_line(scope("/v1beta/models/m:generateContent", query), 200, 0.0123)
    assert (
        line
        == f'10.0.0.7:51234 - "POST /v1beta/models/m:generateContent{shown} HTTP/1.1" 200 12.3ms'
    )
    assert "gm-" not in line


def test_access_line_without_a_client_address() -> None:
    s = scope("/admin/tenants", client=None, method="GET")
    assert access_line(s, 404, 0.0005) == '- - "GET /admin/tenants HTTP/1.1" 404 0.5ms'
