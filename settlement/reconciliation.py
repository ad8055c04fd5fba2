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
an error naming the line, and nothing is stored. A valid file stores its report, one row per
line; a partner keeps at most `RECONCILIATION_MAX_PER_PERIOD` reports per period (beyond, the
upload is refused with LIMIT_EXCEEDED before the file is read), and readers page through a
report's lines (`lines_page`) instead of loading them whole.

Parsing and matching run in a worker thread (`asyncio.to_thread`): a 100,000-line file takes
about a second of CPU, which must not stall every other request on the event loop. The
database reads and writes stay on the loop; the lines are written in chunks.

Reads the ledger's view `ledger_events` and the agreements in set-based SQL (see
settlement.service).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.errors import ValidationError
from core.ids import uuid7
from core.money import Money, minor_units, quantize
from partners import service as partners
from settlement import service as settlement
from settlement.errors import (
    ReconciliationFileError,
    ReconciliationLimitExceeded,
    ReconciliationNotFound,
)
from settlement.pricing import priced

HEADER = ("order_ref", "kind", "points", "amount")
KINDS = ("earn", "reversal", "capture", "return")
STATUSES = ("matched", "mismatched", "missing_in_ledger", "missing_in_file")
PAGE_DEFAULT = 100
PAGE_MAX = 1000
_INSERT_CHUNK = 2000  # lines per INSERT: json.dumps holds the GIL for a whole chunk
_MAX_SEQ = 2**31 - 1  # seq is an int4
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
    seq: int  # position in the report, from 1: the paging cursor

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
            "t.recorded_at, CAST(NULL AS uuid) AS adjusts FROM ledger_events t "
            "WHERE t.partner_id = :partner AND t.effective_at >= :start AND t.effective_at < :end "
            "AND t.kind IN ('earn', 'reversal', 'capture', 'return')"
        )
    }) x
    GROUP BY ref, kind
    """
)


async def _claim_slot(
    conn: AsyncConnection, *, period_id: uuid.UUID, partner_id: uuid.UUID, limit: int
) -> None:
    """Refuse when the partner already keeps `limit` reports for the period. The advisory lock
    (held to the end of the transaction) serialises uploads of one partner and period, so two
    parallel uploads cannot both take the last slot."""
    await conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtextextended("
            "'reconciliation/' || CAST(:period AS text) || '/' || CAST(:partner AS text), 0))"
        ),
        {"period": period_id, "partner": partner_id},
    )
    stored = (
        await conn.execute(
            text(
                "SELECT count(*) FROM settlement_reconciliations "
                "WHERE period_id = :period AND partner_id = :partner"
            ),
            {"period": period_id, "partner": partner_id},
        )
    ).scalar_one()
    if stored >= limit:
        raise ReconciliationLimitExceeded(
            f"this partner already has {stored} reconciliation reports for the period, the most "
            f"one period keeps ({limit}); earlier reports stay readable",
            limit=limit,
            stored=stored,
        )


def _compare(
    lines: list[FileLine], ledger_rows: Sequence[Any], cur: str
) -> tuple[list[ReconciliationLine], dict[str, int]]:
    """Match the file's lines with the ledger's (order, kind) sums; pure CPU (run off the loop)."""
    file_side: dict[tuple[str | None, str], list[FileLine]] = {}
    for fl in lines:
        file_side.setdefault((fl.order_ref, fl.kind), []).append(fl)
    ledger_side = {(r.ref, r.kind): r for r in ledger_rows}
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
                len(report) + 1,
            )
        )
    counts = {s: 0 for s in STATUSES}
    for r in report:
        counts[r.status] += 1
    return report, counts


def _lines_json(chunk: list[ReconciliationLine]) -> str:
    """Some lines as one JSON text for the INSERT (built off the loop: one text parameter costs
    the loop nothing to adapt, where 100,000 rows of ten parameters cost it about a second)."""
    return json.dumps(
        [
            {
                "seq": r.seq,
                "status": r.status,
                "ref": r.order_ref,
                "kind": r.kind,
                "fp": r.file_points,
                "fa": None if r.file_amount is None else str(r.file_amount.amount),
                "lp": r.ledger_points,
                "la": None if r.ledger_amount is None else str(r.ledger_amount.amount),
                "fl": r.file_lines,
                "tx": [str(t) for t in r.transaction_ids],
            }
            for r in chunk
        ],
        ensure_ascii=False,
    )


def _prepare(data: bytes | str, cur: str) -> tuple[list[FileLine], str]:
    """Parse the file and hash it (off the loop)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return parse(raw, currency=cur), hashlib.sha256(raw).hexdigest()


_INSERT_LINES = text(
    """
    INSERT INTO settlement_reconciliation_lines (reconciliation_id, seq, status,
        order_ref, kind, file_points, file_amount, ledger_points, ledger_amount,
        file_line_numbers, transaction_ids)
    SELECT :id, s.seq, s.status, s.ref, s.kind, s.fp, s.fa, s.lp, s.la, s.fl, s.tx
    FROM json_to_recordset(CAST(:lines AS json))
         AS s(seq int, status text, ref text, kind text, fp bigint, fa numeric, lp bigint,
              la numeric, fl int[], tx uuid[])
    """
)


async def reconcile(
    conn: AsyncConnection,
    *,
    period_id: uuid.UUID,
    partner_id: uuid.UUID,
    data: bytes | str,
    actor: str,
    max_per_period: int,
    filename: str | None = None,
) -> ReconciliationReport:
    """Match a partner's file for a period against the ledger and store the report. A bad file
    raises ReconciliationFileError (naming the line), a partner already keeping
    `max_per_period` reports for the period ReconciliationLimitExceeded;
    either way nothing is stored."""
    period = await settlement.get_period(conn, period_id=period_id)
    await partners.get(conn, partner_id=partner_id)
    await _claim_slot(conn, period_id=period_id, partner_id=partner_id, limit=max_per_period)
    cur = period.currency
    lines, sha = await asyncio.to_thread(_prepare, data, cur)
    ledger_rows = (
        await conn.execute(
            _LEDGER_SIDE,
            {
                "partner": partner_id,
                "start": period.period_start,
                "end": period.period_end,
                "currency": cur,
            },
        )
    ).all()
    report, counts = await asyncio.to_thread(_compare, lines, ledger_rows, cur)
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
            "sha": sha,
            "n": len(lines),
            "matched": counts["matched"],
            "mismatched": counts["mismatched"],
            "mil": counts["missing_in_ledger"],
            "mif": counts["missing_in_file"],
            "at": now,
            "actor": actor,
        },
    )
    for start in range(0, len(report), _INSERT_CHUNK):
        chunk = await asyncio.to_thread(_lines_json, report[start : start + _INSERT_CHUNK])
        await conn.execute(_INSERT_LINES, {"id": rid, "lines": chunk})
    return ReconciliationReport(
        rid,
        period_id,
        partner_id,
        filename,
        sha,
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


def _report(r: Any, lines: list[ReconciliationLine]) -> ReconciliationReport:
    """A report from a row that starts with `_REPORT_COLUMNS`."""
    return ReconciliationReport(
        id=r.id,
        period_id=r.period_id,
        partner_id=r.partner_id,
        filename=r.filename,
        file_sha256=r.file_sha256,
        file_lines=r.file_lines,
        matched=r.matched,
        mismatched=r.mismatched,
        missing_in_ledger=r.missing_in_ledger,
        missing_in_file=r.missing_in_file,
        created_at=r.created_at,
        lines=lines,
    )


_LINE_COLUMNS = (
    "l.status, l.order_ref, l.kind, l.file_points, l.file_amount, l.ledger_points, "
    "l.ledger_amount, l.file_line_numbers, l.transaction_ids, l.seq"
)


def _line(r: Any, cur: str) -> ReconciliationLine:
    return ReconciliationLine(
        r.status,
        r.order_ref,
        r.kind,
        None if r.file_points is None else int(r.file_points),
        None if r.file_amount is None else Money(quantize(r.file_amount, cur), cur),
        None if r.ledger_points is None else int(r.ledger_points),
        None if r.ledger_amount is None else Money(quantize(r.ledger_amount, cur), cur),
        list(r.file_line_numbers),
        list(r.transaction_ids),
        r.seq,
    )


async def get_report(
    conn: AsyncConnection,
    *,
    reconciliation_id: uuid.UUID,
    partner_id: uuid.UUID | None = None,
    with_lines: bool = True,
) -> ReconciliationReport:
    """A stored report (with every line unless `with_lines` is false: large reports are read
    with `lines_page`); with `partner_id`, only if it is that partner's."""
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
    if not with_lines:
        return _report(row, [])
    cur = row.currency
    lines = [
        _line(r, cur)
        for r in await conn.execute(
            text(
                f"SELECT {_LINE_COLUMNS} FROM settlement_reconciliation_lines l "
                "WHERE l.reconciliation_id = :id ORDER BY l.seq"
            ),
            {"id": reconciliation_id},
        )
    ]
    return _report(row, lines)


def page_args(
    *, statuses: list[str] | None, after: int | None, limit: int | None
) -> tuple[list[str], int, int]:
    """Checked paging arguments: statuses (default all), cursor (default 0), page size."""
    chosen = list(statuses or STATUSES)
    unknown = [x for x in chosen if x not in STATUSES]
    if unknown:
        raise ValidationError(
            f"status must be among {', '.join(STATUSES)}; found {_short(unknown[0])}",
            field="status",
        )
    after = 0 if after is None else after
    if not 0 <= after <= _MAX_SEQ:
        raise ValidationError("after must be the seq of a line of this report", field="after")
    limit = PAGE_DEFAULT if limit is None else limit
    if not 1 <= limit <= PAGE_MAX:
        raise ValidationError(f"limit must be from 1 to {PAGE_MAX}", field="limit")
    return chosen, after, limit


async def lines_page(
    conn: AsyncConnection,
    *,
    reconciliation_id: uuid.UUID,
    statuses: list[str] | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> tuple[list[ReconciliationLine], int | None]:
    """One page of a stored report's lines in report order: those with `seq` > `after` and one
    of `statuses`, at most `limit` (PAGE_DEFAULT, at most PAGE_MAX); and the `after` of the next
    page, None on the last. Bad arguments raise ValidationError."""
    chosen, after, limit = page_args(statuses=statuses, after=after, limit=limit)
    rows = (
        await conn.execute(
            text(
                f"SELECT {_LINE_COLUMNS}, p.currency FROM settlement_reconciliation_lines l "
                "JOIN settlement_reconciliations r ON r.id = l.reconciliation_id "
                "JOIN settlement_periods p ON p.id = r.period_id "
                "WHERE l.reconciliation_id = :id AND l.seq > :after "
                "AND l.status = ANY(:statuses) ORDER BY l.seq LIMIT :n"
            ),
            {"id": reconciliation_id, "after": after, "statuses": chosen, "n": limit + 1},
        )
    ).all()
    lines = [_line(r, r.currency) for r in rows[:limit]]
    return lines, (lines[-1].seq if len(rows) > limit else None)


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
    return [_report(r, []) for r in rows]
