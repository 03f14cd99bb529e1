"""``usage`` and ``prices``: what was spent, and what a call costs."""

from __future__ import annotations

import sys
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import orjson
import typer

from ..db.reports import GROUPS, GroupBy, usage_report
from ..formats import write_usage
from ..pricing.report import (
    explain,
    format_catalog,
    format_id_table,
    format_quote,
    format_resolution,
    quote,
)
from .context import Database, catalog, fail, parse_when, with_database

__all__ = ["prices", "usage"]

prices = typer.Typer(help="The price catalog: list it, quote a call, resolve a model id.")


class UsageFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class TextFormat(StrEnum):
    text = "text"
    json = "json"


def usage(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    since: Annotated[
        datetime | None,
        typer.Option("--from", parser=parse_when, metavar="DATE", help="Start (inclusive), UTC."),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option("--to", parser=parse_when, metavar="DATE", help="End (exclusive), UTC."),
    ] = None,
    group_by: Annotated[
        str, typer.Option(help=f"Any of {', '.join(GROUPS)}, comma-separated.")
    ] = "tenant,model",
    fmt: Annotated[UsageFormat, typer.Option("--format")] = UsageFormat.table,
) -> None:
    """Usage totals over a time range."""
    groups: list[GroupBy] = []
    for g in (g.strip() for g in group_by.split(",")):
        if g and g not in GROUPS:
            fail(f"cannot group by {g!r}: use {', '.join(GROUPS)}", 2)
        if g:
            groups.append(g)

    async def go(db: Database) -> list[dict[str, object]]:
        rows = await usage_report(
            db.session, since=since, until=until, tenant=tenant, model=model, group_by=groups
        )
        return [r.as_dict() for r in rows]

    write_usage(sys.stdout, with_database(go), fmt.value)


@prices.callback(invoke_without_command=True)
def prices_list(
    ctx: typer.Context,
    price_list: Annotated[str | None, typer.Option(help="A list other than the default.")] = None,
    sources: Annotated[bool, typer.Option(help="Show each rate's seed source.")] = False,
) -> None:
    """List the price catalog (or run one of the commands below)."""
    if ctx.invoked_subcommand is None:
        typer.echo(format_catalog(catalog(), price_list, sources=sources))


@prices.command("quote")
def prices_quote(
    model: Annotated[str, typer.Option(help="The model id, as an app sends it.")],
    prompt_tokens: Annotated[int, typer.Option(min=0)],
    output_tokens: Annotated[int, typer.Option(min=0)],
    cached_tokens: Annotated[int, typer.Option(min=0)] = 0,
    thinking_tokens: Annotated[int, typer.Option(min=0)] = 0,
    audio_tokens: Annotated[int, typer.Option(min=0, help="Audio prompt tokens.")] = 0,
    batch: Annotated[bool, typer.Option(help="Price at batch rates.")] = False,
    price_list: Annotated[str | None, typer.Option(help="A list other than the default.")] = None,
) -> None:
    """The cost of a call with these token counts, and how it was computed."""
    result = quote(
        catalog(), model, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
        cached_tokens=cached_tokens, thinking_tokens=thinking_tokens, audio_tokens=audio_tokens,
        batch=batch, price_list=price_list,
    )  # fmt: skip
    typer.echo(format_quote(result, requested_model=model))
    if not result.priced:
        raise typer.Exit(1)


@prices.command("resolve")
def prices_resolve(
    model: Annotated[str | None, typer.Argument(help="The model id, as an app sends it.")] = None,
    at: Annotated[
        datetime | None,
        typer.Option(parser=parse_when, metavar="DATE", help="The call's time (default: now)."),
    ] = None,
    price_list: Annotated[str | None, typer.Option(help="One list only, no fallback.")] = None,
    fmt: Annotated[TextFormat, typer.Option("--format")] = TextFormat.text,
    every: Annotated[
        bool, typer.Option("--all", help="Every id the catalog answers for, as a table.")
    ] = False,
) -> None:
    """Which list, entry, version and rates price a call to a model id, and why."""
    cat = catalog()
    if every:
        sys.stdout.write(format_id_table(cat, at=at))
        return
    if model is None:
        fail("give a model id, or --all for every id the catalog answers for", 2)
    answer = explain(cat, model, at=at, price_list=price_list)
    if fmt is TextFormat.json:
        typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    else:
        sys.stdout.write(format_resolution(answer))
    if not answer["priced"]:
        raise typer.Exit(1)
