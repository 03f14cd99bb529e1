"""The admin API under /admin: tenants, keys, quota policies and usage, behind the admin token.

A FastAPI sub-application, so its OpenAPI schema is its own (/admin/openapi.json) and holds
nothing of the proxy routes. Errors use the OpenAI-style envelope, like every non-native route.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from ..db import queries
from ..db.reports import EARLIEST, GROUPS, LATEST, as_utc, usage_report
from ..db.tables import ApiKey, Tenant
from ..errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ProxyError,
    ServiceUnavailable,
    Unauthenticated,
)
from ..formats import decimal_text, write_usage
from ..pricing.report import explain
from ..quotas import QuotaPolicyError, delete_policy, get_policies, set_policy
from ..quotas.manage import MAX_COUNT
from ..services import Services, authenticate, services

__all__ = ["FromQ", "GroupQ", "ToQ", "create_admin_app", "tenant_usage", "usage_response"]


# -- auth and session ----------------------------------------------------------------------------


def require_admin(request: Request) -> Services:
    svc = services(request)
    token = svc.settings.admin_token
    if token is None or svc.settings.admin_token_problem is not None:
        raise Forbidden("The admin API is disabled: set GEMINI_METER_ADMIN_TOKEN to enable it.")
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    # Constant time whatever was sent (digests of equal length), the same answer for a missing,
    # blank and wrong token — and a blank one never matches, whatever the setting.
    given = hashlib.sha256(presented.encode()).digest()
    expected = hashlib.sha256(token.get_secret_value().encode()).digest()
    if scheme.lower() != "bearer" or not presented or not hmac.compare_digest(given, expected):
        raise Unauthenticated("Admin token missing or wrong.", code="invalid_admin_token")
    return svc


AdminDep = Annotated[Services, Depends(require_admin)]


async def session_dep(svc: AdminDep) -> Any:
    async with svc.sessionmaker() as session:
        yield session
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(session_dep)]


# -- shapes --------------------------------------------------------------------------------------

# Every string the API takes ends up compared with (or stored in) a database column: at most
# the column's length and no NUL (which PostgreSQL refuses), so bad input is a 400, never a 500.
NO_NUL = r"^[^\x00]*$"
NAME_LENGTH = 128  # tenants.name, api_keys.name, usage_events.model
KEY_REF_LENGTH = 32  # a key id or display prefix
DB_INT_MAX = 2**63 - 1

Text = Annotated[str, StringConstraints(max_length=NAME_LENGTH, pattern=NO_NUL)]
KeyRef = Annotated[str, StringConstraints(min_length=1, max_length=KEY_REF_LENGTH, pattern=NO_NUL)]
TenantP = Annotated[str, Path(min_length=1, max_length=NAME_LENGTH, pattern=NO_NUL)]
KeyP = Annotated[str, Path(min_length=1, max_length=KEY_REF_LENGTH, pattern=NO_NUL)]
NameQ = Annotated[str | None, Query(min_length=1, max_length=NAME_LENGTH, pattern=NO_NUL)]
KeyRefQ = Annotated[str | None, Query(min_length=1, max_length=KEY_REF_LENGTH, pattern=NO_NUL)]
KeyQ = Annotated[int | None, Query(ge=1, le=DB_INT_MAX, description="A key id.")]
FromQ = Annotated[datetime | None, Query(alias="from", description="Start, inclusive (UTC).")]
ToQ = Annotated[datetime | None, Query(alias="to", description="End, exclusive (UTC).")]
GroupQ = Annotated[str, Query(description=f"Comma-separated, any of {', '.join(GROUPS)}.")]
Count = Annotated[int | None, Field(default=None, ge=1, le=MAX_COUNT)]


class TenantIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class TenantPatch(BaseModel):
    disabled: bool | None = None


class TenantOut(BaseModel):
    id: int
    name: str
    disabled: bool
    created_at: datetime

    @classmethod
    def of(cls, t: Tenant) -> TenantOut:
        return cls(id=t.id, name=t.name, disabled=t.disabled, created_at=t.created_at)


class KeyIn(BaseModel):
    name: Text | None = None


class KeyOut(BaseModel):
    id: int
    tenant: str
    prefix: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, k: ApiKey, tenant: str) -> KeyOut:
        return cls(
            id=k.id, tenant=tenant, prefix=k.prefix, name=k.name, created_at=k.created_at,
            revoked_at=k.revoked_at, last_used_at=k.last_used_at,
        )  # fmt: skip


class KeyCreated(KeyOut):
    secret: str = Field(description="The key itself. Shown once: only its hash is stored.")


class QuotaIn(BaseModel):
    key: KeyRef | None = Field(
        default=None, description="Narrow to one key (id or display prefix)."
    )
    budget_usd: Decimal | None = Field(
        default=None, allow_inf_nan=False, description="USD budget per period."
    )
    period: Literal["day", "week", "month"] = "month"
    tokens: Count = Field(default=None, description="Token quota per period.")
    rpm: Count = None
    tpm: Count = None
    allowed_models: list[Text] | None = Field(
        default=None, max_length=1000, description="Allowed model ids (globs); [] allows none."
    )
    mode: Literal["hard", "soft"] = "hard"


class QuotaOut(BaseModel):
    policies: list[dict[str, Any]]
    limits: list[dict[str, Any]]


# -- routes --------------------------------------------------------------------------------------


async def _tenant(session: AsyncSession, name: str) -> Tenant:
    tenant = await queries.get_tenant(session, name)
    if tenant is None:
        raise NotFound(f"No tenant named {name!r}.", code="tenant_not_found")
    return tenant


def create_admin_app() -> FastAPI:
    app = FastAPI(
        title="gemini-meter admin API",
        version="1",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @app.post("/tenants", status_code=201, response_model=TenantOut, tags=["tenants"])
    async def create_tenant(body: TenantIn, session: SessionDep) -> TenantOut:
        if await queries.get_tenant(session, body.name) is not None:
            raise ProxyError(
                f"Tenant {body.name!r} already exists.", status_code=409, code="tenant_exists"
            )
        return TenantOut.of(await queries.create_tenant(session, body.name))

    @app.get("/tenants", response_model=list[TenantOut], tags=["tenants"])
    async def list_tenants(session: SessionDep) -> list[TenantOut]:
        return [TenantOut.of(t) for t in await queries.list_tenants(session)]

    @app.get("/tenants/{name}", response_model=TenantOut, tags=["tenants"])
    async def get_tenant(name: TenantP, session: SessionDep) -> TenantOut:
        return TenantOut.of(await _tenant(session, name))

    @app.patch("/tenants/{name}", response_model=TenantOut, tags=["tenants"])
    async def update_tenant(name: TenantP, body: TenantPatch, session: SessionDep) -> TenantOut:
        tenant = await _tenant(session, name)
        if body.disabled is not None:
            tenant.disabled = body.disabled
        await session.flush()
        return TenantOut.of(tenant)

    @app.post("/tenants/{name}/keys", status_code=201, response_model=KeyCreated, tags=["keys"])
    async def create_key(name: TenantP, body: KeyIn, session: SessionDep) -> KeyCreated:
        tenant = await _tenant(session, name)
        secret, key = await queries.create_key(session, tenant, body.name)
        return KeyCreated(**KeyOut.of(key, tenant.name).model_dump(), secret=secret)

    @app.get("/keys", response_model=list[KeyOut], tags=["keys"])
    async def list_keys(session: SessionDep, tenant: NameQ = None) -> list[KeyOut]:
        return [KeyOut.of(k, t) for k, t in await queries.list_keys(session, tenant)]

    @app.delete("/keys/{key}", status_code=204, tags=["keys"])
    async def revoke_key(key: KeyP, session: SessionDep) -> Response:
        """Revoke by id or display prefix; effective on every replica within the key cache TTL."""
        if await queries.revoke_key(session, key) == 0:
            raise NotFound(f"No active key {key!r}.", code="key_not_found")
        return Response(status_code=204)

    @app.get("/usage", tags=["usage"], response_model=list[dict[str, Any]])
    async def usage(
        session: SessionDep,
        tenant: NameQ = None,
        model: NameQ = None,
        key: KeyQ = None,
        since: FromQ = None,
        until: ToQ = None,
        group_by: GroupQ = "tenant,model",
        format: Literal["json", "csv"] = "json",
    ) -> Response:
        """Requests, tokens by kind and cost (decimal strings) over [from, to), grouped."""
        return await usage_response(
            session, tenant=tenant, model=model, key=key, since=since, until=until,
            group_by=group_by, fmt=format,
        )  # fmt: skip

    @app.put("/tenants/{name}/quota", response_model=QuotaOut, tags=["quotas"])
    async def set_quota(
        name: TenantP, body: QuotaIn, svc: AdminDep, session: SessionDep
    ) -> QuotaOut:
        """Create or replace the policy (a limit left out is removed)."""
        try:
            await set_policy(
                session, name, key_prefix=body.key, budget_usd=body.budget_usd,
                period=body.period, tokens=body.tokens, rpm=body.rpm, tpm=body.tpm,
                allowed_models=body.allowed_models, mode=body.mode,
            )  # fmt: skip
        except QuotaPolicyError as exc:
            raise BadRequest(str(exc)) from None
        await session.commit()
        return await _quota_state(svc, session, name, refresh=True)

    @app.get("/tenants/{name}/quota", response_model=QuotaOut, tags=["quotas"])
    async def get_quota(name: TenantP, svc: AdminDep, session: SessionDep) -> QuotaOut:
        """The tenant's policies and its use against every limit, with reset times."""
        await _tenant(session, name)
        return await _quota_state(svc, session, name, refresh=True)

    @app.delete("/tenants/{name}/quota", status_code=204, tags=["quotas"])
    async def delete_quota(
        name: TenantP, svc: AdminDep, session: SessionDep, key: KeyRefQ = None
    ) -> Response:
        try:
            deleted = await delete_policy(session, name, key)
        except QuotaPolicyError as exc:  # no such tenant, or no such key of it
            raise NotFound(str(exc), code="policy_not_found") from None
        if not deleted:
            raise NotFound(f"No quota policy for {name!r}.", code="policy_not_found")
        await session.commit()
        if svc.quotas is not None:
            await svc.quotas.refresh()
        return Response(status_code=204)

    @app.get("/prices/resolve", tags=["prices"], response_model=dict[str, Any])
    async def resolve_price(
        svc: AdminDep, model: str, at: str | None = None, price_list: str | None = None
    ) -> dict[str, Any]:
        """How a call to ``model`` at ``at`` (default now) would be priced, and why; as
        ``gemini-meter prices resolve --format json`` (docs/pricing.md, section 2)."""
        when = _when(at, "at")
        if price_list is not None and price_list not in svc.catalog.price_lists:
            raise BadRequest(f"Unknown price list {price_list!r}.", param="price_list")
        return explain(svc.catalog, model, at=when, price_list=price_list)

    return app


async def usage_response(
    session: AsyncSession,
    *,
    tenant: str | None,
    model: str | None,
    key: int | None,
    since: datetime | None,
    until: datetime | None,
    group_by: str,
    fmt: str,
) -> Response:
    """A usage report as JSON or CSV; shared by /admin/usage and the tenants' /v1/usage."""
    since, until = _in_range(since, "from"), _in_range(until, "to")
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise BadRequest(f"Cannot group by {bad[0]!r}: use {', '.join(GROUPS)}.", param="group_by")
    rows = await usage_report(
        session, since=since, until=until, tenant=tenant, model=model, key=key,
        group_by=groups,  # type: ignore[arg-type]
    )  # fmt: skip
    if fmt == "csv":
        buf = io.StringIO()
        write_usage(buf, [r.as_dict() for r in rows], "csv")
        return Response(buf.getvalue(), media_type="text/csv")
    body = [
        {k: decimal_text(v) if isinstance(v, Decimal) else v for k, v in r.as_dict().items()}
        for r in rows
    ]
    return Response(orjson.dumps(body), media_type="application/json")


async def tenant_usage(request: Request) -> Response:
    """GET /v1/usage: a tenant's own usage, with its own key; never another tenant's."""
    svc, key = await authenticate(request)
    q = request.query_params
    if q.get("tenant") not in (None, key.tenant_name):
        raise Forbidden("A tenant key reads its own tenant's usage only.", param="tenant")
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("format must be json or csv.", param="format")
    model = q.get("model")
    if model is not None and (len(model) > NAME_LENGTH or "\x00" in model):
        raise BadRequest(f"model must be a model id of at most {NAME_LENGTH} characters.",
                         param="model")  # fmt: skip
    since, until = _when(q.get("from"), "from"), _when(q.get("to"), "to")
    async with database_deadline(svc.settings.database_request_timeout), svc.sessionmaker() as s:
        return await usage_response(
            s, tenant=key.tenant_name, model=model, key=None, since=since, until=until,
            group_by=q.get("group_by", "model"), fmt=fmt,
        )  # fmt: skip


def _when(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{param} must be an ISO date or timestamp.", param=param) from None
    return _in_range(ts, param)


def _in_range(ts: datetime | None, param: str) -> datetime | None:
    if ts is None:
        return None
    utc = as_utc(ts)
    if utc is None:
        raise BadRequest(
            f"{param} must lie between {EARLIEST.date()} and {LATEST.date()} (UTC).", param=param
        )
    return utc


@contextlib.asynccontextmanager
async def database_deadline(seconds: float) -> AsyncIterator[None]:
    """Bound a request's wait on the database: past ``seconds``, 503 with Retry-After."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise ServiceUnavailable(
            "The database did not answer in time; retry shortly.", headers={"Retry-After": "1"}
        ) from None


async def _quota_state(
    svc: Services, session: AsyncSession, tenant: str, *, refresh: bool = False
) -> QuotaOut:
    policies = await get_policies(session, tenant)
    limits: list[dict[str, Any]] = []
    if svc.quotas is not None:
        if refresh:  # this replica at once; the others within their refresh interval
            await svc.quotas.refresh()
        limits = [st.to_dict() for st in await svc.quotas.status(tenant)]
    return QuotaOut(policies=[p.to_dict() for p in policies], limits=limits)
