"""Reconciliation: a partner's own record of a period matched against the ledger, and the
report stored."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.ids import uuid7
from core.money import Money, quantize
from partners import service as partners
from settlement import service as settlement
from settlement.errors import ReconciliationLimitExceeded
from settlement.pricing import SETTLED_KINDS_SQL, priced
from settlement.reconciliation_file import HEADER, KINDS, MAX_BYTES, MAX_LINES, FileLine, parse
from settlement.reconciliation_reports import (
    PAGE_DEFAULT,
    PAGE_MAX,
    STATUSES,
    ReconciliationLine,
    ReconciliationReport,
    get_report,
    lines_page,
    list_reports,
    page_args,
)

__all__ = [
    "HEADER",
    "KINDS",
    "MAX_BYTES",
    "MAX_LINES",
    "PAGE_DEFAULT",
    "PAGE_MAX",
    "STATUSES",
    "FileLine",
    "ReconciliationLine",
    "ReconciliationReport",
    "get_report",
    "lines_page",
    "list_reports",
    "page_args",
    "parse",
    "reconcile",
]

_INSERT_CHUNK = 2000  # lines per INSERT: json.dumps holds the GIL for a whole chunk

# The ledger side: every transaction of the partner whose effective time lies in the period,
# priced as the statement prices it, summed by (order reference, kind).
_LEDGER_SIDE = text(
    f"""
    SELECT ref, kind, sum(points) AS points, sum(points * price) AS exact,
           array_agg(id ORDER BY effective_at, id) AS ids
    FROM ({
        priced(
            "SELECT t.id, t.kind, t.partner_id, t.points, t.reverses_id, t.ref, t.effective_at, "
            "t.recorded_at, CAST(NULL AS uuid) AS adjusts, t.operator_points FROM ledger_events t "
            "WHERE t.partner_id = :partner AND t.effective_at >= :start AND t.effective_at < :end "
            f"AND t.kind IN ({SETTLED_KINDS_SQL})"
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
    """Match the file's lines with the ledger's (order, kind) sums; pure CPU (run off the loop).

    Several lines, or several ledger transactions, with the same (order, kind) are added up (an
    order captured twice, refunded in parts); the ledger's amount is rounded once, half-even.
    A pair is matched when points and amount agree, mismatched when either differs, missing in
    the ledger or missing in the file when only one side has it."""
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
    # Parsing and matching 100,000 lines take about a second of CPU: off the loop, so that
    # other requests are not stalled; the reads and writes stay on it.
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
