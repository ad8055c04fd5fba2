"""Transfers between members in settlement: no settlement event (no statement changes, the
liability by issuer neither); transferred points redeemed at partner R are in the matrix under
their original issuer, and their expiry is breakage priced at their original issue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from partners import service as partners
from settlement import service as settlement
from tests.settlement.helpers import coalition, earn, redeem, transfer

FEB = datetime(2024, 2, 1, tzinfo=UTC)
MAR = datetime(2024, 3, 1, tzinfo=UTC)
APR = datetime(2024, 4, 1, tzinfo=UTC)
D = Decimal


async def test_transferred_points_settle_under_their_original_issuer(sengine) -> None:
    (a, b, r), (m, f) = await coalition(
        sengine,
        prices=[("0.015", "0.01"), ("0.02", "0.012"), ("0.018", "0.0125")],
        effective_from=FEB,
    )
    async with sengine.begin() as conn:  # A's price doubles from March 2nd
        await partners.set_agreement(
            conn,
            partner_id=a,
            issue_price="0.03",
            redemption_price="0.01",
            effective_from=MAR + timedelta(days=1),
            currency="RUB",
            actor="operator",
        )
    await earn(sengine, m, a, 60, FEB + timedelta(days=19), validity_months=1)  # to March 20th
    await earn(sengine, m, a, 400, FEB + timedelta(days=20))
    await earn(sengine, m, b, 100, MAR + timedelta(days=2))

    async def march():
        async with sengine.begin() as conn:
            period = await settlement.run(
                conn, currency="RUB", period_start=MAR, period_end=APR, actor="operator"
            )
            return (
                period,
                await settlement.statements(conn, period_id=period.id),
                await settlement.matrix(conn, period_id=period.id),
            )

    async def liability():
        async with sengine.connect() as conn:
            return await settlement.liability(conn, currency="RUB", at=MAR + timedelta(days=10))

    before, statements, cells = await march()
    owed = await liability()
    assert [(x.issuer_id, x.points) for x in owed] == [(a, 460), (b, 100)]
    # Earliest expiry first: the 60 points expiring on March 20th, then 340 of the others.
    await transfer(sengine, m, f, 400, MAR + timedelta(days=5))
    after, statements_after, cells_after = await march()
    assert statements_after == statements and cells_after == cells == []
    assert [(s.partner_id, s.issued_points, s.issuance_charge.amount) for s in statements] == [
        (b, 100, D("2.00"))
    ]
    assert after.transaction_count == before.transaction_count + 1  # counted, settled as nothing
    assert await liability() == owed

    # The receiver pays 250 at R: A's points, whoever holds them.
    await redeem(sengine, f, r, 250, MAR + timedelta(days=21))
    closed = await settlement.expire_and_close(sengine, period_id=after.id, actor="operator")
    async with sengine.connect() as conn:
        st = {s.partner_id: s for s in await settlement.statements(conn, period_id=closed.id)}
        cells = await settlement.matrix(conn, period_id=closed.id)
        (snap,) = [h for h in await settlement.liability_history(conn) if h.period_id == closed.id]
        assert (await settlement.verify(conn, period_id=closed.id)).ok
    assert {(c.issuer_id, c.redeemer_id): (c.points, c.value.amount) for c in cells} == {
        (a, r): (250, D("3.12"))  # 250 x 0.0125 = 3.125, half-even
    }
    assert (st[r].redeemed_points, st[r].reimbursement.amount) == (250, D("3.12"))
    # The 60 points given to f expired with their original dates, priced at their February
    # issue (0.015), not at A's price when they were given or expired (0.03).
    assert (st[a].issued_points, st[a].breakage_points, st[a].breakage_value.amount) == (
        0,
        60,
        D("0.90"),
    )
    assert st[a].net.amount == 0 and st[a].unpriced_events == 0
    assert (st[b].issued_points, st[b].issuance_charge.amount) == (100, D("2.00"))
    # The liability by issuer at the end of March: A's 60 with m and 90 left with f, B's 100.
    assert [(x.issuer_id, x.points, x.value.amount) for x in snap.lines] == [
        (a, 150, D("4.50")),
        (b, 100, D("2.00")),
    ]
