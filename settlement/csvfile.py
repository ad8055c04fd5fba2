"""The one CSV writer of the app: RFC 4180 text whose cells cannot start a spreadsheet formula."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

# OWASP's rule against CSV (formula) injection: a text cell starting with one of these is
# prefixed with a single quote, so a spreadsheet shows it as text instead of evaluating it.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell made safe for spreadsheets: text that could start a formula gets a leading `'`.

    Only `str` cells are text: every numeric column (points, amounts, prices) is handed to the
    writers as int or Decimal, never as a string, so a negative net such as -12.50 stays a
    number a spreadsheet can add up, while an order reference or a partner name that merely
    looks like `-5` or `=1+1` (text the partner chose) is neutralised."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (RFC 4180, CRLF) of a header and rows, every cell through `csv_cell`; the one
    writer of every CSV the app produces (run it off the loop: it is CPU work)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([csv_cell(c) for c in header])
    w.writerows([csv_cell(c) for c in row] for row in rows)
    return buf.getvalue()
