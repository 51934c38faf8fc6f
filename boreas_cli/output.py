"""Data goes to stdout, as JSON or as a table; messages go to stderr."""

from __future__ import annotations

import csv
import enum
import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    Format,
    typer.Option("--output", "-o", help="How to print the data: a table, or JSON for scripts."),
]

# A column: its header and how to get its text out of an item.
Column = tuple[str, Callable[[dict[str, Any]], Any]]


def field(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda item: item.get(name)


def say(message: str) -> None:
    """A message for the person at the terminal (stderr), never data."""
    print(message, file=sys.stderr, flush=True)


def text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def money(value: Any) -> str:
    """An amount in the catalogs' price unit: cents at least (``9.60``), finer when it has more
    (``0.0116`` an hour); ``-`` when unknown."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return text(value)
    return f"{value:.2f}" if round(value, 2) == value else text(float(value))


def when(value: Any) -> str:
    """An ISO 8601 time to the second, as ``2026-11-25 07:32:21Z``."""
    if not isinstance(value, str) or "T" not in value:
        return text(value)
    day, time = value.split("T", 1)
    return f"{day} {time[:8]}Z" if value.endswith(("Z", "+00:00")) else value


def render_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def render_table(items: Iterable[dict[str, Any]], columns: Sequence[Column]) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False)
    for header, _ in columns:
        table.add_column(header, no_wrap=True, overflow="ignore")
    for item in items:
        table.add_row(*(text(get(item)) for _, get in columns))
    return table


def table_text(table: Table) -> str:
    """The table as plain lines, as wide as they need (piped output is never cut to a terminal's
    width: a script reads whole lines), without the padding rich leaves at their ends."""
    console = Console(file=io.StringIO(), width=10_000, color_system=None, highlight=False)
    with console.capture() as captured:
        console.print(table)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def emit(data: Any, output: Format, table: Callable[[], Table]) -> None:
    if output is Format.JSON:
        print(render_json(data), flush=True)
    else:
        print(table_text(table()), flush=True)


def emit_list(items: list[dict[str, Any]], output: Format, columns: Sequence[Column]) -> None:
    emit(items, output, lambda: render_table(items, columns))


def emit_record(item: dict[str, Any], output: Format, rows: Sequence[Column] | None = None) -> None:
    """One object: as JSON, or as a two-column table of its fields."""
    rows = rows or [(key, field(key)) for key in item]
    pairs = [{"field": name, "value": get(item)} for name, get in rows]
    emit(
        item,
        output,
        lambda: render_table(pairs, [("FIELD", field("field")), ("VALUE", field("value"))]),
    )


def render_csv(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
