"""Plain-text, CSV and JSON renderings of reports, shared by the CLI and the admin API."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["decimal_json", "decimal_text", "json_default", "print_table", "write_usage"]


def decimal_text(value: Decimal) -> str:
    """A Decimal in positional notation, never exponent notation.

    ``str()`` of a cost quantized to 10 places gives ``3.000E-7`` below 1e-6; every cost the
    proxy prints (headers, usage, CLI, admin JSON) goes through here instead."""
    return format(value, "f")


def decimal_json(value: Decimal) -> orjson.Fragment:
    """A Decimal as a JSON number in positional notation (a float would serialise as
    ``3e-07``): put it in a body that orjson dumps."""
    return orjson.Fragment(decimal_text(value))


def write_usage(out: Any, rows: list[dict[str, Any]], fmt: str) -> None:
    """A usage report as a table, CSV or JSON (costs as decimal strings)."""
    if fmt == "json":
        out.write(orjson.dumps(rows, default=json_default, option=orjson.OPT_INDENT_2).decode())
        out.write("\n")
        return
    header = list(rows[0]) if rows else ["requests", "cost_usd"]
    table = [[_cell(r[h]) for h in header] for r in rows]
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(header)
        w.writerows(table)
    else:
        print_table(header, table, out)


def _cell(value: Any) -> Any:
    return decimal_text(value) if isinstance(value, Decimal) else value


def json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return decimal_text(obj)  # money stays exact in JSON: a decimal string
    raise TypeError


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], out: Any = None) -> None:
    """A table: drawn by rich on a terminal, plain aligned columns when piped (for grep, awk)."""
    out = out or sys.stdout
    cells = [
        [str(c) for c in header],
        *[["" if c is None else str(_cell(c)) for c in r] for r in rows],
    ]
    if getattr(out, "isatty", lambda: False)():
        _rich_table(cells, out)
        return
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    buf = io.StringIO()
    for n, row in enumerate(cells):
        buf.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
        if n == 0:
            buf.write("  ".join("-" * w for w in widths) + "\n")
    out.write(buf.getvalue())


def _rich_table(cells: list[list[str]], out: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*cells[0], header_style="bold", highlight=False)
    for row in cells[1:]:
        table.add_row(*row)
    Console(file=out).print(table)
