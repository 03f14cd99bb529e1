"""Token estimates for replies that carry no usage (embeddings) and for quota reservations.

Source: seeds/003 (token counting): "for all Gemini models, one token is about 4 characters".
Estimates round up, so a reservation errs on the side of holding too much.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["CHARS_PER_TOKEN", "estimate_text_tokens", "request_text"]

CHARS_PER_TOKEN = 4


def estimate_text_tokens(texts: Iterable[str]) -> int:
    """Each text rounded up on its own: a one-character text is a token, not a quarter."""
    return sum(-(-len(t) // CHARS_PER_TOKEN) for t in texts)


def request_text(payload: Any) -> Iterable[str]:
    """Every ``text`` string anywhere in a Gemini request body (contents, system, requests)."""
    stack = [payload]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "text" and isinstance(v, str):
                    yield v
                elif isinstance(v, dict | list):
                    stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)
