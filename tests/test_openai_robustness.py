"""Malformed or unexpected Gemini replies never crash the translators, and what they produce
always parses with the OpenAI SDK's types."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.openai.chat import gemini_reply_to_chat
from proxy.openai.errors import UpstreamStreamError
from proxy.openai.stream import ChatStreamTranslator

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
parts = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "text": json_values | st.text(max_size=5),
            "thought": json_values,
            "functionCall": json_values
            | st.fixed_dictionaries(
                {"name": json_values, "args": json_values}, optional={"id": json_values}
            ),
            "thoughtSignature": json_values,
        },
    )
    | json_values,
    max_size=3,
)
candidates = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "content": json_values | st.fixed_dictionaries({"parts": parts}),
            "finishReason": st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "OTHER"])
            | json_values,
            "index": st.integers(0, 2) | json_values,
        },
    )
    | json_values,
    max_size=3,
)
replies = st.fixed_dictionaries(
    {},
    optional={
        "candidates": candidates | json_values,
        "promptFeedback": json_values | st.fixed_dictionaries({"blockReason": json_values}),
        "usageMetadata": json_values
        | st.fixed_dictionaries(
            {"promptTokenCount": json_values, "candidatesTokenCount": json_values}
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(replies)
def test_reply_never_crashes(reply: dict[str, Any]) -> None:
    out = gemini_reply_to_chat(reply, model="m", completion_id="chatcmpl-x", created=0)
    ChatCompletion.model_validate(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(replies, max_size=4), st.booleans())
def test_stream_never_crashes(events: list[dict[str, Any]], include_usage: bool) -> None:
    t = ChatStreamTranslator(
        model="m", completion_id="chatcmpl-x", created=0, include_usage=include_usage
    )
    chunks = [c for e in events for c in t.feed(e)] + t.finish()
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    finished = [ch["index"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert len(finished) == len(set(finished))  # at most one finish_reason per choice


@given(json_values)
def test_any_error_event_maps_to_an_envelope(error: Any) -> None:
    t = ChatStreamTranslator(model="m", completion_id="c", created=0, include_usage=False)
    if error is None:
        return
    try:
        t.feed({"error": error})
    except UpstreamStreamError as exc:
        assert 400 <= exc.status < 600
        assert isinstance(exc.body["error"]["message"], str) and exc.body["error"]["type"]
    else:  # pragma: no cover
        raise AssertionError("an error event must raise")
