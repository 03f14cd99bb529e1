"""What the tenant-scoped resource routes share: lists built from the tenant's own resources.

All tenants share one upstream project, so an upstream list would show every tenant's files and
caches. A list here pages through the tenant's rows (Owners.page: newest first, keyset tokens of
the proxy's own) and reads each resource from the upstream, on one metered call: another
tenant's never appear, and one the upstream no longer has (expired) falls out of the list and is
marked deleted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadRequest
from ..model_ids import ANY_MODEL
from ..pipeline import meter_headers, read_whole
from ..services import authenticate
from .relay import passthrough, version_of

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "list_owned", "page_size"]

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
GONE = (403, 404)  # Google's answers for a resource it no longer holds


def page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        raise BadRequest(f"Invalid pageSize {raw[:20]!r}: an integer.") from None
    return DEFAULT_PAGE_SIZE if size <= 0 else min(size, MAX_PAGE_SIZE)


async def list_owned(request: Request, kind: str, key: str, operation: str) -> Response:
    """``{key: [...], "nextPageToken"}``: one page of the caller's resources of ``kind``."""
    v = version_of(request)
    svc, caller = await authenticate(request)
    size = page_size(request.query_params.get("pageSize"))
    page = await svc.owners.page(caller, kind, size, request.query_params.get("pageToken"))
    call = svc.pipeline.open(caller, route="native", operation=operation, model=ANY_MODEL)
    replies = await asyncio.gather(*(call.send("GET", f"/{v}/{row.name}") for row in page.rows))
    items: list[Any] = []
    for row, reply in zip(page.rows, replies, strict=True):
        if reply.status_code in GONE:
            await reply.aclose()
            await svc.owners.delete(row.name)
            continue
        if reply.status_code != 200:
            for other in replies:
                if other is not reply:
                    await other.aclose()
            return await passthrough(call, reply)
        items.append(orjson.loads(await read_whole(reply)))
    body: dict[str, Any] = {key: items} if items else {}
    if page.next_token:
        body["nextPageToken"] = page.next_token
    result = call.close(200)
    headers = {"content-type": "application/json"} | meter_headers(call, result)
    return Response(orjson.dumps(body), headers=headers)
