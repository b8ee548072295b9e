"""CSV cells a spreadsheet will not run (CSV / formula injection, CWE-1236).

Spreadsheets read a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula
(``=HYPERLINK(…)``, ``=cmd|' /C calc'!A0``), and one that starts with a tab or a
carriage return can be shifted into one. Every CSV the broker writes passes each
cell through :func:`csv_cell`, which applies OWASP's rule: such a cell gets a
leading ``'``, which spreadsheets show as text and do not evaluate. The full-width
forms of the first four (U+FF1D, U+FF0B, U+FF0D, U+FF20), which some spreadsheets
also accept, are treated the same.
Quoting of separators and quotes is left to :mod:`csv` itself.

The cost: a value that really starts with one of these characters (a negative
number, ``-`` as a placeholder) reads ``'-1`` in the file. The broker's numeric
columns (sizes, status codes) are never negative.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["FORMULA_TRIGGERS", "csv_cell", "csv_row"]

FORMULA_TRIGGERS = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")


def csv_cell(text: str) -> str:
    """``text``, prefixed with ``'`` when a spreadsheet would read it as a formula."""
    return "'" + text if text and text[0] in FORMULA_TRIGGERS else text


def csv_row(cells: Iterable[str]) -> list[str]:
    return [csv_cell(c) for c in cells]
