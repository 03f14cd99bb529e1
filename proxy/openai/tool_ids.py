"""Tool call ids that carry a Gemini 3 thought signature.

Gemini 3 returns an opaque ``thoughtSignature`` on a ``functionCall`` part and answers 400 when
the next turn sends that call back without it. OpenAI clients usually rebuild the assistant
message from ``id``, ``function.name`` and ``function.arguments`` only, so the signature rides
inside the id: ``call_<24 hex>`` + ``__thought__`` + the signature in unpadded base64url.
Calls without a signature get the short ``call_<24 hex>`` form. Base64url keeps the id within
``[A-Za-z0-9_-]``; its length is about 40 + 4/3 of the signature's bytes (a typical signature
of a few hundred bytes gives an id of a few hundred characters), which JSON and the SDKs carry
without complaint.

The same signature is also sent as ``extra_content.google.thought_signature`` on the tool call,
Google's own compat-layer form; on input that field wins over the id.
"""

from __future__ import annotations

import secrets

__all__ = ["SEPARATOR", "decode_signature", "encode_tool_call_id", "new_tool_call_id"]

SEPARATOR = "__thought__"
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def new_tool_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def encode_tool_call_id(base: str, signature: str | None) -> str:
    if not signature:
        return base
    # Gemini's signature is standard base64; translate the alphabet rather than decode and
    # re-encode, so the exact text comes back (padding is implied by the length).
    urlsafe = signature.rstrip("=").replace("+", "-").replace("/", "_")
    return f"{base}{SEPARATOR}{urlsafe}"


def decode_signature(tool_call_id: str) -> str | None:
    """The thought signature embedded in an id made by :func:`encode_tool_call_id`, if any."""
    _, sep, urlsafe = tool_call_id.partition(SEPARATOR)
    if not sep or not urlsafe or not _B64URL.issuperset(urlsafe):
        return None
    standard = urlsafe.replace("-", "+").replace("_", "/")
    return standard + "=" * (-len(standard) % 4)
