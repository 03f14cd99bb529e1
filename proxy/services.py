"""The long-lived objects of one proxy process, built from Settings and shared by all routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from starlette.requests import Request

from . import metrics
from .auth import KeyCache
from .db.engine import make_engine, make_sessionmaker
from .metering.call import Metering
from .metering.ledger import LedgerWriter
from .metering.retention import Retention
from .metering.spool import Spool
from .pricing.catalog import Catalog
from .quotas.service import QuotaHooks, QuotaService
from .settings import Settings
from .upstream import Upstream

__all__ = ["Services", "services"]


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[Any]
    keys: KeyCache
    upstream: Upstream
    catalog: Catalog
    ledger: LedgerWriter
    metering: Metering
    quotas: QuotaService | None = None
    retention: Retention | None = None

    @classmethod
    def build(
        cls, settings: Settings, *, upstream_transport: httpx.AsyncBaseTransport | None = None
    ) -> Services:
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
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            keys=KeyCache(sessionmaker, ttl=settings.key_cache_ttl),
            upstream=Upstream(
                settings.upstream_url,
                settings.upstream_keys,
                connect_timeout=settings.upstream_connect_timeout,
                read_timeout=settings.upstream_read_timeout,
                max_connections=settings.upstream_max_connections,
                retries=settings.upstream_retries,
                transport=upstream_transport,
            ),
            catalog=catalog,
            ledger=ledger,
            metering=Metering(catalog=catalog, ledger=ledger),
        )

    async def start(self) -> None:
        self.ledger.start()
        self.quotas = await QuotaService.create(
            self.settings, self.engine, self.catalog, hooks=quota_hooks(),
            redis_prefix=self.settings.redis_prefix,
        )  # fmt: skip
        self.metering.quotas = self.quotas
        if self.settings.ledger_retention_days:
            self.retention = Retention(self.engine, self.settings.ledger_retention_days)
            self.retention.start()

    async def stop(self) -> None:
        if self.retention is not None:
            await self.retention.stop()
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
