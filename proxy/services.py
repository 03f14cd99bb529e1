"""The long-lived objects of one proxy process, built from Settings and shared by all routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from starlette.requests import Request

from . import metrics
from .auth import KeyCache, client_key
from .caller import Caller
from .db.engine import make_engine, make_sessionmaker
from .metering.ledger import LedgerWriter
from .metering.retention import Retention
from .metering.spool import Spool
from .pipeline import Pipeline
from .pricing.catalog import Catalog
from .quotas.service import QuotaHooks, QuotaService
from .redact import register_secrets
from .resources import Owners
from .settings import Settings
from .upstream import AiohttpSender, Sender, Upstream

__all__ = ["Services", "authenticate", "services"]


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[Any]
    keys: KeyCache
    upstream: Upstream
    catalog: Catalog
    ledger: LedgerWriter
    pipeline: Pipeline
    owners: Owners
    quotas: QuotaService | None = None
    retention: Retention | None = None

    @classmethod
    def build(cls, settings: Settings, *, upstream_sender: Sender | None = None) -> Services:
        """``upstream_sender`` replaces aiohttp (tests pass an in-process fake)."""
        admin = settings.admin_token.get_secret_value() if settings.admin_token else None
        register_secrets(*settings.upstream_keys, admin)  # scrubbed from replies and logs
        engine = make_engine(settings.database_url)
        sessionmaker = make_sessionmaker(engine)
        catalog = Catalog.load(
            settings.price_list, settings.price_overrides, settings.price_list_fallback or None
        )
        ledger = LedgerWriter(
            engine,
            batch_size=settings.ledger_batch_size,
            flush_interval=settings.ledger_flush_interval,
            spool=Spool(settings.spool_dir),
        )
        sender = upstream_sender or AiohttpSender(
            settings.upstream_url,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
            max_connections=settings.upstream_max_connections,
        )
        upstream = Upstream(sender, settings.upstream_keys, retries=settings.upstream_retries)
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            keys=KeyCache(
                sessionmaker,
                ttl=settings.key_cache_ttl,
                lookup_timeout=settings.key_lookup_timeout,
            ),
            upstream=upstream,
            catalog=catalog,
            ledger=ledger,
            pipeline=Pipeline(
                catalog=catalog,
                ledger=ledger,
                upstream=upstream,
                hooks=(metrics.CallMetrics().on_call,),
            ),
            owners=Owners(sessionmaker, timeout=settings.resource_lookup_timeout),
        )

    async def start(self) -> None:
        self.ledger.start()
        self.keys.start()
        self.quotas = await QuotaService.create(
            self.settings, self.engine, self.catalog, hooks=quota_hooks(),
            redis_prefix=self.settings.redis_prefix,
        )  # fmt: skip
        self.pipeline.quotas = self.quotas
        if self.settings.ledger_retention_days:
            self.retention = Retention(self.engine, self.settings.ledger_retention_days)
            self.retention.start()

    async def stop(self) -> None:
        if self.retention is not None:
            await self.retention.stop()
        await self.keys.stop()
        await self.upstream.aclose()
        if self.quotas is not None:
            await self.quotas.aclose()  # settles what is in flight, before the engine goes
        await self.ledger.stop()
        await self.engine.dispose()


def quota_hooks() -> QuotaHooks:
    m = metrics.QuotaMetrics()
    return QuotaHooks(
        on_usage=m.on_usage, on_threshold=m.on_threshold, on_refusal=m.on_refusal,
        on_sync=m.on_sync,
    )  # fmt: skip


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def authenticate(request: Request) -> tuple[Services, Caller]:
    """The process's services and who is calling, from the key the request carries."""
    svc = services(request)
    caller = await svc.keys.authenticate(client_key(request.headers, request.query_params))
    return svc, caller
