"""The upstream: the client (key pool, retries) and the sender it talks through."""

from .aiohttp_sender import AiohttpSender
from .client import Body, KeyPool, Sender, Upstream, UpstreamReply, UpstreamResponse
from .live import LiveConnection, LiveUpstream

__all__ = [
    "AiohttpSender",
    "Body",
    "KeyPool",
    "LiveConnection",
    "LiveUpstream",
    "Sender",
    "Upstream",
    "UpstreamReply",
    "UpstreamResponse",
]
