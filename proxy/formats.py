"""Plain-text, CSV and JSON renderings of reports, shared by the CLI and the admin API."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["json_default", "print_table", "write_usage"]


def write_usage(out: Any, rows: list[dict[str, Any]], fmt: str) -> None:
    """A usage report as a table, CSV or JSON (costs as decimal strings)."""
    if fmt == "json":
        out.write(orjson.dumps(rows, default=json_default, option=orjson.OPT_INDENT_2).decode())
        out.write("\n")
        return
    header = list(rows[0]) if rows else ["requests", "cost_usd"]
    table = [[r[h] for h in header] for r in rows]
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(header)
        w.writerows(table)
    else:
        print_table(header, table, out)


def json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)  # money stays exact in JSON: a decimal string
    raise TypeError


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], out: Any = None) -> None:
    cells = [[str(c) for c in header], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    buf = io.StringIO()
    for n, row in enumerate(cells):
        buf.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
        if n == 0:
            buf.write("  ".join("-" * w for w in widths) + "\n")
    (out or sys.stdout).write(buf.getvalue())
