"""The stream decoders, table-driven: whatever way the bytes are cut, the same events come out."""

from __future__ import annotations

import pytest

from proxy.sse import EventDecoder, JsonArrayDecoder, SSEDecoder, encode_sse, parse_event


def feed_in_pieces(decoder: EventDecoder, data: bytes, cut: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(data), cut):
        out += decoder.feed(data[i : i + cut])
    return out


SSE_CASES = [
    # (stream bytes, the data of each event)
    (b'data: {"a":1}\r\n\r\ndata: {"b":2}\r\n\r\n', [b'{"a":1}', b'{"b":2}']),
    (b'data: {"a":1}\n\ndata: {"b":2}\n\n', [b'{"a":1}', b'{"b":2}']),
    (b'data: {"a":1}\r\rdata: {"b":2}\r\r', [b'{"a":1}', b'{"b":2}']),
    (b'data:{"a":1}\n\n', [b'{"a":1}']),  # no space after the colon
    (b"data: one\ndata: two\n\n", [b"one\ntwo"]),  # multi-line data joined by LF
    (b"data: one\r\ndata: two\r\n\r\n", [b"one\ntwo"]),
    (b": keep-alive comment\n\ndata: x\n\n", [b"x"]),  # an event without data is skipped
    (b"event: ping\ndata: x\nid: 7\n\n", [b"x"]),  # other fields are ignored
    (b'data: {"a":1}\r\n\r\ndata: {"unfinished"', [b'{"a":1}']),  # the tail waits for more
]


@pytest.mark.parametrize(("stream", "events"), SSE_CASES)
@pytest.mark.parametrize("cut", [1, 2, 3, 7, 1000])
def test_sse_events_whatever_the_cut(stream: bytes, events: list[bytes], cut: int) -> None:
    assert feed_in_pieces(SSEDecoder(), stream, cut) == events


ARRAY_CASES = [
    (b'[{"a":1}\r\n,{"b":2}\r\n]', [b'{"a":1}', b'{"b":2}']),
    (b'[{"t":"braces } { in a string"}]', [b'{"t":"braces } { in a string"}']),
    (b'[{"t":"an escaped \\" quote }"},{"u":2}]', [b'{"t":"an escaped \\" quote }"}', b'{"u":2}']),
    (
        b'[{"t":"a backslash \\\\"},{"u":{"v":{}}}]',
        [b'{"t":"a backslash \\\\"}', b'{"u":{"v":{}}}'],
    ),
    (b'[{"a":1},{"b":', [b'{"a":1}']),  # an unfinished element waits for more
]


@pytest.mark.parametrize(("stream", "events"), ARRAY_CASES)
@pytest.mark.parametrize("cut", [1, 2, 3, 5, 1000])
def test_json_array_elements_whatever_the_cut(stream: bytes, events: list[bytes], cut: int) -> None:
    assert feed_in_pieces(JsonArrayDecoder(), stream, cut) == events


@pytest.mark.parametrize(
    ("data", "parsed"),
    [(b'{"a":1}', {"a": 1}), (b"[1]", None), (b"not json", None), (b"", None), (b"3", None)],
)
def test_parse_event_takes_objects_only(data: bytes, parsed: object) -> None:
    assert parse_event(data) == parsed


def test_encode_sse_round_trips() -> None:
    obj = {"choices": [{"delta": {"content": "a\nb"}}]}
    assert feed_in_pieces(SSEDecoder(), encode_sse(obj) * 2, 4) == [encode_sse(obj)[6:-2]] * 2
