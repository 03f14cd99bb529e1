"""One way to keep secrets out of what the proxy says: replies, streams, log lines.

A secret here is
- any upstream key of the pool and the admin token, matched exactly (registered at start-up);
- anything shaped like a Google API key (``AIza`` and 20 or more key characters), or quoted the
  way Google's error messages quote a key (``api_key:…``, e.g. "Consumer 'api_key:…' has been
  suspended");
- anything shaped like a tenant key (``gm-`` and 20 or more URL-safe characters);
- in log lines, the value of a query parameter whose name, once percent-decoded, names a
  credential (``key``, ``api_key``, ``token``, ...), so ``?%6bey=``, ``?KEY=`` are caught too.

Every such string becomes ``[redacted]`` (``REDACTED`` for a query value). :func:`scrub_bytes`
serves bodies, :class:`StreamScrubber` streams (a key split over two chunks is held back until
it is whole), :func:`redact` log lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

__all__ = [
    "MIN_SECRET_LENGTH",
    "StreamScrubber",
    "redact",
    "redact_query",
    "register_secrets",
    "scrub",
    "scrub_bytes",
    "sensitive_param",
]

REPLACEMENT = "[redacted]"
_REPLACEMENT_BYTES = REPLACEMENT.encode()
# Shorter strings cannot be scrubbed without mangling ordinary text; real keys are 39+.
MIN_SECRET_LENGTH = 8
# The longest tail of a stream chunk held back as the possible start of a secret: keys are
# well under this, so a longer run is ordinary text (or, if whole, already scrubbed).
_MAX_HOLD = 512

_SHAPES = (
    r"AIza[0-9A-Za-z_\-]{20,}",
    r"api_key:[^\s'\"\\]+",  # never a quote or backslash: a JSON string's escapes stay whole
    r"gm-[0-9A-Za-z_\-]{20,}",
)
# Every prefix of a shape, anchored at the end: the tail of a chunk a secret may continue.
_PARTIAL_SHAPES = (
    r"AIza[0-9A-Za-z_\-]*",
    r"A(?:I(?:z)?)?",
    r"api_key:[^\s'\"\\]*",
    r"a(?:p(?:i(?:_(?:k(?:e(?:y)?)?)?)?)?)?",
    r"gm-[0-9A-Za-z_\-]*",
    r"g(?:m)?",
)
_ANCHORS = ("AIza", "api_key:", "gm-")
_BLANKS = frozenset(b" \t\r\n")

_secrets: set[str] = set()


class _Patterns:
    """The compiled matchers for the secrets registered so far (rebuilt on registration)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        exact = sorted(secrets, key=len, reverse=True)
        alternatives = [re.escape(s) for s in exact] + list(_SHAPES)
        self.text = re.compile("|".join(alternatives))
        self.data = re.compile("|".join(alternatives).encode())
        self.anchors_text = tuple(_ANCHORS) + tuple(exact)
        self.anchors_data = tuple(a.encode() for a in self.anchors_text)
        partial = [_prefix_pattern(s) for s in exact] + list(_PARTIAL_SHAPES)
        self.partial = re.compile(("(?:" + "|".join(partial) + r")\Z").encode())


def _prefix_pattern(secret: str) -> str:
    """A regex matching every non-empty prefix of ``secret``."""
    out = ""
    for ch in reversed(secret[1:]):
        out = f"(?:{re.escape(ch)}{out})?"
    return re.escape(secret[0]) + out


_patterns = _Patterns(())


def register_secrets(*secrets: str | None) -> None:
    """Add exact secrets (upstream keys, the admin token) to what is scrubbed everywhere."""
    global _patterns
    # (Keys and tokens have no blanks; a secret with one would still be scrubbed when whole.)
    new = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH} - _secrets
    if new:
        _secrets.update(new)
        _patterns = _Patterns(_secrets)


def scrub(text: str) -> str:
    """``text`` with every secret replaced."""
    p = _patterns
    for anchor in p.anchors_text:  # substring searches: far cheaper than the regex on a miss
        if anchor in text:
            return p.text.sub(REPLACEMENT, text)
    return text


def scrub_bytes(data: bytes) -> bytes:
    """``data`` (a body from the upstream) with every secret replaced; the same object if none."""
    p = _patterns
    for anchor in p.anchors_data:
        if anchor in data:
            return p.data.sub(_REPLACEMENT_BYTES, data)
    return data


class StreamScrubber:
    """Scrubs a byte stream chunk by chunk, holding back a tail that may begin a secret.

    A stream's events end in a newline or a brace, so in practice nothing is held: a tail is
    kept only when the network split an event right where a key-shaped string may go on.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._held + chunk if self._held else chunk
        cut = len(buf)
        # No secret goes on past a blank (keys have none), and an SSE event ends in one: only
        # a chunk ending otherwise can end in the first part of a secret.
        if buf and buf[-1] not in _BLANKS:
            m = _patterns.partial.search(buf, max(0, len(buf) - _MAX_HOLD))
            if m is not None:
                cut = m.start()
        self._held = buf[cut:]
        return scrub_bytes(buf[:cut])

    def flush(self) -> bytes:
        """What is still held, scrubbed: the stream is over, so it cannot grow into a key."""
        held, self._held = self._held, b""
        return scrub_bytes(held)


# -- log lines ----------------------------------------------------------------------------------

# Parameter names that carry credentials, compared lower-case without separators, so
# ``api_key``, ``API-Key`` and ``apikey`` are one name (``monkey`` is none of them).
_CREDENTIAL_NAMES = frozenset(
    {"key", "apikey", "xgoogapikey", "token", "accesstoken", "authorization", "auth", "secret",
     "password", "admintoken"}
)  # fmt: skip
_SEPARATORS = re.compile(r"[\s_\-.]")
_QUERY = re.compile(r"\?[^\s\"'#<>]+")


def sensitive_param(name: str) -> bool:
    """Whether a query parameter (its name as sent, percent-encoded or not) carries a credential."""
    return _SEPARATORS.sub("", unquote_plus(name)).lower() in _CREDENTIAL_NAMES


def redact_query(query: str) -> str:
    """A raw query string with the value of every credential parameter replaced by REDACTED,
    judged on the decoded name; a value (or bare name) that decodes to a secret is replaced too."""
    parts = []
    for piece in query.split("&"):
        name, eq, value = piece.partition("=")
        if (sensitive_param(name) and eq) or _holds_secret(value):
            piece = f"{name}=REDACTED"
        elif _holds_secret(name):
            piece = "REDACTED"
        parts.append(piece)
    return "&".join(parts)


def _holds_secret(raw: str) -> bool:
    decoded = unquote_plus(raw)
    return scrub(decoded) != decoded


def redact(text: str) -> str:
    """A log line with credential query parameters and every secret replaced."""
    if "?" in text:
        text = _QUERY.sub(lambda m: "?" + redact_query(m.group()[1:]), text)
    return scrub(text)
