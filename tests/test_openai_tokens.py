"""Token ids → text with the client's tiktoken encoding (pure tables, no network)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from proxy.errors import BadRequest
from proxy.openai import tokens
from proxy.openai.tokens import (
    decode_token_arrays,
    encoding_for,
    encoding_needed,
    is_token_input,
    load,
    token_arrays,
)

# Ids as tiktoken gives them (tiktoken.get_encoding(name).encode(text)).
CL100K_HELLO = [15339, 1917]  # "hello world"
CL100K_MIXED = [71, 19010, 385, 289, 9603, 509, 2001, 76502, 22656, 45918, 252, 11410, 236, 231]
O200K_MIXED = [79163, 72807, 286, 2877, 582, 2733, 17428, 40909, 139786, 231]
MIXED_TEXT = "héllo wörld — 日本語 🎉"

# (id, input value, decoded texts, encoding)
DECODES: list[tuple[str, Any, list[str], str]] = [
    ("one_array", CL100K_HELLO, ["hello world"], "cl100k_base"),
    ("arrays", [CL100K_HELLO, CL100K_MIXED], ["hello world", MIXED_TEXT], "cl100k_base"),
    ("o200k_by_large_id", O200K_MIXED, [MIXED_TEXT], "o200k_base"),
    ("special_token", [15339, 100257], ["hello<|endoftext|>"], "cl100k_base"),
    ("o200k_special", [[199999], O200K_MIXED], ["<|endoftext|>", MIXED_TEXT], "o200k_base"),
    # A chunk boundary through a multi-byte character: the partial bytes become U+FFFD.
    ("cut_character", [CL100K_MIXED[:-1]], [MIXED_TEXT[:-1] + "\ufffd"], "cl100k_base"),
]


@pytest.mark.parametrize(
    ("value", "texts", "encoding"), [d[1:] for d in DECODES], ids=[d[0] for d in DECODES]
)
def test_decode(value: Any, texts: list[str], encoding: str) -> None:
    arrays = token_arrays(value, "input")
    assert encoding_for(arrays) == encoding == encoding_needed(value, "input")
    assert decode_token_arrays(arrays) == texts


# (id, value, the param the 400 names)
BAD: list[tuple[str, Any, str]] = [
    ("empty", [], "input"),
    ("unknown_id_gap", [15339, 100261], "input"),  # between cl100k's special tokens
    ("beyond_o200k", [[1], [200019]], "input[1]"),
    ("negative", [[15339], [-1]], "input[1]"),
    ("empty_array", [[15339], []], "input[1]"),
    ("text_among_arrays", [[15339], "hello"], "input[1]"),
    ("bool_is_not_an_id", [[15339], [True]], "input[1]"),
    ("nested_too_deep", [[[15339]]], "input[0]"),
]


@pytest.mark.parametrize(("value", "param"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_token_input_names_the_element(value: Any, param: str) -> None:
    with pytest.raises(BadRequest) as err:
        decode_token_arrays(token_arrays(value, "input"))
    assert err.value.param == param


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", False),
        (["a", "b"], False),
        ([1, 2], True),
        ([[1], [2]], True),
        (["a", 1], True),  # mixed: read as ids, and the translator refuses the text
        ([True], False),
        ([], False),
        (None, False),
    ],
)
def test_is_token_input(value: Any, expected: bool) -> None:
    assert is_token_input(value) is expected


def test_encoding_needed_is_none_for_text_and_malformed_ids() -> None:
    assert encoding_needed("hello", "input") is None
    assert encoding_needed([[1], "x"], "input") is None  # the translator's 400 follows


@pytest.mark.parametrize("name", tokens.ENCODINGS)
def test_packaged_files_are_openais(name: str) -> None:
    # load() refuses a file whose hash differs from tiktoken's pin; check the pins are applied
    # to what is actually packaged, and that the table has the encoding's known size.
    raw = tokens.encoding_file(name)
    assert hashlib.sha256(raw).hexdigest() == tokens._FILES[name]
    table = load(name)
    last = max(tokens._SPECIAL[name])
    assert table.decode([last], "x") == tokens._SPECIAL[name][last]


def test_tampered_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "encoding_file", lambda name: b"aGVsbG8= 0\n")
    load.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="not OpenAI's"):
            load("cl100k_base")
    finally:
        load.cache_clear()
