"""The ``gemini-meter`` command: serve, db, tenants, keys, usage, quotas, prices.

One typer app (help and shell completion come with it); each group lives in its own module and
opens what it needs through ``context.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer

from .context import settings
from .quotas import quotas
from .reports import prices, usage
from .server import db, serve
from .tenants import keys, tenants

__all__ = ["app", "main"]

app = typer.Typer(
    name="gemini-meter",
    help="A metering proxy in front of Google's Gemini API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a traceback must never print settings (secrets)
)
app.command()(serve)
app.command()(usage)
app.add_typer(db, name="db")
app.add_typer(tenants, name="tenants")
app.add_typer(keys, name="keys")
app.add_typer(quotas, name="quotas")
app.add_typer(prices, name="prices")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status (0 on success)."""
    settings.cache_clear()  # read the environment afresh on every run (tests run several)
    try:
        app(args=list(argv) if argv is not None else None, prog_name="gemini-meter",
            standalone_mode=True)  # fmt: skip
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
