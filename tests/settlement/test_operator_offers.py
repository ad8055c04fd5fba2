"""A coalition-wide offer charged to no partner in settlement (issue 12), with exact numbers,
whether the group commit or the single path wrote the earn: the earning partner is charged for
its own lines only (and credited back for its share of a refund), the partner that accepts the
operator's points is reimbursed as for any point, the matrix shows them with no issuer, the
liability as the operator's line, the period reports them as issued by the operator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_driver_pool
from ledger import service as ledger
from ledger.batch import EarnBatcher
from settlement import reconciliation
from settlement import service as settlement
from tests.ledger.invariants import assert_invariants
from tests.settlement.helpers import coalition, key, redeem, reverse

MAR = datetime(2024, 3, 1, tzinfo=UTC)
APR = datetime(2024, 4, 1, tzinfo=UTC)
D = Decimal
POINT = D("0.85")
LINES = (
    ledger.BreakdownLine("BASE", 150),
    ledger.BreakdownLine("OFFER", 150, uuid.uuid4(), "PARTNER"),  # the partner's x2
    ledger.BreakdownLine("OFFER", 100, uuid.uuid4(), "OPERATOR"),  # coalition-wide +100
)


async def earn(
    engine: AsyncEngine, db_uri: str, path: str, member: uuid.UUID, partner: uuid.UUID
) -> uuid.UUID:
    request = ledger.EarnRequest(
        actor="partner",
        idempotency_key=key("earn"),
        member_id=member,
        partner_id=partner,
        points=400,
        ref="ORD-1",
        amount=D("1500"),
        currency="RUB",
        at=MAR + timedelta(days=1),
        lines=LINES,
    )
    if path == "single":
        async with engine.begin() as conn:
            return (await ledger.earn(conn, request)).transaction_id
    pool = create_driver_pool(db_uri, max_size=2)
    await pool.open(wait=True)
    try:
        batcher = EarnBatcher(pool)
        result = await batcher.earn(request)
        await batcher.drain()
        assert batcher.stats.batched_earns == 1
        return result.transaction_id
    finally:
        await pool.close()


@pytest.mark.parametrize("path", ["batch", "single"])
async def test_a_coalition_wide_offer_is_charged_to_no_partner_in_settlement(
    sengine: AsyncEngine, settle_db: str, path: str
) -> None:
    (a, b), (m, _) = await coalition(
        sengine, prices=[("1.20", "0.95"), ("1.10", "0.80")], effective_from=MAR
    )
    tx = await earn(sengine, settle_db, path, m, a)
    # A quarter of the purchase refunded: 100 of the 400 points, 25 of them the operator's.
    await reverse(sengine, a, tx, 100, MAR + timedelta(days=2), ref="ORD-1")
    await assert_invariants(sengine)
    async with sengine.connect() as conn:
        owed = await settlement.liability(
            conn, currency="RUB", point_value=POINT, at=MAR + timedelta(days=2, hours=12)
        )
    assert [(x.issuer_id, x.points, x.issue_price, x.value.amount) for x in owed] == [
        (a, 225, D("1.20"), D("270.00")),
        (None, 75, POINT, D("63.75")),  # the operator's line, at the face value of a point
    ]
    # Everything left paid at B: the partner's lot first (it was created first), then the
    # operator's.
    await redeem(sengine, m, b, 300, MAR + timedelta(days=3))
    await assert_invariants(sengine)

    async with sengine.begin() as conn:
        period = await settlement.run(
            conn,
            currency="RUB",
            point_value=POINT,
            period_start=MAR,
            period_end=APR,
            actor="operator",
        )
    async with sengine.connect() as conn:
        st = {s.partner_id: s for s in await settlement.statements(conn, period_id=period.id)}
        cells = await settlement.matrix(conn, period_id=period.id)
    # A is charged for its 300 points (BASE and its x2), credited for its 75 of the refund:
    # 225 x 1.20. The operator's 100 are on no statement.
    assert (
        st[a].issued_points,
        st[a].reversed_points,
        st[a].issuance_charge.amount,
        st[a].net.amount,
    ) == (300, 75, D("270.00"), D("-270.00"))
    # B accepted 300 points, 75 of them the operator's: reimbursed all of them at 0.80.
    assert (st[b].redeemed_points, st[b].reimbursement.amount, st[b].issued_points) == (
        300,
        D("240.00"),
        0,
    )
    assert period.operator_margin.amount == D("30.00")
    assert period.operator_issued_points == 100
    assert {(c.issuer_id, c.redeemer_id): (c.points, c.value.amount) for c in cells} == {
        (a, b): (225, D("180.00")),
        (None, b): (75, D("60.00")),  # the operator's points, with no issuer
    }
    # A's own record of the period matches the ledger's: its points, at its price.
    async with sengine.begin() as conn:
        rep = await reconciliation.reconcile(
            conn,
            max_per_period=5,
            period_id=period.id,
            partner_id=a,
            data=b"order_ref,kind,points,amount\nORD-1,earn,300,360.00\nORD-1,reversal,75,90.00\n",
            actor="partner",
        )
    assert (rep.matched, rep.mismatched, rep.missing_in_ledger, rep.missing_in_file) == (
        2,
        0,
        0,
        0,
    )
    # The close recomputes the same figures and seals them.
    closed = await settlement.expire_and_close(sengine, period_id=period.id, actor="operator")
    async with sengine.connect() as conn:
        assert (await settlement.verify(conn, period_id=closed.id)).ok
        after = await settlement.liability(conn, currency="RUB", point_value=POINT, at=APR)
    assert closed.operator_issued_points == 100
    assert after == []
