"""``serve`` and ``db upgrade``: run the proxy, migrate its database."""

from __future__ import annotations

import sys
from pathlib import Path
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
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(help="PEM certificate (chain): serve HTTPS and wss:// (the Live API)."),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option(help="PEM private key of --ssl-certfile.")
    ] = None,
) -> None:
    """Run the proxy."""
    import uvicorn

    from .. import metrics
    from ..app import create_app
    from ..db.migrate import upgrade
    from ..logs import configure_logging

    # Command-line flags win over the environment's settings.
    flags = {"host": host, "port": port, "workers": workers, "ssl_certfile": ssl_certfile,
             "ssl_keyfile": ssl_keyfile}  # fmt: skip
    s = settings().model_copy(update={k: v for k, v in flags.items() if v is not None})
    configure_logging(s.log_level)
    if problem := s.admin_token_problem:
        fail(f"error: {problem}", 2)
    if (s.ssl_certfile is None) != (s.ssl_keyfile is None):
        fail("error: TLS needs both a certificate (--ssl-certfile) and its key (--ssl-keyfile)", 2)
    for path in (s.ssl_certfile, s.ssl_keyfile):
        if path is not None and not path.is_file():
            fail(f"error: {path} is not a readable file", 2)
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
        # The Live API's WebSockets: websockets' sans-I/O protocol, its size limit ours.
        "ws": "websockets-sansio",
        "ws_max_size": s.live_max_message_bytes,
        "ssl_certfile": None if s.ssl_certfile is None else str(s.ssl_certfile),
        "ssl_keyfile": None if s.ssl_keyfile is None else str(s.ssl_keyfile),
    }
    if s.workers > 1:
        # Each worker builds its settings from the environment (proxy.app.app_from_environment);
        # host, port and the worker count are uvicorn's, which it was given here.
        metrics.prepare_multiprocess_dir(s.metrics_multiproc_dir)
        # uvicorn's own workers: on SIGTERM they close Live sessions at once (1012), their
        # rows still written (docs/live.md).
        uvicorn.run("proxy.app:app_from_environment", factory=True, workers=s.workers, **common)
    else:
        run(uvicorn.Config(create_app(s), **common))


def run(config: Any) -> None:
    """``uvicorn.run`` of one process, with a server that ends Live sessions gracefully."""
    import uvicorn

    from ..live.sessions import SESSIONS

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn would close every WebSocket at once (1012): first stop accepting, tell
            # each Live session to end (goAway) and give it the grace period, then close it.
            for server in self.servers:
                server.close()
            await SESSIONS.drain(self.config.timeout_graceful_shutdown or 0)
            await super().shutdown(sockets)

    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's exit code for a failed start-up


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    from ..db.migrate import upgrade

    upgrade(settings().database_url)
    typer.echo("database is at the latest revision")
