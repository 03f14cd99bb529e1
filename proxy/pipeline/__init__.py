"""The metered-call pipeline: every metered route admits, sends, observes and closes through it.

``call.py`` is the call's life (admission, upstream send, the single close that prices,
settles, records and counts it); ``replies.py`` builds whole and streamed replies from it.
"""

from .call import CallResult, ClosedCall, MeteredCall, Pipeline
from .replies import (
    COST_HEADER,
    OVERHEAD_HEADER,
    Observer,
    StreamHandler,
    fail,
    finish,
    meter_headers,
    read_whole,
    stream,
)

__all__ = [
    "COST_HEADER",
    "OVERHEAD_HEADER",
    "CallResult",
    "ClosedCall",
    "MeteredCall",
    "Observer",
    "Pipeline",
    "StreamHandler",
    "fail",
    "finish",
    "meter_headers",
    "read_whole",
    "stream",
]
