"""The ``gemini-meter`` command: serve, db, tenants, keys, usage, prices."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson

from .db import queries
from .db.engine import make_engine, make_sessionmaker
from .db.migrate import upgrade, upgrade_async
from .db.reports import GROUPS, usage_report
from .formats import print_table, write_usage
from .pricing.catalog import Catalog
from .pricing.report import (
    explain,
    format_catalog,
    format_id_table,
    format_quote,
    format_resolution,
    quote,
)
from .quotas import QuotaPolicyError, delete_policy, get_policies, set_policy
from .quotas.service import QuotaService
from .settings import Settings

__all__ = ["main"]


def _run(coro_fn: Callable[[Settings], Coroutine[Any, Any, int]], settings: Settings) -> int:
    return asyncio.run(coro_fn(settings))


class _Session:
    """``async with _Session(settings) as session``: one committed unit of work for a command."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.database_url
        self._sqlite = settings.is_sqlite
        self._engine = make_engine(settings.database_url)
        self._sm = make_sessionmaker(self._engine)

    async def __aenter__(self) -> Any:
        if self._sqlite:
            # The embedded default migrates itself, whichever command runs first.
            await upgrade_async(self._url)
        self._session = self._sm()
        return self._session

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                await self._session.commit()
            await self._session.close()
        finally:
            await self._engine.dispose()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from . import metrics
    from .app import create_app
    from .logs import configure_logging

    # Command-line flags win over the environment; workers re-read the environment, so the
    # flags are exported for them.
    for name in ("host", "port", "workers"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)
            os.environ[f"GEMINI_METER_{name.upper()}"] = str(value)
    configure_logging(settings.log_level)
    if problem := settings.admin_token_problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if settings.is_sqlite:
        if settings.workers > 1:
            print(
                "error: several workers need PostgreSQL; SQLite is single-process", file=sys.stderr
            )
            return 2
        upgrade(settings.database_url)
    if not settings.upstream_keys:
        print("warning: GEMINI_API_KEY is not set; model calls will answer 503", file=sys.stderr)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        # The proxy writes its own access line, after the reply (proxy/middleware.py).
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
        "timeout_graceful_shutdown": int(settings.shutdown_grace),
    }
    if settings.workers > 1:
        metrics.prepare_multiprocess_dir(settings.metrics_multiproc_dir)
        uvicorn.run(
            "proxy.app:app_from_environment", factory=True, workers=settings.workers, **common
        )
    else:
        uvicorn.run(create_app(settings), **common)
    return 0


def cmd_db_upgrade(_: argparse.Namespace, settings: Settings) -> int:
    upgrade(settings.database_url)
    print("database is at the latest revision")
    return 0


def cmd_tenants_create(args: argparse.Namespace, settings: Settings) -> int:
    async def go(s: Settings) -> int:
        async with _Session(s) as session:
            if await queries.get_tenant(session, args.name) is not None:
                print(f"tenant {args.name!r} already exists", file=sys.stderr)
                return 1
            tenant = await queries.create_tenant(session, args.name)
            print(f"created tenant {tenant.name} (id {tenant.id})")
        return 0

    return _run(go, settings)


def cmd_tenants_list(_: argparse.Namespace, settings: Settings) -> int:
    async def go(s: Settings) -> int:
        async with _Session(s) as session:
            rows = [
                [t.id, t.name, "disabled" if t.disabled else "active", t.created_at.isoformat()]
                for t in await queries.list_tenants(session)
            ]
        print_table(["id", "name", "state", "created"], rows)
        return 0

    return _run(go, settings)


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    async def go(s: Settings) -> int:
        async with _Session(s) as session:
            tenant = await queries.get_tenant(session, args.tenant)
            if tenant is None:
                print(f"no tenant named {args.tenant!r}", file=sys.stderr)
                return 1
            secret, key = await queries.create_key(session, tenant, args.name)
        # The secret alone on stdout, so KEY=$(gemini-meter keys create ...) works.
        print(secret)
        print(
            f"key {key.prefix}… (id {key.id}) for tenant {tenant.name}; shown once", file=sys.stderr
        )
        return 0

    return _run(go, settings)


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async def go(s: Settings) -> int:
        async with _Session(s) as session:
            rows = [
                [
                    k.id,
                    tenant,
                    k.prefix,
                    k.name or "",
                    "revoked" if k.revoked_at else "active",
                    k.last_used_at.isoformat() if k.last_used_at else "",
                ]
                for k, tenant in await queries.list_keys(session, args.tenant)
            ]
        print_table(["id", "tenant", "prefix", "name", "state", "last used"], rows)
        return 0

    return _run(go, settings)


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def go(s: Settings) -> int:
        async with _Session(s) as session:
            n = await queries.revoke_key(session, args.key)
        if n == 0:
            print(f"no active key {args.key!r}", file=sys.stderr)
            return 1
        print(f"revoked {n} key(s)")
        return 0

    return _run(go, settings)


def _parse_when(value: str) -> datetime:
    """A date (YYYY-MM-DD, taken as midnight UTC) or an ISO timestamp."""
    try:
        d = date.fromisoformat(value)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    except ValueError:
        pass
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()]
    for g in group_by:
        if g not in GROUPS:
            print(f"cannot group by {g!r}: use {', '.join(GROUPS)}", file=sys.stderr)
            return 2

    async def go(s: Settings) -> int:
        async with _Session(s) as session:
            rows = await usage_report(
                session,
                since=args.since,
                until=args.until,
                tenant=args.tenant,
                model=args.model,
                group_by=group_by,
            )
        write_usage(sys.stdout, [r.as_dict() for r in rows], args.format)
        return 0

    return _run(go, settings)


def _catalog(settings: Settings) -> Catalog:
    return Catalog.load(
        settings.price_list, settings.price_overrides, settings.price_list_fallback or None
    )


def cmd_prices(args: argparse.Namespace, settings: Settings) -> int:
    catalog = _catalog(settings)
    sys.stdout.write(format_catalog(catalog, args.price_list, sources=args.sources) + "\n")
    return 0


def cmd_prices_quote(args: argparse.Namespace, settings: Settings) -> int:
    catalog = _catalog(settings)
    result = quote(
        catalog,
        args.model,
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        cached_tokens=args.cached_tokens,
        thinking_tokens=args.thinking_tokens,
        audio_tokens=args.audio_tokens,
        batch=args.batch,
        price_list=args.price_list,
    )
    sys.stdout.write(format_quote(result, requested_model=args.model) + "\n")
    return 0 if result.priced else 1


def cmd_prices_resolve(args: argparse.Namespace, settings: Settings) -> int:
    catalog = _catalog(settings)
    if args.all:
        sys.stdout.write(format_id_table(catalog, at=args.at))
        return 0
    if args.model is None:
        print("give a model id, or --all for every id the catalog answers for", file=sys.stderr)
        return 2
    answer = explain(catalog, args.model, at=args.at, price_list=args.price_list)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_resolution(answer))
    return 0 if answer["priced"] else 1


def cmd_quotas_set(args: argparse.Namespace, settings: Settings) -> int:
    async def go(s: Settings) -> int:
        try:
            async with _Session(s) as session:
                policy = await set_policy(
                    session,
                    args.tenant,
                    key_prefix=args.key,
                    budget_usd=args.budget,
                    period=args.period,
                    tokens=args.tokens,
                    rpm=args.rpm,
                    tpm=args.tpm,
                    allowed_models=None if args.models is None else args.models.split(","),
                    mode="soft" if args.soft else "hard",
                )
        except QuotaPolicyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        sys.stdout.write(orjson.dumps(policy.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0

    return _run(go, settings)


def cmd_quotas_delete(args: argparse.Namespace, settings: Settings) -> int:
    async def go(s: Settings) -> int:
        async with _Session(s) as session:
            deleted = await delete_policy(session, args.tenant, args.key)
        print("deleted" if deleted else "no such policy", file=sys.stderr)
        return 0 if deleted else 1

    return _run(go, settings)


def cmd_quotas_show(args: argparse.Namespace, settings: Settings) -> int:
    async def go(s: Settings) -> int:
        engine = make_engine(s.database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                policies = await get_policies(session, args.tenant)
            service = await QuotaService.create(s, engine, _catalog(s), redis_prefix=s.redis_prefix)
            try:
                statuses = await (
                    service.status(args.tenant) if args.tenant else service.status_all()
                )
            finally:
                await service.aclose()
        finally:
            await engine.dispose()
        if args.format == "json":
            out = {
                "policies": [p.to_dict() for p in policies],
                "limits": [st.to_dict() for st in statuses],
            }
            sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
            return 0
        header = ["tenant", "key", "limit", "mode", "used", "reserved", "limit_value", "ratio",
                  "resets_at"]  # fmt: skip
        rows = [[d[h] if h != "ratio" else f"{d[h]:.1%}" for h in header]
                for d in (st.to_dict() for st in statuses)]  # fmt: skip
        print_table(header, rows)
        return 0

    return _run(go, settings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gemini-meter", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (PostgreSQL only)")
    serve.set_defaults(fn=cmd_serve)

    db = sub.add_parser("db", help="database migrations").add_subparsers(
        dest="db_cmd", required=True
    )
    db.add_parser("upgrade", help="apply pending migrations").set_defaults(fn=cmd_db_upgrade)

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="t_cmd", required=True
    )
    tc = tenants.add_parser("create", help="create a tenant")
    tc.add_argument("name")
    tc.set_defaults(fn=cmd_tenants_create)
    tenants.add_parser("list", help="list tenants").set_defaults(fn=cmd_tenants_list)

    keys = sub.add_parser("keys", help="manage tenant API keys").add_subparsers(
        dest="k_cmd", required=True
    )
    kc = keys.add_parser("create", help="create a key; prints the secret once on stdout")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--name")
    kc.set_defaults(fn=cmd_keys_create)
    kl = keys.add_parser("list", help="list keys (prefix only, never the secret)")
    kl.add_argument("--tenant")
    kl.set_defaults(fn=cmd_keys_list)
    kr = keys.add_parser("revoke", help="revoke a key by id or prefix")
    kr.add_argument("key")
    kr.set_defaults(fn=cmd_keys_revoke)

    usage = sub.add_parser("usage", help="usage totals over a time range")
    usage.add_argument("--tenant")
    usage.add_argument("--model")
    usage.add_argument("--from", dest="since", type=_parse_when, help="start (inclusive), UTC")
    usage.add_argument("--to", dest="until", type=_parse_when, help="end (exclusive), UTC")
    usage.add_argument(
        "--group-by", default="tenant,model", help="tenant, model, key, day, hour (comma-separated)"
    )
    usage.add_argument("--format", choices=("table", "json", "csv"), default="table")
    usage.set_defaults(fn=cmd_usage)

    quotas = sub.add_parser("quotas", help="quota policies and their use").add_subparsers(
        dest="q_cmd", required=True
    )
    qs = quotas.add_parser("set", help="create or replace a tenant's (or key's) policy")
    qs.add_argument("tenant")
    qs.add_argument("--key", help="narrow the policy to one key (id or display prefix)")
    qs.add_argument("--budget", help="USD budget per period, e.g. 250.00")
    qs.add_argument("--period", choices=("day", "week", "month"), default="month")
    qs.add_argument("--tokens", type=int, help="token quota per period")
    qs.add_argument("--rpm", type=int, help="requests per minute")
    qs.add_argument("--tpm", type=int, help="tokens per minute")
    qs.add_argument("--models", help="allowed models, comma-separated (globs allowed)")
    qs.add_argument("--soft", action="store_true", help="soft budget: no reservation")
    qs.set_defaults(fn=cmd_quotas_set)
    qsh = quotas.add_parser("show", help="use against every limit, with reset times")
    qsh.add_argument("tenant", nargs="?")
    qsh.add_argument("--format", choices=("table", "json"), default="table")
    qsh.set_defaults(fn=cmd_quotas_show)
    qd = quotas.add_parser("delete", help="remove a tenant's (or key's) policy")
    qd.add_argument("tenant")
    qd.add_argument("--key")
    qd.set_defaults(fn=cmd_quotas_delete)

    prices = sub.add_parser("prices", help="list the price catalog, or quote a call")
    prices.add_argument("--price-list", help="a price list other than the default")
    prices.add_argument("--sources", action="store_true", help="show each rate's seed source")
    prices.set_defaults(fn=cmd_prices)
    prices_sub = prices.add_subparsers(dest="p_cmd")
    quote_cmd = prices_sub.add_parser(
        "quote", help="the cost of a call with the given token counts, and how it was computed"
    )
    quote_cmd.add_argument("--model", required=True)
    quote_cmd.add_argument("--prompt-tokens", type=int, required=True)
    quote_cmd.add_argument("--output-tokens", type=int, required=True)
    quote_cmd.add_argument("--cached-tokens", type=int, default=0)
    quote_cmd.add_argument("--thinking-tokens", type=int, default=0)
    quote_cmd.add_argument("--audio-tokens", type=int, default=0, help="audio prompt tokens")
    quote_cmd.add_argument("--batch", action="store_true", help="price at batch rates")
    quote_cmd.add_argument("--price-list", help="a price list other than the default")
    quote_cmd.set_defaults(fn=cmd_prices_quote)
    resolve_cmd = prices_sub.add_parser(
        "resolve", help="which list, entry, version and rates price a call to a model id, and why"
    )
    resolve_cmd.add_argument("model", nargs="?", help="the model id as an app sends it")
    resolve_cmd.add_argument("--at", type=_parse_when, help="the call's time (default: now), UTC")
    resolve_cmd.add_argument("--price-list", help="one list only, no fallback")
    resolve_cmd.add_argument("--format", choices=("text", "json"), default="text")
    resolve_cmd.add_argument(
        "--all", action="store_true", help="every id the catalog answers for, as a table"
    )
    resolve_cmd.set_defaults(fn=cmd_prices_resolve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    fn: Callable[[argparse.Namespace, Settings], int] = args.fn
    return fn(args, settings)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
