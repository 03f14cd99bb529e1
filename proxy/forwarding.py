"""What every metered route does around the upstream call: authenticate, send, close the meter."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request

from .auth import client_key
from .db.queries import KeyInfo
from .errors import ProxyError
from .metering.call import CallMeter
from .services import Services, services
from .streaming import Outcome
from .upstream import UpstreamResponse

__all__ = [
    "COST_HEADER",
    "OVERHEAD_HEADER",
    "authenticate",
    "open_meter",
    "quota_headers",
    "read_whole",
    "send_metered",
    "stream_closer",
]

COST_HEADER = "x-gemini-meter-cost-usd"
OVERHEAD_HEADER = "x-gemini-meter-overhead-ms"


async def authenticate(request: Request) -> tuple[Services, KeyInfo]:
    svc = services(request)
    key = await svc.keys.authenticate(client_key(request.headers, request.query_params))
    return svc, key


async def open_meter(
    svc: Services,
    key: KeyInfo,
    *,
    route: str,
    operation: str,
    model: str,
    request: Mapping[str, Any],
    streamed: bool = False,
    end_user: str | None = None,
) -> CallMeter:
    """Admit the call against its tenant's quotas (raising if refused), then open its meter.

    Nothing awaits between the two, so a reservation is always released by the meter's close.
    """
    admission = None
    if svc.quotas is not None:
        admission = await svc.quotas.admit(key, model=model, request=request, operation=operation)
    return svc.metering.open(
        key, route=route, operation=operation, model=model, streamed=streamed,
        end_user=end_user, admission=admission,
    )  # fmt: skip


def quota_headers(meter: CallMeter) -> dict[str, str]:
    """The x-ratelimit-* headers of the tenant's limits, for every reply (OpenAI does the same)."""
    return dict(meter.admission.headers) if meter.admission is not None else {}


async def send_metered(
    svc: Services,
    meter: CallMeter,
    method: str,
    path: str,
    *,
    params: list[tuple[str, str]] | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    stream: bool = False,
) -> UpstreamResponse:
    """Send upstream; a call that gets no reply is still metered before the error propagates."""
    sent = time.perf_counter()
    try:
        upstream = await svc.upstream.send(
            method, path, params=params or [], content=content, headers=headers, stream=stream
        )
    except ProxyError as exc:
        meter.close(exc.status_code, error_class=type(exc).__name__)
        raise
    meter.retries = upstream.retries
    if stream:
        # The rest of a stream's time is the upstream generating: overhead is what came before.
        meter.pre_upstream = sent - meter.started
    else:
        meter.upstream_seconds += time.perf_counter() - sent
        meter.first_byte()
    return upstream.response


async def read_whole(reply: UpstreamResponse) -> bytes:
    """The body of a reply opened as a stream (a stream that failed before its first event)."""
    if not reply.is_closed:
        try:
            await reply.aread()
        finally:
            await reply.aclose()
    return reply.content


def stream_closer(
    reply: UpstreamResponse, meter: CallMeter
) -> Callable[[Outcome], Awaitable[None]]:
    """The end of a forwarded stream: close the upstream reply, then the meter, once."""

    async def on_close(outcome: Outcome) -> None:
        try:
            await reply.aclose()
        finally:
            # An upstream error seen first explains the end better than what followed it.
            if meter.error_class is None and outcome != "completed":
                meter.error_class = (
                    "client_disconnected" if outcome == "client_disconnected" else "stream_failed"
                )
            meter.close(200)

    return on_close
