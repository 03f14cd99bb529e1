"""Settings: the only reader of the environment.

Built once (by the CLI or a test) and passed into ``create_app``; nothing is read at import time.
Every field is documented in the README's configuration table (checked by tests/test_docs.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ADMIN_TOKEN_MIN_LENGTH", "Settings"]

# 16 characters of `openssl rand -hex` are 64 random bits: at a million guesses a second
# against the constant-time check, ~300,000 years to find half the space. Shorter tokens are
# too easy to guess or to have been typed by hand, so `serve` refuses to start with one.
ADMIN_TOKEN_MIN_LENGTH = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GEMINI_METER_", env_file=None, extra="ignore", populate_by_name=True
    )

    # Upstream
    gemini_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("GEMINI_API_KEY", "gemini_api_key"),
        description=(
            "The real Gemini API key, sent upstream as x-goog-api-key. Several keys separated "
            "by commas form a pool: round-robin, and a key that got a 429 cools down."
        ),
    )
    upstream_url: str = Field(
        default="https://generativelanguage.googleapis.com",
        description="Base URL of the Gemini API.",
    )
    upstream_connect_timeout: float = Field(
        default=10.0, description="Seconds to open a connection to the upstream."
    )
    upstream_read_timeout: float = Field(
        default=600.0,
        description="Seconds to wait for the upstream's reply, and between two stream events.",
    )
    upstream_max_connections: int = Field(
        default=512, description="Size of the upstream connection pool."
    )
    upstream_retries: int = Field(
        default=2,
        description="Extra attempts on connection errors, 5xx and 429 (another key), "
        "only before the first byte reached the client.",
    )

    upstream_ca_file: Path | None = Field(
        default=None,
        description="PEM file of extra certificate authorities trusted for the upstream, HTTP "
        "and Live WebSocket alike (a private gateway); unset trusts the system's only.",
    )

    # Server
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, description="Port to listen on.")
    workers: int = Field(
        default=1,
        ge=1,
        description="uvicorn worker processes; above 1, metrics use multiprocess mode.",
    )
    metrics_multiproc_dir: Path | None = Field(
        default=None,
        description="Directory for per-worker metric files when workers > 1 (default: a new "
        "temporary directory); emptied at start.",
    )
    max_body_bytes: int = Field(
        default=20 * 1024 * 1024,
        description="Largest request body accepted, in bytes (Gemini's inline limit: 20 MB).",
    )
    shutdown_grace: float = Field(
        default=30.0,
        description="Seconds in-flight calls and streams get to finish on SIGTERM before they "
        "are cut (their rows are still written).",
    )
    ssl_certfile: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve HTTPS and wss:// with; the Live API's "
        "SDK always dials wss://. Unset serves plain HTTP (TLS at an ingress).",
    )
    ssl_keyfile: Path | None = Field(default=None, description="PEM private key of ssl_certfile.")

    # Live API (WebSocket)
    live_idle_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a Live session may pass without a message either way before the "
        "proxy closes it (1000, 'idle timeout').",
    )
    live_max_message_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="Largest Live API message relayed, either way, in bytes; a larger one "
        "closes the session (1009).",
    )
    live_setup_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a Live client has to send its setup message after connecting.",
    )

    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for the admin API; unset or empty disables it, and `serve` "
        f"refuses to start with one shorter than {ADMIN_TOKEN_MIN_LENGTH} characters.",
    )

    # Storage
    database_url: str = Field(
        default="sqlite+aiosqlite:///./gemini-meter.db",
        description="SQLAlchemy async URL of the ledger (sqlite+aiosqlite or postgresql+asyncpg).",
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL for shared quota counters across replicas."
    )
    redis_prefix: str = Field(
        default="gemini-meter:quota:",
        description="Prefix of every Redis key the proxy writes (one per deployment sharing a "
        "Redis).",
    )
    quota_store_timeout: float = Field(
        default=1.0,
        gt=0,
        description="Seconds a call may wait for the quota store (Redis or the database) when "
        "its replica's lease cannot admit it; past it, a hard budget or token quota refuses "
        "with 503 and Retry-After, other limits admit the call uncounted.",
    )

    # Ledger writer
    ledger_batch_size: int = Field(
        default=500, description="Most ledger events written in one database transaction."
    )
    ledger_flush_interval: float = Field(
        default=0.5, description="Seconds between ledger flushes when the queue is not full."
    )

    ledger_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Drop raw ledger rows older than this many days (hourly); the hourly "
        "rollups, and so every report on whole hours, are kept. Unset keeps everything.",
    )
    spool_dir: Path = Field(
        default=Path("./spool"),
        description="Directory of the durable ledger spool used while the database is down.",
    )

    # Auth cache
    key_cache_ttl: float = Field(
        default=1.0,
        description="Seconds a tenant-key lookup is cached; revocations apply within this time.",
    )
    key_lookup_timeout: float = Field(
        default=1.0,
        gt=0,
        description="Seconds a request waits for the database to check a key this process has "
        "not cached (503 after); cached keys never wait. Also bounds /readyz's database check.",
    )
    resource_lookup_timeout: float = Field(
        default=2.0,
        gt=0,
        description="Seconds a request waits for the database to record or check who owns a "
        "file, cache, batch or operation (503 after); ownership once seen is cached.",
    )
    reconcile_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between the reconciler's rounds: each replica claims unmetered "
        "batches and video operations, polls them upstream and meters the finished ones.",
    )
    reconcile_repoll: float = Field(
        default=30.0,
        gt=0,
        description="Seconds before a batch or operation that was not done is polled again.",
    )
    reconcile_lease: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a replica's claim on a batch or operation lasts while it meters "
        "it; a replica that dies lets another take over after this.",
    )
    database_request_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds /v1/usage and the admin API wait on the database before answering "
        "503.",
    )

    # Pricing
    price_list: str = Field(
        default="gemini-api",
        description="Default price list: gemini-api (Developer API) or vertex-ai.",
    )
    price_list_fallback: str | None = Field(
        default="vertex-ai",
        description="Price list for calls the default list cannot price (a model or rate it "
        "lacks); empty to leave such calls unpriced.",
    )
    price_overrides: Path | None = Field(
        default=None, description="YAML file with extra models, discounts or newer prices."
    )

    log_level: str = Field(default="info", description="Log level of the proxy and uvicorn.")
    gc_tuning: bool = Field(
        default=True,
        description="Once started, freeze the objects alive (gc.freeze) and run the youngest "
        "garbage-collector generation every 20,000 allocations instead of 700: a full collection "
        "then skips the libraries' objects (~100 ms every few seconds under load otherwise).",
    )

    @field_validator("admin_token", mode="after")
    @classmethod
    def _blank_token_is_none(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty (or all-blank) token is no token: the admin API is disabled, never open.
        return token if token is not None and token.get_secret_value().strip() else None

    @property
    def admin_token_problem(self) -> str | None:
        """Why the admin token must not be used, or None (also None when there is none)."""
        if self.admin_token is None:
            return None
        token = self.admin_token.get_secret_value()
        if token != token.strip():
            return "GEMINI_METER_ADMIN_TOKEN has leading or trailing blanks"
        if len(token) < ADMIN_TOKEN_MIN_LENGTH:
            return (
                f"GEMINI_METER_ADMIN_TOKEN has {len(token)} characters; at least "
                f"{ADMIN_TOKEN_MIN_LENGTH} are required (e.g. `openssl rand -hex 32`), or "
                "leave it unset to disable the admin API"
            )
        return None

    @property
    def upstream_keys(self) -> list[str]:
        if self.gemini_api_key is None:
            return []
        return [k.strip() for k in self.gemini_api_key.get_secret_value().split(",") if k.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
