"""Thought signatures carried in tool call ids survive the round trip exactly."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.openai.tool_ids import decode_signature, encode_tool_call_id, new_tool_call_id

ID_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


@given(st.binary(min_size=1, max_size=4096))
def test_round_trip_any_signature(raw: bytes) -> None:
    signature = base64.b64encode(raw).decode()
    call_id = encode_tool_call_id(new_tool_call_id(), signature)
    assert decode_signature(call_id) == signature
    assert ID_ALPHABET.fullmatch(call_id)
    assert len(call_id) <= 40 + 4 * len(raw) // 3 + 4


@pytest.mark.parametrize(
    ("call_id", "expected"),
    [
        ("call_abc", None),
        ("call_abc__thought__", None),
        ("call_abc__thought__not base64!", None),
        ("toolu_01XYZ", None),
        ("call_abc__thought__QUJD", "QUJD"),
        ("call_abc__thought__QUI", "QUI="),
        ("call_abc__thought__a-_b", "a+/b"),
    ],
    ids=[
        "plain",
        "empty_signature",
        "bad_alphabet",
        "foreign_id",
        "no_padding",
        "padded",
        "urlsafe",
    ],
)
def test_decode(call_id: str, expected: str | None) -> None:
    assert decode_signature(call_id) == expected


def test_ids_without_signature_stay_short() -> None:
    call_id = encode_tool_call_id(new_tool_call_id(), None)
    assert re.fullmatch(r"call_[0-9a-f]{24}", call_id)
