"""Tables that stay readable at any width: never a column cut to three letters.

    fits the console            a table; free-text columns (`fold`) fold inside their cell
    too wide, output piped      the table at the width it needs: long lines, nothing cut (grep and less keep them)
    too wide, a narrow terminal one block per row, "column: value" lines folded to the width

A column's width is its header or its longest value; a folding column needs only FOLD_MIN_WIDTH of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

__all__ = ["FOLD_MIN_WIDTH", "print_table", "table_width"]

FOLD_MIN_WIDTH = 16
Cell = str | Text


def _len(cell: Cell) -> int:
    return max((len(line) for line in str(cell).splitlines()), default=0)


def _widths(headers: Sequence[str], rows: Sequence[Sequence[Cell]], fold: set[str]) -> list[int]:
    widths = []
    for i, header in enumerate(headers):
        longest = max([len(header), *(_len(row[i]) for row in rows)])
        widths.append(max(len(header), min(longest, FOLD_MIN_WIDTH)) if header in fold else longest)
    return widths


def table_width(widths: Sequence[int]) -> int:
    """A boxed table's width: each column's cells plus one space of padding either side, and n + 1 rules."""
    return sum(widths) + 3 * len(widths) + 1


def print_table(console: Console, headers: Sequence[str], rows: Sequence[Sequence[Cell]], *,
                fold: Sequence[str] = (), title: str | None = None) -> None:
    fold_set = set(fold)
    widths = _widths(headers, rows, fold_set)
    if title:
        console.print(Text(title, style="bold"))
    fits = table_width(widths) <= console.width
    if fits or not console.is_terminal:
        table = Table(*(Column(h, min_width=w, no_wrap=h not in fold_set, overflow="fold")
                        for h, w in zip(headers, widths, strict=True)))
        for row in rows:
            table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in row))
        if not fits:  # piped: a console as wide as the table, since rich never prints wider than its console
            natural = [max([len(h), *(_len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
            console = Console(file=console.file, width=table_width(natural), highlight=False,
                              color_system=console.color_system and "standard")
        console.print(table)
        return
    key_width = max(len(h) for h in headers)
    for row in rows:
        grid = Table.grid(Column(min_width=key_width + 1, no_wrap=True, style="dim"),
                          Column(overflow="fold"), padding=(0, 1))
        for header, cell in zip(headers, row, strict=True):
            grid.add_row(f"{header}:", cell if isinstance(cell, Text) else Text(str(cell)))
        console.print(grid)
        console.print()
