"""Reconciliation: a partner's own record of a period matched against the ledger.

The file is CSV, UTF-8 (a byte-order mark is fine), comma-separated, with exactly this header:

    order_ref,kind,points,amount

one line per event of the partner in the period: its order reference, the kind (`earn`,
`reversal`, `capture`, `return`), the points (a positive whole number) and the amount: the
line's value in the settlement currency at the agreement in force at the event (points x
price, positive; the kind gives the direction), with at most the currency's minor-unit digits.

Lines are matched by (order reference, kind); several lines, or several ledger transactions,
with the same pair are added up (an order captured twice, refunded in parts). The ledger side
is every transaction of the partner whose effective time lies in the period, priced as the
statement prices it; its amount is rounded once, half-even, per (order, kind). A pair is
matched when points and amount agree, mismatched when either differs, missing in the ledger or
missing in the file when only one side has it.

A file larger than 5 MB or longer than 100,000 lines, or malformed anywhere, is refused with
an error naming the line, and nothing is stored. A valid file stores its report.

Reads the ledger's `transactions` and the agreements in set-based SQL (see settlement.service).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.ids import uuid7
from core.money import Money, minor_units, quantize
from partners import service as partners
from settlement import service as settlement
from settlement.errors import ReconciliationFileError, ReconciliationNotFound
from settlement.pricing import priced

HEADER = ("order_ref", "kind", "points", "amount")
KINDS = ("earn", "reversal", "capture", "return")
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


@dataclass(frozen=True)
class ReconciliationLine:
    """One (order reference, kind) and how the partner's file and the ledger compare."""

    status: str  # matched, mismatched, missing_in_ledger, missing_in_file
    order_ref: str | None
    kind: str
    file_points: int | None
    file_amount: Money | None
    ledger_points: int | None
    ledger_amount: Money | None
    file_lines: list[int]
    transaction_ids: list[uuid.UUID]

    @property
    def points_differ(self) -> bool:
        return self.status == "mismatched" and self.file_points != self.ledger_points

    @property
    def amount_differs(self) -> bool:
        return self.status == "mismatched" and self.file_amount != self.ledger_amount


@dataclass(frozen=True)
class ReconciliationReport:
    """A stored reconciliation (`lines` empty when listed)."""

    id: uuid.UUID
    period_id: uuid.UUID
    partner_id: uuid.UUID
    filename: str | None
    file_sha256: str
    file_lines: int
    matched: int
    mismatched: int
    missing_in_ledger: int
    missing_in_file: int
    created_at: datetime
    lines: list[ReconciliationLine]


def _short(value: str, n: int = 60) -> str:
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
                f"found {_short(','.join(header))}",
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
                    f"order_ref must be 1..{MAX_REF} printable characters, found {_short(ref)}",
                    line=line,
                )
            if kind.lower() not in KINDS:
                raise ReconciliationFileError(
                    f"kind must be one of {', '.join(KINDS)}, found {_short(kind)}", line=line
                )
            if not _POINTS.fullmatch(points_s) or not 0 < int(points_s) <= MAX_POINTS:
                raise ReconciliationFileError(
                    f"points must be a whole number from 1 to {MAX_POINTS:,}, "
                    f"found {_short(points_s)}",
                    line=line,
                )
            if not amount_re.fullmatch(amount_s):
                raise ReconciliationFileError(
                    f"amount must be a non-negative decimal with at most {places} decimal places "
                    f"({currency}), found {_short(amount_s)}",
                    line=line,
                )
            out.append(FileLine(line, ref, kind.lower(), int(points_s), Decimal(amount_s)))
    except StopIteration:
        raise ReconciliationFileError("the file has no header", line=1) from None
    except csv.Error as exc:
        raise ReconciliationFileError(f"not valid CSV: {exc}", line=reader.line_num or 1) from None
    return out


# The partner's events of the period, priced as the statement prices them, by (ref, kind).
_LEDGER_SIDE = text(
    f"""
    SELECT ref, kind, sum(points) AS points, sum(points * price) AS exact,
           array_agg(id ORDER BY effective_at, id) AS ids
    FROM ({
        priced(
            "SELECT t.id, t.kind, t.partner_id, t.points, t.reverses_id, t.ref, t.effective_at, "
            "t.recorded_at, CAST(NULL AS uuid) AS adjusts FROM transactions t "
            "WHERE t.partner_id = :partner AND t.effective_at >= :start AND t.effective_at < :end "
            "AND t.kind IN ('earn', 'reversal', 'capture', 'return')"
        )
    }) x
    GROUP BY ref, kind
    """
)


async def reconcile(
    conn: AsyncConnection,
    *,
    period_id: uuid.UUID,
    partner_id: uuid.UUID,
    data: bytes | str,
    actor: str,
    filename: str | None = None,
) -> ReconciliationReport:
    """Match a partner's file for a period against the ledger and store the report. A bad file
    raises ReconciliationFileError (naming the line) and stores nothing."""
    period = await settlement.get_period(conn, period_id=period_id)
    await partners.get(conn, partner_id=partner_id)
    cur = period.currency
    lines = parse(data, currency=cur)
    raw = data.encode() if isinstance(data, str) else bytes(data)

    file_side: dict[tuple[str | None, str], list[FileLine]] = {}
    for fl in lines:
        file_side.setdefault((fl.order_ref, fl.kind), []).append(fl)
    ledger_side = {
        (r.ref, r.kind): r
        for r in await conn.execute(
            _LEDGER_SIDE,
            {
                "partner": partner_id,
                "start": period.period_start,
                "end": period.period_end,
                "currency": cur,
            },
        )
    }
    report: list[ReconciliationLine] = []
    for key_ in [
        *file_side,
        *(k for k in sorted(ledger_side, key=lambda k: (k[0] or "", k[1])) if k not in file_side),
    ]:
        fls, led = file_side.get(key_), ledger_side.get(key_)
        f_points = sum(x.points for x in fls) if fls else None
        f_amount = Money(sum((x.amount for x in fls), Decimal(0)), cur) if fls else None
        l_points = int(led.points) if led else None
        l_amount = Money(quantize(led.exact or Decimal(0), cur), cur) if led else None
        if fls and led:
            status = "matched" if (f_points, f_amount) == (l_points, l_amount) else "mismatched"
        else:
            status = "missing_in_ledger" if fls else "missing_in_file"
        report.append(
            ReconciliationLine(
                status,
                key_[0],
                key_[1],
                f_points,
                f_amount,
                l_points,
                l_amount,
                [x.line for x in fls] if fls else [],
                list(led.ids) if led else [],
            )
        )
    counts = {
        s: sum(1 for r in report if r.status == s)
        for s in ("matched", "mismatched", "missing_in_ledger", "missing_in_file")
    }
    rid, now = uuid7(), utcnow()
    await conn.execute(
        text(
            """
            INSERT INTO settlement_reconciliations (id, period_id, partner_id, filename,
                file_sha256, file_lines, matched, mismatched, missing_in_ledger, missing_in_file,
                created_at, actor)
            VALUES (:id, :period, :partner, :filename, :sha, :n, :matched, :mismatched,
                    :mil, :mif, :at, :actor)
            """
        ),
        {
            "id": rid,
            "period": period_id,
            "partner": partner_id,
            "filename": (filename or None) and filename[:300],
            "sha": hashlib.sha256(raw).hexdigest(),
            "n": len(lines),
            "matched": counts["matched"],
            "mismatched": counts["mismatched"],
            "mil": counts["missing_in_ledger"],
            "mif": counts["missing_in_file"],
            "at": now,
            "actor": actor,
        },
    )
    if report:
        await conn.execute(
            text(
                """
                INSERT INTO settlement_reconciliation_lines (reconciliation_id, seq, status,
                    order_ref, kind, file_points, file_amount, ledger_points, ledger_amount,
                    file_line_numbers, transaction_ids)
                SELECT :id, s.seq, s.status, s.ref, s.kind, s.fp, s.fa, s.lp, s.la,
                       CAST(s.fl AS int[]), CAST(s.tx AS uuid[])
                FROM unnest(CAST(:seq AS int[]), CAST(:status AS text[]), CAST(:ref AS text[]),
                            CAST(:kind AS text[]), CAST(:fp AS bigint[]), CAST(:fa AS numeric[]),
                            CAST(:lp AS bigint[]), CAST(:la AS numeric[]), CAST(:fl AS text[]),
                            CAST(:tx AS text[]))
                     AS s(seq, status, ref, kind, fp, fa, lp, la, fl, tx)
                """
            ),
            {
                "id": rid,
                "seq": list(range(1, len(report) + 1)),
                "status": [r.status for r in report],
                "ref": [r.order_ref for r in report],
                "kind": [r.kind for r in report],
                "fp": [r.file_points for r in report],
                "fa": [r.file_amount.amount if r.file_amount else None for r in report],
                "lp": [r.ledger_points for r in report],
                "la": [r.ledger_amount.amount if r.ledger_amount else None for r in report],
                # Arrays of arrays of different lengths travel as array literals.
                "fl": ["{" + ",".join(map(str, r.file_lines)) + "}" for r in report],
                "tx": ["{" + ",".join(map(str, r.transaction_ids)) + "}" for r in report],
            },
        )
    return ReconciliationReport(
        rid,
        period_id,
        partner_id,
        filename,
        hashlib.sha256(raw).hexdigest(),
        len(lines),
        counts["matched"],
        counts["mismatched"],
        counts["missing_in_ledger"],
        counts["missing_in_file"],
        now,
        report,
    )


_REPORT_COLUMNS = (
    "r.id, r.period_id, r.partner_id, r.filename, r.file_sha256, r.file_lines, r.matched, "
    "r.mismatched, r.missing_in_ledger, r.missing_in_file, r.created_at"
)


async def get_report(
    conn: AsyncConnection, *, reconciliation_id: uuid.UUID, partner_id: uuid.UUID | None = None
) -> ReconciliationReport:
    """A stored report with its lines; with `partner_id`, only if it is that partner's."""
    row = (
        await conn.execute(
            text(
                f"SELECT {_REPORT_COLUMNS}, p.currency FROM settlement_reconciliations r "
                "JOIN settlement_periods p ON p.id = r.period_id WHERE r.id = :id "
                "AND (CAST(:partner AS uuid) IS NULL OR r.partner_id = :partner)"
            ),
            {"id": reconciliation_id, "partner": partner_id},
        )
    ).one_or_none()
    if row is None:
        raise ReconciliationNotFound(f"reconciliation {reconciliation_id} not found")
    cur = row.currency
    lines = [
        ReconciliationLine(
            r.status,
            r.order_ref,
            r.kind,
            None if r.file_points is None else int(r.file_points),
            None if r.file_amount is None else Money(quantize(r.file_amount, cur), cur),
            None if r.ledger_points is None else int(r.ledger_points),
            None if r.ledger_amount is None else Money(quantize(r.ledger_amount, cur), cur),
            list(r.file_line_numbers),
            list(r.transaction_ids),
        )
        for r in await conn.execute(
            text(
                "SELECT status, order_ref, kind, file_points, file_amount, ledger_points, "
                "ledger_amount, file_line_numbers, transaction_ids "
                "FROM settlement_reconciliation_lines WHERE reconciliation_id = :id ORDER BY seq"
            ),
            {"id": reconciliation_id},
        )
    ]
    return ReconciliationReport(*row[:11], lines)


async def list_reports(
    conn: AsyncConnection,
    *,
    period_id: uuid.UUID | None = None,
    partner_id: uuid.UUID | None = None,
    first: int = 20,
) -> list[ReconciliationReport]:
    """Stored reports, newest first, without their lines; filtered by period and partner."""
    rows = await conn.execute(
        text(
            f"SELECT {_REPORT_COLUMNS} FROM settlement_reconciliations r "
            "WHERE (CAST(:period AS uuid) IS NULL OR r.period_id = :period) "
            "AND (CAST(:partner AS uuid) IS NULL OR r.partner_id = :partner) "
            "ORDER BY r.created_at DESC, r.id DESC LIMIT :n"
        ),
        {"period": period_id, "partner": partner_id, "n": max(1, min(first, 200))},
    )
    return [ReconciliationReport(*r, []) for r in rows]
