"""A partner's reconciliation file: its format, its limits, and the parser that refuses a bad
file naming the line."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from decimal import Decimal

from core.money import minor_units
from settlement.errors import ReconciliationFileError
from settlement.pricing import SETTLED_KINDS

# The file is CSV, UTF-8 (a byte-order mark is fine), comma-separated, with exactly the header
# HEADER; one line per event of the partner in the period: its order reference, the kind, the
# points (a positive whole number) and the amount: the line's value in the settlement currency
# at the agreement in force at the event (points x price, positive; the kind gives the
# direction), with at most the currency's minor-unit digits. Beyond MAX_BYTES or MAX_LINES,
# or malformed anywhere, the file is refused with an error naming the line.
HEADER = ("order_ref", "kind", "points", "amount")
KINDS = SETTLED_KINDS  # earn, bonus (its own), reversal, capture, reward (delivered), return
MAX_BYTES = 5 * 1024 * 1024
MAX_LINES = 100_000
MAX_REF = 200
MAX_POINTS = 1_000_000_000
_POINTS = re.compile(r"[0-9]{1,10}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class FileLine:
    """One valid line of a partner's file."""

    line: int
    order_ref: str
    kind: str
    points: int
    amount: Decimal


def short_repr(value: str, n: int = 60) -> str:
    """`value` quoted for an error message, cut after `n` characters."""
    return repr(value if len(value) <= n else value[:n] + "...")


def parse(data: bytes | str, *, currency: str) -> list[FileLine]:
    """Validate and read a reconciliation file; the first problem raises, naming its line."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_BYTES:
        raise ReconciliationFileError(
            f"the file is {len(raw):,} bytes; at most {MAX_BYTES:,} bytes (5 MB) are accepted"
        )
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ReconciliationFileError("not UTF-8 text (is it a CSV file?)", line=line) from None
    if "\x00" in content:
        line = content.count("\n", 0, content.index("\x00")) + 1
        raise ReconciliationFileError("contains a NUL byte (is it a CSV file?)", line=line)
    if not content.strip():
        raise ReconciliationFileError(
            f"the file is empty: expected the header {','.join(HEADER)}", line=1
        )
    places = minor_units(currency)
    amount_re = re.compile(r"[0-9]{1,12}" + (rf"(\.[0-9]{{1,{places}}})?" if places else ""))
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    out: list[FileLine] = []
    try:
        header = next(reader)
        if [c.strip().lower() for c in header] != list(HEADER):
            hint = (
                " (fields must be separated by commas)"
                if len(header) == 1 and ";" in header[0]
                else ""
            )
            raise ReconciliationFileError(
                f"the header must be exactly {','.join(HEADER)}{hint}; "
                f"found {short_repr(','.join(header))}",
                line=reader.line_num,
            )
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue  # blank line
            if len(out) >= MAX_LINES:
                raise ReconciliationFileError(
                    f"the file has more than {MAX_LINES:,} lines", line=line
                )
            if len(row) != len(HEADER):
                raise ReconciliationFileError(
                    f"expected {len(HEADER)} fields ({','.join(HEADER)}), found {len(row)}",
                    line=line,
                )
            ref, kind, points_s, amount_s = (c.strip() for c in row)
            if not ref or len(ref) > MAX_REF or _CONTROL.search(ref):
                raise ReconciliationFileError(
                    f"order_ref must be 1..{MAX_REF} printable characters, found {short_repr(ref)}",
                    line=line,
                )
            if kind.lower() not in KINDS:
                raise ReconciliationFileError(
                    f"kind must be one of {', '.join(KINDS)}, found {short_repr(kind)}", line=line
                )
            if not _POINTS.fullmatch(points_s) or not 0 < int(points_s) <= MAX_POINTS:
                raise ReconciliationFileError(
                    f"points must be a whole number from 1 to {MAX_POINTS:,}, "
                    f"found {short_repr(points_s)}",
                    line=line,
                )
            if not amount_re.fullmatch(amount_s):
                raise ReconciliationFileError(
                    f"amount must be a non-negative decimal with at most {places} decimal places "
                    f"({currency}), found {short_repr(amount_s)}",
                    line=line,
                )
            out.append(FileLine(line, ref, kind.lower(), int(points_s), Decimal(amount_s)))
    except StopIteration:
        raise ReconciliationFileError("the file has no header", line=1) from None
    except csv.Error as exc:
        raise ReconciliationFileError(f"not valid CSV: {exc}", line=reader.line_num or 1) from None
    return out
