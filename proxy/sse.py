"""Incremental decoding of Gemini's two stream framings, and SSE encoding.

Bytes go in as they arrive from the network, complete events come out; nothing waits for the
end of the stream. Used to *observe* a stream the proxy forwards unchanged, and to translate one.

- ``alt=sse``: ``data: {json}`` events separated by a blank line (Google sends CRLF; LF is
  accepted too). No ``event:`` names and no ``[DONE]``: the stream ends with the connection.
- no ``alt``: one JSON array delivered piece by piece, ``[{...}\\r\\n,{...}\\r\\n]``.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson

__all__ = ["EventDecoder", "JsonArrayDecoder", "SSEDecoder", "encode_sse", "parse_event"]

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r\n|\n|\r")
# The bytes that matter to a JSON-structure scanner; everything else is skipped in C.
_JSON_SPECIAL = re.compile(rb'[{}"\\]')


class EventDecoder(Protocol):
    def feed(self, chunk: bytes) -> list[bytes]: ...


class SSEDecoder:
    """Splits an SSE byte stream into the ``data`` payload of each event."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk
        out: list[bytes] = []
        pos = 0
        for m in _EVENT_END.finditer(buf):
            data = _event_data(buf[pos : m.start()])
            if data is not None:
                out.append(data)
            pos = m.end()
        self._buf = buf[pos:]
        return out


def _event_data(block: bytes) -> bytes | None:
    if block.startswith(b"data: ") and b"\n" not in block and b"\r" not in block:
        return block[6:]  # the one-line event every Gemini stream is made of
    lines = [
        line[5:].removeprefix(b" ") for line in _LINE_END.split(block) if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


class JsonArrayDecoder:
    """Yields each top-level element of a JSON array of objects as its bytes arrive."""

    __slots__ = ("_buf", "_depth", "_escape", "_in_string", "_scanned", "_start")

    def __init__(self) -> None:
        self._buf = b""
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._start = -1
        self._scanned = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        buf = self._buf
        out: list[bytes] = []
        pos = self._scanned
        while True:
            if self._escape:
                # The byte after a backslash is never structural.
                if pos >= len(buf):
                    break
                self._escape = False
                pos += 1
                continue
            m = _JSON_SPECIAL.search(buf, pos)
            if m is None:
                pos = len(buf)
                break
            c = buf[m.start()]
            pos = m.end()
            if self._in_string:
                if c == 0x5C:  # backslash
                    self._escape = True
                elif c == 0x22:  # quote
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c == 0x7B:  # {
                if self._depth == 0:
                    self._start = m.start()
                self._depth += 1
            elif c == 0x7D:  # }
                self._depth -= 1
                if self._depth == 0 and self._start >= 0:
                    out.append(buf[self._start : pos])
                    self._start = -1
        # Keep only what an unfinished element still needs.
        keep_from = self._start if self._start >= 0 else pos
        self._buf = buf[keep_from:]
        self._scanned = pos - keep_from
        if self._start >= 0:
            self._start = 0
        return out


def parse_event(data: bytes) -> dict[str, Any] | None:
    """Parse one event's JSON; None for anything that is not a JSON object."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def encode_sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
