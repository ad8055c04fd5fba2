"""Rewards and partners' bonuses in settlement: a reward is points redeemed at the partner that
delivers it, at its redemption price in force at the redemption, the matrix showing the issuers
of the points spent; a partner's bonus is points it issued, at its issue price in force at the
bonus. Both reach the statement files, the PDF invoice and reconciliation as kinds `reward` and
`bonus`."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from partners import service as partners
from settlement import exports, reconciliation
from settlement import service as settlement
from tests.settlement.helpers import bonus, coalition, earn, reward

FEB = datetime(2024, 2, 1, tzinfo=UTC)
MAR = datetime(2024, 3, 1, tzinfo=UTC)
APR = datetime(2024, 4, 1, tzinfo=UTC)
D = Decimal


async def _agreement(engine, partner, issue: str, redemption: str, effective_from) -> None:
    async with engine.begin() as conn:
        await partners.set_agreement(
            conn,
            partner_id=partner,
            issue_price=issue,
            redemption_price=redemption,
            effective_from=effective_from,
            currency="RUB",
            actor="operator",
        )


async def _run(engine, start=MAR, end=APR):
    async with engine.begin() as conn:
        return await settlement.run(
            conn, currency="RUB", period_start=start, period_end=end, actor="operator"
        )


async def test_a_reward_is_redeemed_at_its_partner_with_the_issuers_of_the_points_spent(
    sengine, monkeypatch
) -> None:
    (a, b, r), (m, _) = await coalition(
        sengine,
        prices=[("0.015", "0.01"), ("0.02", "0.012"), ("0.018", "0.0125")],
        effective_from=FEB,
    )
    await _agreement(sengine, r, "0.018", "0.013", MAR + timedelta(days=14))  # R's new price
    await earn(sengine, m, a, 300, MAR + timedelta(days=1), ref="A-1")
    await earn(sengine, m, b, 500, MAR + timedelta(days=2), ref="B-1")
    # Earliest expiry first: A's 300, then 150 of B's; then 50 more of B's at R's new price.
    await reward(sengine, m, r, 450, MAR + timedelta(days=9), ref="gift-1")
    await reward(sengine, m, r, 50, MAR + timedelta(days=19), ref="gift-2")
    period = await _run(sengine)

    async with sengine.connect() as conn:
        st = {s.partner_id: s for s in await settlement.statements(conn, period_id=period.id)}
        cells = await settlement.matrix(conn, period_id=period.id)
        a_view = await settlement.matrix(conn, period_id=period.id, partner_id=a)
    sr = st[r]
    assert (sr.issued_points, sr.redeemed_points, sr.returned_points) == (0, 500, 0)
    # 450 x 0.0125 + 50 x 0.013 = 6.275, rounded once, half-even.
    assert (sr.reimbursement.amount, sr.issuance_charge.amount, sr.net.amount) == (
        D("6.28"),
        D(0),
        D("6.28"),
    )
    assert (st[a].issued_points, st[a].issuance_charge.amount, st[a].net.amount) == (
        300,
        D("4.50"),
        D("-4.50"),
    )
    assert (st[b].issued_points, st[b].issuance_charge.amount) == (500, D("10.00"))
    assert period.operator_margin.amount == D("8.22")  # 4.50 + 10.00 - 6.28
    assert {(c.issuer_id, c.redeemer_id): (c.points, c.value.amount) for c in cells} == {
        (a, r): (300, D("3.75")),  # 300 x 0.0125
        (b, r): (200, D("2.52")),  # 150 x 0.0125 + 50 x 0.013 = 2.525
    }
    assert [(c.issuer_id, c.redeemer_id) for c in a_view] == [(a, r)]

    # R's statement file lists the rewards, its reconciliation file matches them.
    async with sengine.connect() as conn:
        body = await exports.statement_csv(conn, period_id=period.id, partner_id=r)
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    events = [
        (x["order_ref"], x["kind"], x["points"], x["amount"])
        for x in rows
        if x["line_type"] == "event"
    ]
    assert events == [("gift-1", "reward", "450", "5.62"), ("gift-2", "reward", "50", "0.65")]
    totals = {x["kind"]: (x["points"], x["amount"]) for x in rows if x["line_type"] == "total"}
    assert totals["redeemed"] == ("500", "") and totals["reimbursement"] == ("", "6.28")
    async with sengine.begin() as conn:
        rep = await reconciliation.reconcile(
            conn,
            max_per_period=5,
            period_id=period.id,
            partner_id=r,
            data=b"order_ref,kind,points,amount\ngift-1,reward,450,5.62\ngift-2,reward,50,0.66\n",
            actor="partner",
        )
    assert {(x.order_ref, x.kind, x.status) for x in rep.lines} == {
        ("gift-1", "reward", "matched"),
        ("gift-2", "reward", "mismatched"),
    }

    # The invoice prices the rewards at each redemption price, in the reimbursement part.
    seen = {}
    real = exports.render_statement_pdf

    def spy(**kw):
        seen.update(kw)
        return real(**kw)

    monkeypatch.setattr(exports, "render_statement_pdf", spy)
    async with sengine.connect() as conn:
        pdf = await exports.statement_pdf(
            conn, operator_name="Operator", period_id=period.id, partner_id=r
        )
    assert pdf.startswith(b"%PDF")
    assert sorted((g.kind, g.price, int(g.points)) for g in seen["groups"]) == [
        ("reward", D("0.0125"), 450),
        ("reward", D("0.013"), 50),
    ]

    closed = await settlement.expire_and_close(sengine, period_id=period.id, actor="operator")
    async with sengine.connect() as conn:
        assert (await settlement.verify(conn, period_id=closed.id)).ok
        assert await settlement.statements(conn, period_id=closed.id) == list(
            sorted(st.values(), key=lambda s: s.partner_id)
        )


async def test_a_partners_bonus_is_charged_to_it_at_the_issue_price_of_the_bonus(sengine) -> None:
    (a,), (m, _) = await coalition(sengine, prices=[("0.015", "0.01")], effective_from=FEB)
    await _agreement(sengine, a, "0.02", "0.01", MAR + timedelta(days=10))
    # A bonus of February, lasting a month: it expires in March, priced at its own issue.
    await bonus(sengine, m, a, 25, FEB + timedelta(days=14), validity_months=1)
    await earn(sengine, m, a, 1000, MAR + timedelta(days=1), ref="order-1")
    await bonus(sengine, m, a, 100, MAR + timedelta(days=5), ref="review-1")
    await bonus(sengine, m, a, 40, MAR + timedelta(days=12), ref="review-2")
    period = await settlement.expire_and_close(
        sengine, period_id=(await _run(sengine)).id, actor="operator"
    )

    async with sengine.connect() as conn:
        (s,) = await settlement.statements(conn, period_id=period.id)
        body = await exports.statement_csv(conn, period_id=period.id, partner_id=a)
    # 1000 x 0.015 + 100 x 0.015 + 40 x 0.02 = 17.30; the February bonus expired: 25 x 0.015.
    assert (s.issued_points, s.issuance_charge.amount, s.net.amount) == (
        1140,
        D("17.30"),
        D("-17.30"),
    )
    assert (s.breakage_points, s.breakage_value.amount, s.unpriced_events) == (25, D("0.38"), 0)
    assert (period.operator_issued_points, period.operator_breakage_points) == (0, 0)
    assert (period.breakage_points, period.breakage_value.amount) == (25, D("0.38"))
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [
        (x["order_ref"], x["kind"], x["amount"]) for x in rows if x["line_type"] == "event"
    ] == [
        ("order-1", "earn", "15.00"),
        ("review-1", "bonus", "1.50"),
        ("review-2", "bonus", "0.80"),
    ]
    async with sengine.begin() as conn:
        rep = await reconciliation.reconcile(
            conn,
            max_per_period=5,
            period_id=period.id,
            partner_id=a,
            data=(
                "order_ref,kind,points,amount\norder-1,earn,1000,15.00\n"
                "review-1,bonus,100,1.50\nreview-2,bonus,40,0.80\n"
            ),
            actor="partner",
        )
    assert (rep.matched, rep.mismatched, rep.missing_in_file, rep.missing_in_ledger) == (3, 0, 0, 0)
    async with sengine.connect() as conn:
        assert (await settlement.verify(conn, period_id=period.id)).ok
