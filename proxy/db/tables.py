"""SQLAlchemy 2 tables of the ledger: tenants, their API keys, and one usage event per call."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    TypeDecorator,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from ..usage import REPORTED_KINDS, TOKEN_KINDS

__all__ = [
    "ApiKey",
    "Base",
    "Money",
    "QuotaCounter",
    "QuotaPolicy",
    "QuotaReservation",
    "Resource",
    "Tenant",
    "UsageEvent",
    "UsageRollup",
]

# Named constraints so Alembic migrations are stable across SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MONEY_SCALE = 10
_UNITS = Decimal(10) ** MONEY_SCALE


class Money(TypeDecorator[Decimal]):
    """USD with 10 decimal places, exact on both databases.

    PostgreSQL stores NUMERIC(20, 10). SQLite has no exact decimal type (it would keep a float),
    so there the amount is an integer count of 1e-10 USD, which SUM() also adds exactly.
    """

    impl = Numeric(20, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return int((Decimal(value) * _UNITS).to_integral_value())

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)) / _UNITS
        return Decimal(value)


# SQLite's INTEGER primary key must be exactly INTEGER to autoincrement.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    # SHA-256 of the secret: keys are 256-bit random, so a fast hash is not brute-forceable.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UsageEvent(Base):
    """One metered call. The token columns are :data:`proxy.usage.TOKEN_KINDS`, in order."""

    # Typed names for the columns code refers to by name (the rest are read with getattr).
    id: Mapped[str]
    created_at: Mapped[datetime]
    tenant_id: Mapped[int]
    key_id: Mapped[int | None]
    model: Mapped[str]
    status: Mapped[int]
    total_tokens: Mapped[int]
    estimated: Mapped[bool]
    cost_usd: Mapped[Decimal | None]
    priced: Mapped[bool]

    __table__ = Table(
        "usage_events",
        Base.metadata,
        # A client-generated id, so replaying a batch after a failure never doubles a row.
        Column("id", String(32), primary_key=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("tenant_id", BigInteger, nullable=False),
        Column("key_id", BigInteger),
        Column("model", String(128), nullable=False),
        Column("operation", String(32), nullable=False),
        Column("route", String(16), nullable=False),
        Column("streamed", Boolean, nullable=False),
        Column("status", Integer, nullable=False),
        *(Column(kind.name, Integer, nullable=False, default=0) for kind in TOKEN_KINDS),
        Column("total_tokens", Integer, nullable=False, default=0),
        Column("estimated", Boolean, nullable=False, default=False),
        Column("cost_usd", Money()),
        Column("priced", Boolean, nullable=False, default=False),
        Column("price_list", String(32)),
        Column("price_version", String(32)),
        Column("latency_ms", Float, nullable=False),
        Column("ttfb_ms", Float),
        Column("response_id", String(128)),
        Column("model_version", String(128)),
        Column("error_class", String(64)),
        Column("end_user", String(256)),
        Column("retries", Integer, nullable=False, default=0),
        # The stored resource a row concerns, and what it measured besides tokens (issue 20).
        Column("resource", String(256)),
        Column("detail", JSON),
        # A Live API session's rows, one per turn (issue 21): the session and the turn's number.
        Column("session_id", String(64)),
        Column("turn", Integer),
        Index("ix_usage_events_tenant_created", "tenant_id", "created_at"),
        Index("ix_usage_events_created", "created_at"),
    )


# -- quotas (issue 5, docs/quotas.md) ------------------------------------------------------------


class QuotaPolicy(Base):
    """Limits on a tenant, or on one of its keys when ``key_id`` is set (one policy per scope)."""

    __tablename__ = "quota_policies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(8))  # hard | soft
    period: Mapped[str] = mapped_column(String(8))  # day | week | month
    budget_usd: Mapped[Decimal | None] = mapped_column(Money())
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    rpm: Mapped[int | None] = mapped_column(BigInteger)
    tpm: Mapped[int | None] = mapped_column(BigInteger)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # NULLs are distinct in a unique index, so the tenant-wide policy needs a partial one.
        Index(
            "uq_quota_policies_tenant_wide",
            "tenant_id",
            unique=True,
            sqlite_where=text("key_id IS NULL"),
            postgresql_where=text("key_id IS NULL"),
        ),
        Index("uq_quota_policies_key_id", "key_id", unique=True),
    )


class QuotaCounter(Base):
    """One counter of the SQL quota store: a period's spend or tokens, or a minute's requests.

    Amounts are integers in the limit's unit (1e-10 USD, tokens, requests), the same units as
    the Redis store, so one comparison rule serves all stores exactly.
    """

    __tablename__ = "quota_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger)
    reserved: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # Per holder (a replica), the last settlement batch applied here: a retry never doubles it.
    marks: Mapped[dict[str, int] | None] = mapped_column(JSON)


class QuotaReservation(Base):
    """A holder's hold on a counter — a replica's lease, or one call's — until it is released,
    or until ``expires_at`` (a crashed replica stops renewing it)."""

    __tablename__ = "quota_reservations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    counter_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_quota_reservations_counter_expires", "counter_key", "expires_at"),)


class UsageRollup(Base):
    """Usage summed per hour, tenant, key and model — written in the same transaction as the
    ledger rows it sums, from exactly the rows that insert added, so the two always agree.
    The token columns are :data:`proxy.usage.REPORTED_KINDS`."""

    bucket: Mapped[datetime]
    tenant_id: Mapped[int]
    key_id: Mapped[int]
    model: Mapped[str]
    requests: Mapped[int]
    cost_usd: Mapped[Decimal]

    __table__ = Table(
        "usage_rollups",
        Base.metadata,
        Column("bucket", DateTime(timezone=True), primary_key=True),
        Column("tenant_id", BigInteger, primary_key=True),
        Column("key_id", BigInteger, primary_key=True),  # 0: no key
        Column("model", String(128), primary_key=True),
        Column("requests", BigInteger, nullable=False, default=0),
        *(Column(name, BigInteger, nullable=False, default=0) for name in REPORTED_KINDS),
        Column("cost_usd", Money(), nullable=False, default=Decimal(0)),
        Column("unpriced", BigInteger, nullable=False, default=0),
        Column("estimated", BigInteger, nullable=False, default=0),
        Column("errors", BigInteger, nullable=False, default=0),
        Index("ix_usage_rollups_tenant_bucket", "tenant_id", "bucket"),
    )


# -- stored resources (issue 20, docs/resources.md) ----------------------------------------------


class Resource(Base):
    """A file, context cache, batch or long-running operation made upstream through the proxy.

    All tenants share one upstream project: this row is what makes a resource the tenant's
    (another tenant is told it does not exist). Caches carry what their storage is billed on;
    batches and operations carry the reconciler's state, so each is metered exactly once by
    whichever replica claims it."""

    __tablename__ = "resources"

    # Google's resource name: files/x, cachedContents/x, batches/x, models/m/operations/x.
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # file | cache | batch | operation
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[int | None] = mapped_column(BigInteger)
    model: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Caches: storage is billed per token-hour from billed_until to expire_time (or deletion).
    token_count: Mapped[int | None] = mapped_column(BigInteger)
    expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    billed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Batches and operations: the upstream state last seen, when their rows were written, and
    # which replica holds the claim to meter them until when.
    state: Mapped[str | None] = mapped_column(String(48))
    metered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Whatever else a kind keeps (mime type and size, display name, a batch's held worst case).
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_resources_tenant_kind_created", "tenant_id", "kind", "created_at"),
        Index("ix_resources_kind_metered", "kind", "metered_at"),
    )
