"""``serve`` and ``db upgrade``: run the proxy, migrate its database."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .context import fail, settings

__all__ = ["db", "serve"]

db = typer.Typer(help="Database migrations.", no_args_is_help=True)


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (PostgreSQL only).")
    ] = None,
) -> None:
    """Run the proxy."""
    import uvicorn

    from .. import metrics
    from ..app import create_app
    from ..db.migrate import upgrade
    from ..logs import configure_logging

    # Command-line flags win over the environment's settings.
    flags = {"host": host, "port": port, "workers": workers}
    s = settings().model_copy(update={k: v for k, v in flags.items() if v is not None})
    configure_logging(s.log_level)
    if problem := s.admin_token_problem:
        fail(f"error: {problem}", 2)
    if s.is_sqlite:
        if s.workers > 1:
            fail("error: several workers need PostgreSQL; SQLite is single-process", 2)
        upgrade(s.database_url)
    if not s.upstream_keys:
        typer.echo("warning: GEMINI_API_KEY is not set; model calls will answer 503", err=True)
    common: dict[str, Any] = {
        "host": s.host,
        "port": s.port,
        "log_config": None,
        # The proxy writes its own access line, after the reply (proxy/middleware.py).
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
        "timeout_graceful_shutdown": int(s.shutdown_grace),
    }
    if s.workers > 1:
        # Each worker builds its settings from the environment (proxy.app.app_from_environment);
        # host, port and the worker count are uvicorn's, which it was given here.
        metrics.prepare_multiprocess_dir(s.metrics_multiproc_dir)
        uvicorn.run("proxy.app:app_from_environment", factory=True, workers=s.workers, **common)
    else:
        uvicorn.run(create_app(s), **common)


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    from ..db.migrate import upgrade

    upgrade(settings().database_url)
    typer.echo("database is at the latest revision")
