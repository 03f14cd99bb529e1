"""Logging set-up: one format, and no secret in any line."""

from __future__ import annotations

import logging
import re

__all__ = ["RedactKeys", "configure_logging", "redact_keys"]

# Tenant keys may arrive as ?key=...; access logs print the query string.
_KEY_PARAM = re.compile(r"(?i)([?&]key=)[^&\s\"]*")


def redact_keys(text: str) -> str:
    """``text`` with the value of every ``?key=`` / ``&key=`` query parameter replaced."""
    return _KEY_PARAM.sub(r"\1REDACTED", text)


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                redact_keys(a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = redact_keys(record.msg)
        return True


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in ("uvicorn.access", "uvicorn.error", "gemini_meter", "httpx"):
        logging.getLogger(name).addFilter(RedactKeys())
    # httpx logs every request at INFO; the ledger already records each call.
    logging.getLogger("httpx").setLevel(logging.WARNING)
