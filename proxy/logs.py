"""Logging set-up: one format, and no secret in any line.

Every record any logger of the process makes is redacted when it is made (a log-record factory),
so no handler, formatter or library logger can print a secret: the proxy's own lines, uvicorn's,
the database drivers', tracebacks included. The rules are :func:`proxy.redact.redact`'s.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from .redact import redact

__all__ = ["RedactSecrets", "configure_logging", "install_redaction", "redact_record"]

_FORMATTER = logging.Formatter()


def redact_record(record: logging.LogRecord) -> None:
    """Replace every secret in ``record``'s message, arguments and traceback, in place."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: logging reports it at emit time
        return
    clean = redact(message)
    if clean != message:
        template, args = record.msg, record.args
        record.msg, record.args = clean, None
        if isinstance(template, str) and isinstance(args, tuple):
            # Keep the shape when the arguments alone held the secrets (formatters such as
            # uvicorn's unpack them): redacted one by one, if that gives the same line.
            shaped = tuple(redact(a) if isinstance(a, str) else a for a in args)
            with contextlib.suppress(TypeError, ValueError):
                if template % shaped == clean:
                    record.msg, record.args = template, shaped
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactSecrets(logging.Filter):
    """The same redaction as a filter, for handlers (records made before the factory was set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_redaction() -> None:
    """Make every log record of the process redacted at birth. Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
    # httpx logs every request at INFO; the ledger already records each call.
    logging.getLogger("httpx").setLevel(logging.WARNING)
