"""What every native route shares: the API version a request came through, and Gemini's reply
passed through as Gemini sent it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ProxyError
from ..httputil import forward_headers, reply_headers
from ..model_ids import ModelId
from ..pipeline import CallResult, MeteredCall, finish, meter_headers, read_whole
from ..pipeline.replies import Price
from ..sse import parse_event
from ..upstream import UpstreamResponse

__all__ = ["Started", "passthrough", "start_operation", "version_of"]


def version_of(request: Request) -> str:
    # "/v1/..." is v1; "/v1beta/..." and the unversioned "/models/..." (litellm's gemini/
    # provider with the bare proxy URL, registered in app.py) are v1beta; so are uploads and
    # downloads, under /upload/{version}/ and /download/{version}/.
    path = request.url.path
    return "v1" if path.startswith(("/v1/", "/upload/v1/", "/download/v1/")) else "v1beta"


async def passthrough(
    call: MeteredCall, reply: UpstreamResponse, price: Price | None = None
) -> Response:
    """Gemini's reply as Gemini sent it (success or failure), with the metering headers.
    ``price``: a success priced from the reply (images), see :func:`proxy.pipeline.finish`."""

    def render(content: bytes, result: CallResult) -> Response:
        headers = reply_headers(reply.headers) | meter_headers(call, result)
        return Response(content, status_code=reply.status_code, headers=headers)

    return await finish(
        call,
        reply,
        succeeded=lambda content, _body, result: render(content, result),
        failed=lambda _reply, content, result: render(content, result),
        price=price,
    )


Started = tuple[UpstreamResponse, bytes, Mapping[str, Any], str]


async def start_operation(
    call: MeteredCall,
    request: Request,
    model: ModelId,
    method: str,
    body: bytes,
    *,
    named: Callable[[str], bool],
    what: str,
) -> Started | Response:
    """POST a model method that starts a long-running operation (a batch, a video): the reply,
    its body, the operation and its name — or Gemini's failure passed through. An answer
    without a name the proxy could own is the upstream's fault: 502, the call closed."""
    reply = await call.send(
        "POST", f"/{version_of(request)}/models/{model.segment}:{method}", content=body,
        headers=forward_headers(request.headers),
    )  # fmt: skip
    if reply.status_code != 200:
        return await passthrough(call, reply)
    content = await read_whole(reply)
    op = parse_event(content)
    name = op.get("name") if op else None
    if op is None or not isinstance(name, str) or not named(name):
        call.close(502, error_class="upstream_malformed")
        raise ProxyError(f"The Gemini API answered {what} without its name.", status_code=502)
    return reply, content, op, name
