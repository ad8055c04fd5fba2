"""Stored reconciliation reports: what a report holds, and reading one whole, by page, or the
list of them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import ValidationError
from core.money import Money, quantize
from settlement.errors import ReconciliationNotFound
from settlement.reconciliation_file import short_repr

STATUSES = ("matched", "mismatched", "missing_in_ledger", "missing_in_file")
# Large reports are read by pages of lines (`lines_page`), never loaded whole by a reader.
PAGE_DEFAULT = 100
PAGE_MAX = 1000
_MAX_SEQ = 2**31 - 1  # seq is an int4


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
            f"status must be among {', '.join(STATUSES)}; found {short_repr(unknown[0])}",
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
