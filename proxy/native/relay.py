"""What every native route shares: the API version a request came through, and Gemini's reply
passed through as Gemini sent it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..httputil import reply_headers
from ..pipeline import CallResult, MeteredCall, finish, meter_headers
from ..pipeline.replies import Price
from ..upstream import UpstreamResponse

__all__ = ["passthrough", "version_of"]


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
