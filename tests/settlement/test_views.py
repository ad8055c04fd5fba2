"""What a partner sees (only its own statement, only its row and column of the matrix), the
exports, and the points liability."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from partners import service as partners
from settlement import exports
from settlement import service as settlement
from tests.settlement.helpers import coalition, earn, redeem, return_points, reverse

MAR = datetime(2024, 3, 1, tzinfo=UTC)
APR = datetime(2024, 4, 1, tzinfo=UTC)
MAY = datetime(2024, 5, 1, tzinfo=UTC)


async def _three_partners(sengine):
    (a, b, c), (m, n) = await coalition(
        sengine,
        prices=[("0.015", "0.01"), ("0.02", "0.012"), ("0.01", "0.009")],
        effective_from=MAR - timedelta(days=30),
    )
    async with sengine.begin() as conn:  # a Cyrillic name must render in the PDF
        await conn.execute(text("UPDATE partners SET name = 'Роснефть' WHERE id = :id"), {"id": a})
    ea = await earn(sengine, m, a, 1000, MAR + timedelta(days=1), ref="A-1")
    await earn(sengine, n, c, 600, MAR + timedelta(days=1), ref="C-1")
    await earn(sengine, n, b, 400, MAR + timedelta(days=1, hours=1), ref="B-1")
    await redeem(sengine, m, b, 300, MAR + timedelta(days=2), ref="B-2")  # A's points at B
    h, _ = await redeem(sengine, n, c, 700, MAR + timedelta(days=3), ref="C-2")  # C's and B's at C
    await return_points(sengine, c, h, 100, MAR + timedelta(days=4), ref="C-2")
    await reverse(sengine, a, ea, 50, MAR + timedelta(days=5), ref="A-1")
    async with sengine.begin() as conn:
        period = await settlement.run(
            conn, currency="RUB", period_start=MAR, period_end=APR, actor="operator"
        )
        april = await settlement.run(
            conn, currency="RUB", period_start=APR, period_end=MAY, actor="operator"
        )
    period = await settlement.expire_and_close(sengine, period_id=period.id, actor="operator")
    await earn(sengine, m, b, 10, MAR + timedelta(days=9), ref="B-late")  # adjusts March
    async with sengine.begin() as conn:
        april = await settlement.run_period(conn, period_id=april.id, actor="operator")
    return period, april, a, b, c


async def test_a_partner_sees_only_its_own(sengine) -> None:
    period, april, a, b, c = await _three_partners(sengine)
    async with sengine.connect() as conn:
        everything = await settlement.matrix(conn, period_id=period.id)
        # B's 100 points accepted at C came back (returns go to the last captured lot first):
        # that cell nets to zero and is left out.
        assert {(x.issuer_id, x.redeemer_id) for x in everything} == {(a, b), (c, c)}
        for me in (a, b, c):
            own = await settlement.statements(conn, period_id=period.id, partner_id=me)
            assert [s.partner_id for s in own] == [me]
            cells = await settlement.matrix(conn, period_id=period.id, partner_id=me)
            assert cells and all(me in (x.issuer_id, x.redeemer_id) for x in cells)
            assert {(x.issuer_id, x.redeemer_id) for x in cells} == {
                (x.issuer_id, x.redeemer_id)
                for x in everything
                if me in (x.issuer_id, x.redeemer_id)
            }
            pay = await settlement.payment_instructions(conn, period_id=period.id, partner_id=me)
            assert [i.partner_id for i in pay.instructions] == [me] and pay.operator_margin is None
            view = await settlement.get_period(conn, period_id=period.id, partner_id=me)
            assert view.operator_margin is None and view.breakage_value is None
            assert view.content_hash == period.content_hash  # the seal is shown to partners
            assert all(
                p.operator_margin is None
                for p in await settlement.list_periods(conn, partner_id=me)
            )
            adj = await settlement.adjustments(conn, period_id=april.id, partner_id=me)
            assert all(x.partner_id == me for x in adj) and (len(adj) == 1) == (me == b)
            lines = await settlement.liability(conn, currency="RUB", partner_id=me)
            assert [x.issuer_id for x in lines] == ([] if me == c else [me])  # C's were all spent
            history = await settlement.liability_history(conn, partner_id=me)
            assert all(x.issuer_id == me for h in history for x in h.lines)
        cell = {(x.issuer_id, x.redeemer_id): (x.points, x.value.amount) for x in everything}
        assert cell == {(c, c): (600, Decimal("5.40")), (a, b): (300, Decimal("3.60"))}


async def test_statement_csv_and_pdf(sengine) -> None:
    period, april, a, b, _ = await _three_partners(sengine)
    async with sengine.connect() as conn:
        body = await exports.statement_csv(conn, period_id=period.id, partner_id=a)
        rows = list(csv.DictReader(io.StringIO(body)))
        events = [r for r in rows if r["line_type"] == "event"]
        assert [(r["order_ref"], r["kind"], r["points"], r["amount"]) for r in events] == [
            ("A-1", "earn", "1000", "15.00"),
            ("A-1", "reversal", "50", "0.75"),
        ]
        totals = {r["kind"]: r for r in rows if r["line_type"] == "total"}
        (st,) = await settlement.statements(conn, period_id=period.id, partner_id=a)
        assert Decimal(totals["net"]["amount"]) == st.net.amount == Decimal("-14.25")
        assert Decimal(totals["issuance_charge"]["amount"]) == st.issuance_charge.amount
        late = list(
            csv.DictReader(
                io.StringIO(await exports.statement_csv(conn, period_id=april.id, partner_id=b))
            )
        )
        assert [
            (r["line_type"], r["order_ref"], r["adjusts_period_id"])
            for r in late
            if r["line_type"] != "total"
        ] == [
            ("adjustment", "B-late", str(period.id)),
        ]
        for p_id, partner in ((period.id, a), (april.id, b)):
            pdf = await exports.statement_pdf(
                conn, operator_name="Coalition operator", period_id=p_id, partner_id=partner
            )
            assert pdf.startswith(b"%PDF-") and len(pdf) > 5_000
        liability = list(
            csv.DictReader(io.StringIO(await exports.liability_csv(conn, currency="RUB", at=APR)))
        )
        assert {r["issuer"] for r in liability} >= {"Роснефть"}


async def test_liability_now_and_per_period(sengine) -> None:
    (a, b), (m, _) = await coalition(
        sengine,
        prices=[("0.015", "0.01"), ("0.02", "0.012")],
        effective_from=MAR - timedelta(days=30),
    )
    e = await earn(sengine, m, a, 1000, MAR + timedelta(days=1))
    await earn(sengine, m, b, 500, MAR + timedelta(days=2), validity_months=1)  # expires Apr 2
    await redeem(sengine, m, b, 200, MAR + timedelta(days=3))  # from B's lot: earliest expiry
    await reverse(sengine, a, e, 100, MAR + timedelta(days=4))
    async with sengine.begin() as conn:
        march = await settlement.run(
            conn, currency="RUB", period_start=MAR, period_end=APR, actor="operator"
        )
        # A price rise on April 1 values the liability at the end of March.
        await partners.set_agreement(
            conn,
            partner_id=a,
            issue_price="0.02",
            redemption_price="0.01",
            effective_from=APR,
            currency="RUB",
            actor="operator",
        )
    march = await settlement.expire_and_close(sengine, period_id=march.id, actor="operator")
    # Outstanding at the end of March: A 900, B 300 (its lot expires on April 2).
    async with sengine.connect() as conn:
        (snap,) = await settlement.liability_history(conn)
        assert {x.issuer_id: (x.points, x.value.amount) for x in snap.lines} == {
            a: (900, Decimal("18.00")),
            b: (300, Decimal("6.00")),
        }
        assert snap.total_points == 1200 and snap.total_value.amount == Decimal("24.00")
        # Now (B's lot has expired, not yet swept): only A's points are outstanding.
        now = {x.issuer_id: x.points for x in await settlement.liability(conn, currency="RUB")}
        assert now == {a: 900}
        # Mid-March, as the ledger knows it now.
        mid = {
            x.issuer_id: x.points
            for x in await settlement.liability(
                conn, currency="RUB", at=MAR + timedelta(days=2, hours=12)
            )
        }
        assert mid == {a: 1000, b: 500}
