r"""CSV cells a spreadsheet will not run (CSV / formula injection, CWE-1236).

Spreadsheets read a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula
(``=HYPERLINK(…)``, ``=cmd|' /C calc'!A0``), and one that starts with a tab or a
carriage return can be shifted into one. Every CSV the broker writes passes each
cell through :func:`csv_cell`, which applies OWASP's rule: such a cell gets a
leading ``'``, which spreadsheets show as text and do not evaluate. The full-width
forms of the first four (U+FF1D, U+FF0B, U+FF0D, U+FF20), which some spreadsheets
also accept, are treated the same.
Quoting of separators and quotes is left to :mod:`csv` itself.

A list (categories, field paths, uses) is one cell, its items joined by ``"; "``
(:func:`list_cell`), which people read and spreadsheets split ("Text to columns",
``TEXTSPLIT``) on ``;``, rather than a JSON array. An item's own ``;`` is written
``\;`` and its own ``\`` ``\\`` (:func:`split_list` reads them back); the keys
and paths the broker lists have neither.

The cost: a value that really starts with one of these characters (a negative
number, ``-`` as a placeholder) reads ``'-1`` in the file. The broker's numeric
columns (sizes, status codes) are never negative.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["FORMULA_TRIGGERS", "LIST_SEPARATOR", "csv_cell", "csv_row", "list_cell", "split_list"]

FORMULA_TRIGGERS = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
LIST_SEPARATOR = "; "


def csv_cell(text: str) -> str:
    """``text``, prefixed with ``'`` when a spreadsheet would read it as a formula."""
    return "'" + text if text and text[0] in FORMULA_TRIGGERS else text


def csv_row(cells: Iterable[str]) -> list[str]:
    return [csv_cell(c) for c in cells]


def list_cell(items: Iterable[object]) -> str:
    """``items`` as one cell: ``a; b; c`` (an empty list is an empty cell)."""
    return LIST_SEPARATOR.join(str(i).replace("\\", "\\\\").replace(";", "\\;") for i in items)


def split_list(cell: str) -> list[str]:
    """The items of a :func:`list_cell` cell (after any leading ``'`` is removed)."""
    if not cell:
        return []
    out, item, escaped = [], "", False
    for ch in cell:
        if escaped:
            item, escaped = item + ch, False
        elif ch == "\\":
            escaped = True
        elif ch == ";":
            out.append(item.strip())
            item = ""
        else:
            item += ch
    return [*out, item.strip()]
