"""Model ids: checked once at the edge, then trusted by every layer below.

A client names a model in a URL (``/models/{model}:generateContent``) or a body field
(``"model": "models/gemini-2.5-flash"``). :func:`model_id` refuses anything that is not one safe
path segment — nothing that could climb or leave the upstream path the proxy means to call — and
returns a :class:`ModelId`: the segment as given (for the upstream URL) and its normalised form
(lower case, for the catalog, quotas, the ledger and metrics).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import BadRequest

__all__ = ["ANY_MODEL", "ModelId", "model_id"]

# One path segment of safe characters: no '/', no '..' prefix, no scheme, no '%'.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class ModelId:
    segment: str  # as the client wrote it, checked: safe in an upstream path
    name: str  # normalised: what every table, counter, label and price list is keyed by

    def __str__(self) -> str:
        return self.name


# Calls about no model in particular (listing the models).
ANY_MODEL = ModelId("*", "*")


def model_id(raw: str, *, prefixed: bool = False) -> ModelId:
    """Check and normalise a model id; ``prefixed`` accepts (and drops) a ``models/`` prefix
    and surrounding blanks, as body fields may carry them. BadRequest names what is wrong."""
    segment = raw.strip().removeprefix("models/") if prefixed else raw
    if not _SEGMENT.fullmatch(segment):
        raise BadRequest(f"Invalid model name {segment[:80]!r}.")
    return ModelId(segment, segment.lower())
