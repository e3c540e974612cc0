"""Terminal tables you can trust: no number is ever cut, wrapped or shown as a Python repr.

Every table command prints through :func:`print_table`. Cells are formatted one way
everywhere (money with the currency's decimals and thousands separators, percentages with
three decimals, counts with separators, ``yes``/``no``, ``–`` for nothing). Each column is
at least as wide as its widest cell, so the terminal never truncates one; when the
columns do not fit the terminal's width, the least important ones are left out and a
line under the table says which (and that ``--format csv`` or ``json`` has them all).
When not even the first two columns fit, the table is turned: one block of
``label  value`` lines per row.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

Kind = Literal["text", "money", "percent", "ratio", "count", "flag"]
NUMERIC: frozenset[str] = frozenset({"money", "percent", "ratio", "count"})
NOTHING = "–"


@dataclass(frozen=True)
class Column:
    """A table column: the row key, its human label, how its cells are written, and its
    priority (0 is never dropped; higher numbers are dropped first on narrow terminals)."""

    key: str
    label: str
    kind: Kind = "text"
    priority: int = 1


def money(value: Any, places: int = 2) -> str:
    if value is None or isinstance(value, bool):
        return NOTHING
    return f"{float(value):,.{places}f}"


def percent(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return NOTHING
    return f"{float(value):,.3f}"


def text(value: Any) -> str:
    """Anything as people read it: no ``None``/``False``/JSON."""
    if value is None or value == "":
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k.replace('_', ' ')} {text(v)}" for k, v in value.items()
                         if v not in (None, "", [], {})) or NOTHING
    if isinstance(value, (list, tuple, set)):
        return ", ".join(text(v) for v in value) or NOTHING
    return " ".join(str(value).split())


def cell(value: Any, kind: Kind, places: int = 2) -> str:
    if kind == "money":
        return money(value, places)
    if kind == "percent":
        return percent(value)
    if kind == "ratio":
        return NOTHING if value is None else f"{float(value):,.3f}"
    if kind == "count":
        return NOTHING if value is None else f"{int(value):,}"
    if kind == "flag":
        return "yes" if value else ""
    return text(value)


def _border_width(count: int) -> int:
    # rich's default box: "│ " before each column, " │" after the last, one space padding
    # on either side of each cell.
    return 3 * count + 1


def fit_columns(columns: Sequence[Column], widths: Mapping[str, int],
                available: int) -> list[Column]:
    """The columns that fit in ``available`` characters, dropping the highest priority
    numbers (the last of equals first); the order of the kept ones is unchanged."""
    kept = list(columns)
    order = sorted(range(len(columns)), key=lambda i: (columns[i].priority, i), reverse=True)
    for index in order:
        total = sum(widths[c.key] for c in kept) + _border_width(len(kept))
        if total <= available:
            break
        if columns[index].priority == 0:
            continue
        kept.remove(columns[index])
    return kept


def print_table(title: str, columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], *,
                console: Console, places: int = 2,
                formatter: Callable[[Column, Any], str] | None = None) -> None:
    """Print ``rows`` under ``title`` so every cell shows whole (see the module docstring)."""
    _follow_columns_variable(console)
    shown = [{c.key: (formatter(c, row.get(c.key)) if formatter else
                      cell(row.get(c.key), c.kind, places)) for c in columns} for row in rows]
    widths = {c.key: max([len(w) for w in c.label.split()] + [len(r[c.key]) for r in shown])
              for c in columns}
    available = console.width
    kept = fit_columns(columns, widths, available)
    fits = sum(widths[c.key] for c in kept) + _border_width(len(kept)) <= available
    if not fits or len(kept) < min(2, len(columns)):
        _print_turned(title, columns, shown, console)
        return
    table = Table(title=title, title_justify="left")
    for column in kept:
        # A label longer than its cells goes over two or more lines (never the numbers).
        header = textwrap.fill(column.label, max(widths[column.key], 1))
        table.add_column(header, justify="right" if column.kind in NUMERIC else "left",
                         no_wrap=True, min_width=widths[column.key], overflow="fold")
    for row in shown:
        table.add_row(*[row[c.key] for c in kept])
    console.print(table)
    dropped = [c.label for c in columns if c not in kept]
    if dropped:
        console.print(f"{len(dropped)} column(s) left out to fit {available} characters: "
                      f"{', '.join(dropped)} (a wider terminal, or --format csv or json, "
                      f"shows them all)", highlight=False, markup=False, soft_wrap=True)


def _follow_columns_variable(console: Console) -> None:
    """``COLUMNS=80 nrr report ...`` sets the width even when the console was made before
    (rich reads the variable once, when the console is created)."""
    value = os.environ.get("COLUMNS", "")
    if value.isdigit() and int(value) > 0:
        console.width = int(value)


def _print_turned(title: str, columns: Sequence[Column], shown: list[dict[str, str]],
                  console: Console) -> None:
    """One block per row, ``label  value`` per line: for terminals too narrow for the table."""
    console.print(title, highlight=False, markup=False, soft_wrap=True)
    console.print(f"(turned: the table does not fit {console.width} characters)",
                  highlight=False, markup=False, soft_wrap=True)
    label_width = max(len(c.label) for c in columns)
    for row in shown:
        console.print("", highlight=False)
        for column in columns:
            console.print(f"{column.label:<{label_width}}  {row[column.key]}", highlight=False,
                          markup=False, soft_wrap=True)
