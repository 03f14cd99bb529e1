"""Context caches (``cachedContents``) through the proxy: tenant-scoped, storage billed.

Storage is billed per million token-hours (proxy/pricing/storage.py) from the token count and the
times the upstream's reply states, upfront for each period the cache is committed to:

- create: a row from ``createTime`` to ``expireTime`` (what the cache commits to);
- patch: a row for the extension from the billed-until time to the new ``expireTime`` (a credit,
  negative, when the expiry moves earlier);
- delete before the expiry: a credit row for the unheld remainder (now to the billed-until time).

``resources.billed_until`` records how far a cache is billed, moved under a row lock, so each
period is billed once whichever replica serves the call; the rows of one cache add up to its
token count x the hours it was actually held x the rate. Hard budgets hold what a create or an
extending patch commits to (estimated from the request: its prompt tokens and TTL) and are
settled at once at the billed amount; a credit is not given back to a budget (docs/quotas.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..caller import Caller
from ..db.resources import StorageMove, aware
from ..errors import BadRequest, NotFound, ProxyError
from ..httputil import parse_json_object, read_body
from ..model_ids import ANY_MODEL, ModelId, model_id
from ..pipeline import MeteredCall, meter_headers, read_whole
from ..pricing.cost import PricedCall
from ..pricing.storage import price_storage, storage_rate, token_hours
from ..quotas.estimate import Estimate, prompt_tokens
from ..resources import check_references
from ..services import Services, authenticate
from .owned import list_owned
from .relay import passthrough
from .relay import version_of as api_version

__all__ = ["cache_name", "parse_duration", "parse_time", "requested_expiry", "routes"]

VERSIONS = ("v1beta", "v1")
DEFAULT_TTL = timedelta(hours=1)  # Google's, when a create names neither ttl nor expireTime
_DURATION = re.compile(r"(\d{1,12})(?:\.(\d{1,9}))?s")
_FRACTION = re.compile(r"\.(\d+)")
_ID = re.compile(r"[A-Za-z0-9-]+")


def cache_name(raw: str) -> str:
    cache_id = raw.removeprefix("cachedContents/")
    if not cache_id or len(cache_id) > 64 or not _ID.fullmatch(cache_id):
        raise BadRequest(f"Invalid cached content name {raw[:80]!r}.")
    return f"cachedContents/{cache_id}"


def parse_duration(text: Any) -> timedelta | None:
    """``"3600s"`` / ``"1.5s"`` (google.protobuf.Duration in JSON), else None."""
    m = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        return None
    micros = int((m[2] or "").ljust(9, "0")[:6] or 0)
    return timedelta(seconds=int(m[1]), microseconds=micros)


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 time (Google writes up to nanoseconds, Python reads microseconds), in UTC."""
    if not isinstance(text, str):
        return None
    text = _FRACTION.sub(lambda m: "." + m[1][:6].ljust(6, "0"), text.strip(), count=1)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo else None


def requested_expiry(body: dict[str, Any], now: datetime, default: timedelta | None) -> datetime:
    """The expiry a create or patch asks for (``ttl`` or ``expireTime``, either spelling);
    ``default`` when it names neither (None: a 400, as a patch must name one)."""
    ttl = body.get("ttl")
    expire = body.get("expireTime", body.get("expire_time"))
    if ttl is not None and expire is not None:
        raise BadRequest("Only one of ttl and expireTime may be set.")
    if ttl is not None:
        delta = parse_duration(ttl)
        if delta is None:
            raise BadRequest(f'Invalid ttl {str(ttl)[:40]!r}: a duration such as "3600s".')
        return now + delta
    if expire is not None:
        at = parse_time(expire)
        if at is None:
            raise BadRequest(f"Invalid expireTime {str(expire)[:40]!r}: an RFC 3339 time.")
        return at
    if default is None:
        raise BadRequest("Nothing to update: set ttl or expireTime.")
    return now + default


def _now() -> datetime:
    return datetime.now(UTC)


def _storage_estimate(
    svc: Services, model: str, tokens: int, start: datetime, end: datetime
) -> Estimate:
    """What a cache of ``tokens`` held from ``start`` to ``end`` commits the budget to."""
    found = storage_rate(svc.catalog, model)
    cost = None
    if found is not None:
        hours = max(Decimal(0), token_hours(tokens, start, end))
        cost = hours * found[1].usd / Decimal(1_000_000)
    return Estimate(0, 0, 0, cost)


def _reply_times(content: bytes) -> tuple[str, int, datetime, datetime]:
    """(name, totalTokenCount, createTime, expireTime) of a CachedContent reply."""
    try:
        body = orjson.loads(content)
        name = cache_name(str(body["name"]))
        tokens = int(body.get("usageMetadata", {}).get("totalTokenCount", 0))
        created = parse_time(body.get("createTime")) or _now()
        expire = parse_time(body["expireTime"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError, BadRequest):
        raise ProxyError("The upstream's cache reply is malformed.", status_code=502) from None
    if expire is None:
        raise ProxyError("The upstream's cache reply has no expireTime.", status_code=502)
    return name, tokens, created, expire


def _charged(
    call: MeteredCall, content: bytes, status: int, priced: PricedCall | None, detail: Any
) -> Response:
    """Close the call at ``priced`` (None: nothing billed, $0) and answer ``content``."""
    call.meter.detail = detail
    priced = priced or PricedCall(Decimal(0), True, None, None, None, reason="no storage moved")
    result = call.close(status, priced=priced)
    headers = {"content-type": "application/json"} | meter_headers(call, result)
    return Response(content, status_code=status, headers=headers)


def _detail(tokens: int, hours: Decimal, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "tokenCount": tokens,
        "tokenHours": str(hours),
        "from": start.isoformat(),
        "to": end.isoformat(),
    }


# -- routes ------------------------------------------------------------------------------------


async def create(request: Request) -> Response:
    v = api_version(request)
    svc, caller = await authenticate(request)
    body = await read_body(request, svc.settings.max_body_bytes)
    payload = parse_json_object(body)
    model = model_id(str(payload.get("model") or ""), prefixed=True)
    await check_references(svc.owners, caller, body, payload)  # its files must be the tenant's
    now = _now()
    expiry = requested_expiry(payload, now, DEFAULT_TTL)
    tokens, _audio = prompt_tokens(payload)
    call = await svc.pipeline.admit(
        caller, route="native", operation="cachedContents.create", model=model, request=payload,
        estimate=_storage_estimate(svc, model.name, tokens, now, expiry),
    )  # fmt: skip
    sent = await _send(call, "POST", f"/{v}/cachedContents", body)
    if isinstance(sent, Response):
        return sent
    content, (name, count, created, expire) = sent
    call.meter.resource = name
    priced, hours = price_storage(svc.catalog, model.name, count, created, created, expire)
    try:
        await svc.owners.add(
            name, "cache", caller, model=model.name, created_at=created, token_count=count,
            expire_time=expire, billed_until=expire,
        )  # fmt: skip
    except ProxyError:
        # The cache exists upstream and is billed: its row stays, the client gets a 503.
        _charged(call, content, 503, priced, _detail(count, hours, created, expire))
        raise
    return _charged(call, content, 200, priced, _detail(count, hours, created, expire))


async def _send(
    call: MeteredCall,
    method: str,
    path: str,
    body: bytes,
    params: list[tuple[str, str]] | None = None,
) -> tuple[bytes, tuple[str, int, datetime, datetime]] | Response:
    """Send a create or patch upstream: the reply's body and the cache's name, token count,
    creation and expiry — or Gemini's failure passed through. A reply without them is the
    upstream's fault: the call is closed as malformed."""
    reply = await call.send(
        method, path, params=params or (), content=body,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    if reply.status_code != 200:
        return await passthrough(call, reply)
    content = await read_whole(reply)
    try:
        return content, _reply_times(content)
    except ProxyError as exc:
        call.close(exc.status_code, error_class="malformed_cache_reply")
        raise


async def _owned(request: Request) -> tuple[Services, Caller, str, str, Any]:
    v = api_version(request)
    svc, caller = await authenticate(request)
    name = cache_name(request.path_params["cache"])
    row = await svc.owners.get(name, caller, kind="cache")
    if row is None:
        raise NotFound(f"CachedContent {name} was not found (or is not yours).")
    return svc, caller, v, name, row


def _model(row: Any) -> ModelId:
    try:
        return model_id(row.model) if row.model else ANY_MODEL
    except BadRequest:
        return ANY_MODEL


async def get(request: Request) -> Response:
    svc, caller, v, name, _row = await _owned(request)
    call = svc.pipeline.open(
        caller, route="native", operation="cachedContents.get", model=ANY_MODEL
    )
    call.meter.resource = name
    return await passthrough(call, await call.send("GET", f"/{v}/{name}"))


async def patch(request: Request) -> Response:
    svc, caller, v, name, row = await _owned(request)
    body = await read_body(request, svc.settings.max_body_bytes)
    payload = parse_json_object(body)
    model = _model(row)
    wanted = requested_expiry(payload, _now(), None)
    billed = aware(row.billed_until) if row.billed_until else _now()
    tokens = row.token_count or 0
    if wanted > billed:  # an extension: the budget holds what it commits to
        call = await svc.pipeline.admit(
            caller, route="native", operation="cachedContents.patch", model=model,
            request=payload, estimate=_storage_estimate(svc, model.name, tokens, billed, wanted),
        )  # fmt: skip
    else:  # a shortening is a credit: nothing to hold
        call = svc.pipeline.open(
            caller, route="native", operation="cachedContents.patch", model=model
        )
    call.meter.resource = name
    params = [("updateMask", m) for m in request.query_params.getlist("updateMask")[:1]]
    sent = await _send(call, "PATCH", f"/{v}/{name}", body, params)
    if isinstance(sent, Response):
        return sent
    content, (_name, _count, _created, expire) = sent
    moved = await svc.owners.bill_storage(name, expire)
    if moved is None:  # not billed before (no row to move): nothing to add
        return _charged(call, content, 200, None, None)
    return _bill_move(svc, call, model, content, moved)


async def delete(request: Request) -> Response:
    svc, caller, v, name, row = await _owned(request)
    model = _model(row)
    call = svc.pipeline.open(caller, route="native", operation="cachedContents.delete", model=model)
    call.meter.resource = name
    reply = await call.send("DELETE", f"/{v}/{name}")
    if reply.status_code not in (200, 403, 404):
        return await passthrough(call, reply)
    content = await read_whole(reply)
    status = reply.status_code
    if status != 200:
        # Gone already: expired (billed to its expiry, rightly) or deleted by another call,
        # whose credit stands. Billing does not move here.
        await svc.owners.delete(name)
        return _charged(call, content, status, None, None)
    moved = await svc.owners.bill_storage(name, _now(), delete=True)
    if moved is None or moved.new_until == moved.billed_until:
        return _charged(call, content, status, None, None)
    return _bill_move(svc, call, model, content, moved)


def _bill_move(
    svc: Services, call: MeteredCall, model: ModelId, content: bytes, moved: StorageMove
) -> Response:
    """The row of a cache's billing moved from ``billed_until`` to ``new_until``: the
    extension a patch commits to, or the credit of an early delete."""
    priced, hours = price_storage(
        svc.catalog, model.name, moved.token_count, moved.held_from, moved.billed_until,
        moved.new_until,
    )  # fmt: skip
    detail = _detail(moved.token_count, hours, moved.billed_until, moved.new_until)
    return _charged(call, content, 200, priced, detail)


async def list_caches(request: Request) -> Response:
    return await list_owned(request, "cache", "cachedContents", "cachedContents.list")


def routes() -> list[BaseRoute]:
    return [
        route
        for v in VERSIONS
        for route in (
            Route(f"/{v}/cachedContents", create, methods=["POST"]),
            Route(f"/{v}/cachedContents", list_caches, methods=["GET"]),
            Route(f"/{v}/cachedContents/{{cache}}", get, methods=["GET"]),
            Route(f"/{v}/cachedContents/{{cache}}", patch, methods=["PATCH"]),
            Route(f"/{v}/cachedContents/{{cache}}", delete, methods=["DELETE"]),
        )
    ]
