"""The operator's own points (sign-up and referral bonuses: lots with no issuing partner) in
settlement: charged to no partner, reimbursed to the partner that accepts them, a matrix cell
with no issuer, the operator's line of the liability and its breakage at the period's point
value; late events of every new kind as adjustments of the next open period."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from ledger import service as ledger
from members import service as members
from migrations.runner import alembic_config, upgrade
from settlement import service as settlement
from settlement.errors import InvalidPeriod
from tests.settlement.helpers import bonus, coalition, earn, redeem, reward

FEB = datetime(2024, 2, 1, tzinfo=UTC)
MAR = datetime(2024, 3, 1, tzinfo=UTC)
APR = datetime(2024, 4, 1, tzinfo=UTC)
MAY = datetime(2024, 5, 1, tzinfo=UTC)
D = Decimal
POINT = D("0.85")  # not the default: the period's own value is what counts


async def _run(engine, start, end):
    async with engine.begin() as conn:
        return await settlement.run(
            conn,
            currency="RUB",
            point_value=POINT,
            period_start=start,
            period_end=end,
            actor="operator",
        )


async def test_operator_points_are_charged_to_no_partner_and_reimbursed_where_accepted(
    sengine,
) -> None:
    (a, r), (m, friend) = await coalition(
        sengine, prices=[("0.015", "0.01"), ("0.018", "0.0125")], effective_from=FEB
    )
    async with sengine.begin() as conn:
        n = (await members.create(conn, email="n@example.com", name="N")).id
    # A sign-up bonus of February lasting a month: it expires in March, the operator's breakage.
    await bonus(sengine, n, None, 40, FEB + timedelta(days=9), reason="signup", validity_months=1)
    await bonus(sengine, m, None, 100, MAR + timedelta(days=1), reason="signup")
    await bonus(sengine, m, None, 50, MAR + timedelta(days=2), reason="referral")
    await bonus(sengine, friend, None, 50, MAR + timedelta(days=2), reason="referral")
    await earn(sengine, friend, a, 200, MAR + timedelta(days=3))
    # m pays 120 at R: all of them the operator's (100 sign-up, 20 referral).
    await redeem(sengine, m, r, 120, MAR + timedelta(days=5))
    # The friend takes a reward of R: its 50 referral points, then 30 of A's.
    await reward(sengine, friend, r, 80, MAR + timedelta(days=6))
    period = await _run(sengine, MAR, APR)

    async with sengine.connect() as conn:
        st = {s.partner_id: s for s in await settlement.statements(conn, period_id=period.id)}
        cells = await settlement.matrix(conn, period_id=period.id)
        r_view = await settlement.matrix(conn, period_id=period.id, partner_id=r)
        a_view = await settlement.matrix(conn, period_id=period.id, partner_id=a)
    assert set(st) == {a, r}  # no statement for the operator
    assert (st[a].issued_points, st[a].issuance_charge.amount) == (200, D("3.00"))
    assert sum(s.issued_points for s in st.values()) == 200  # no partner issued the bonuses
    # R accepted 200 points, 170 of them the operator's: reimbursed all at 0.0125.
    assert (st[r].redeemed_points, st[r].reimbursement.amount, st[r].net.amount) == (
        200,
        D("2.50"),
        D("2.50"),
    )
    assert (st[r].issued_points, st[r].issuance_charge.amount, st[r].unpriced_events) == (
        0,
        D(0),
        0,
    )
    assert period.operator_margin.amount == D("0.50")  # 3.00 - 2.50
    assert period.operator_issued_points == 200
    assert period.point_value == POINT
    assert {(c.issuer_id, c.redeemer_id): (c.points, c.value.amount) for c in cells} == {
        (None, r): (170, D("2.12")),  # 170 x 0.0125 = 2.125, half-even
        (a, r): (30, D("0.38")),  # 30 x 0.0125 = 0.375
    }
    assert {c.issuer_id for c in r_view} == {None, a}  # R sees its column, the operator's cell too
    assert [(c.issuer_id, c.redeemer_id) for c in a_view] == [(a, r)]

    # The liability now: the operator's line (30 left of m's referral) at the point value.
    async with sengine.connect() as conn:
        now = await settlement.liability(
            conn, currency="RUB", point_value=POINT, at=MAR + timedelta(days=7)
        )
        only_a = await settlement.liability(
            conn, currency="RUB", point_value=POINT, at=MAR + timedelta(days=7), partner_id=a
        )
    assert [(x.issuer_id, x.points, x.issue_price, x.value.amount) for x in now] == [
        (a, 170, D("0.015"), D("2.55")),
        (None, 70, POINT, D("59.50")),  # 30 of m's + n's 40, not expired yet on March 8th
    ]
    assert [x.issuer_id for x in only_a] == [a]

    # The close sweeps n's expired sign-up points: the operator's breakage, on no statement.
    closed = await settlement.expire_and_close(sengine, period_id=period.id, actor="operator")
    async with sengine.connect() as conn:
        after = {s.partner_id: s for s in await settlement.statements(conn, period_id=closed.id)}
        history = await settlement.liability_history(conn)
        seal = await settlement.seal_text(conn, period_id=closed.id)
        assert (await settlement.verify(conn, period_id=closed.id)).ok
    assert all(s.breakage_points == 0 for s in after.values()) and set(after) == {a, r}
    assert (closed.operator_breakage_points, closed.operator_breakage_value.amount) == (
        40,
        D("34.00"),  # 40 x 0.85
    )
    assert (closed.breakage_points, closed.breakage_value.amount) == (40, D("34.00"))
    assert closed.unpriced_events == 0
    (snap,) = [h for h in history if h.period_id == closed.id]
    assert [(x.issuer_id, x.points, x.issue_price, x.value.amount) for x in snap.lines] == [
        (a, 170, D("0.015"), D("2.55")),
        (None, 30, POINT, D("25.50")),
    ]
    assert snap.total_value.amount == D("28.05")
    assert "\noperator 200 40 34.00 0.85000000\n" in seal
    assert f"\nmatrix operator {r} 170 2.12\n" in seal
    assert "\nliability operator 30 25.50 0.85000000 " in seal


async def test_late_rewards_bonuses_and_operator_expiry_adjust_the_next_open_period(
    sengine,
) -> None:
    (a, r), (m, _) = await coalition(
        sengine, prices=[("0.015", "0.01"), ("0.018", "0.0125")], effective_from=FEB
    )
    await earn(sengine, m, a, 500, MAR + timedelta(days=1))
    march = await _run(sengine, MAR, APR)
    april = await _run(sengine, APR, MAY)
    march = await settlement.expire_and_close(sengine, period_id=march.id, actor="operator")
    async with sengine.connect() as conn:
        sealed = await settlement.seal_text(conn, period_id=march.id)

    # Effective in March, recorded after its close.
    late_reward = await reward(sengine, m, r, 100, MAR + timedelta(days=20), ref="gift-9")
    late_bonus = await bonus(sengine, m, a, 40, MAR + timedelta(days=21), ref="review-9")
    await bonus(sengine, m, None, 30, MAR + timedelta(days=22), reason="referral")
    # Operator points of February (a range no period covers) expiring in March, swept late.
    await bonus(sengine, m, None, 20, FEB + timedelta(days=14), reason="signup", validity_months=1)
    expiry = await ledger.expire_points(sengine, at=MAR + timedelta(days=20))
    assert expiry.points == 20
    async with sengine.connect() as conn:
        (late_expiry,) = (
            await conn.execute(
                text("SELECT id FROM transactions WHERE kind = 'expiry' AND recorded_at > :c"),
                {"c": march.closed_at},
            )
        ).scalars()

    again = await _run(sengine, APR, MAY)
    async with sengine.connect() as conn:
        adj = await settlement.adjustments(conn, period_id=april.id)
        st = {s.partner_id: s for s in await settlement.statements(conn, period_id=april.id)}
        cells = await settlement.matrix(conn, period_id=april.id)
    assert [(x.transaction_id, x.partner_id, x.kind, x.points, x.amount.amount) for x in adj] == [
        (late_reward, r, "reward", 100, D("1.25000000")),  # 100 x 0.0125, paid to R
        (late_expiry, None, "expiry", 20, D("17.00000000")),  # the operator's, 20 x 0.85
        (late_bonus, a, "bonus", 40, D("-0.60000000")),  # 40 x 0.015, owed by A
    ]
    assert {x.adjusts_period_id for x in adj} == {march.id}
    assert (st[r].redeemed_points, st[r].reimbursement.amount, st[r].adjustment_count) == (
        100,
        D("1.25"),
        1,
    )
    assert st[r].adjustment_net.amount == D("1.25")
    assert (st[a].issued_points, st[a].issuance_charge.amount, st[a].adjustment_net.amount) == (
        40,
        D("0.60"),
        D("-0.60"),
    )
    assert st[a].breakage_points == 0 and set(st) == {a, r}
    assert {(c.issuer_id, c.redeemer_id): c.points for c in cells} == {(a, r): 100}
    assert (again.operator_issued_points, again.operator_breakage_points) == (30, 20)
    assert again.operator_breakage_value.amount == D("17.00")
    assert again.adjustment_count == 3 and again.transaction_count == 4

    # Running again changes nothing; closing seals the operator's adjustment with the rest.
    async with sengine.begin() as conn:
        rerun = await settlement.run_period(conn, period_id=april.id, actor="operator")
        assert replace(rerun, run_at=None) == replace(again, run_at=None)
        assert await settlement.adjustments(conn, period_id=april.id) == adj
        assert await settlement.statements(conn, period_id=april.id) == list(st.values())
        assert await settlement.matrix(conn, period_id=april.id) == cells
    april = await settlement.expire_and_close(sengine, period_id=april.id, actor="operator")
    async with sengine.connect() as conn:
        assert (await settlement.verify(conn, period_id=april.id)).ok
        assert (await settlement.verify(conn, period_id=march.id)).ok
        assert await settlement.seal_text(conn, period_id=march.id) == sealed
        text_ = await settlement.seal_text(conn, period_id=april.id)
    assert f"\nadjustment {late_expiry} operator {march.id} expiry 20 " in text_


async def test_one_operator_cell_per_period_and_redeemer(sengine) -> None:
    (r,), _ = await coalition(sengine, prices=[("0.018", "0.0125")], effective_from=FEB)
    period = await _run(sengine, MAR, APR)
    insert = text(
        "INSERT INTO settlement_matrix (period_id, issuer_id, redeemer_id, points, value) "
        "VALUES (:p, NULL, :r, 1, 1)"
    )
    async with sengine.begin() as conn:
        await conn.execute(insert, {"p": period.id, "r": r})
    with pytest.raises(IntegrityError, match="uq_settlement_matrix_key"):
        async with sengine.begin() as conn:
            await conn.execute(insert, {"p": period.id, "r": r})
    liability = text(
        "INSERT INTO settlement_liability (period_id, issuer_id, points, value, as_of) "
        "VALUES (:p, NULL, 1, 1, now())"
    )
    async with sengine.begin() as conn:
        await conn.execute(liability, {"p": period.id})
    with pytest.raises(IntegrityError, match="uq_settlement_liability_key"):
        async with sengine.begin() as conn:
            await conn.execute(liability, {"p": period.id})


async def test_the_0013_downgrade_refuses_while_the_operator_is_named(settle_db, sengine) -> None:
    (r,), (m, _) = await coalition(sengine, prices=[("0.018", "0.0125")], effective_from=FEB)
    await bonus(sengine, m, None, 100, MAR + timedelta(days=1), reason="signup")
    await redeem(sengine, m, r, 60, MAR + timedelta(days=2))
    period = await _run(sengine, MAR, APR)
    await sengine.dispose()
    with pytest.raises(DBAPIError, match="settlement rows name the operator"):
        await asyncio.to_thread(command.downgrade, alembic_config(settle_db), "0012")

    async with sengine.begin() as conn:  # the open period's contents go; a rerun restores them
        await conn.execute(
            text("DELETE FROM settlement_matrix WHERE period_id = :p"), {"p": period.id}
        )
    await sengine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(settle_db), "0012")
    async with sengine.connect() as conn:
        keys = (
            await conn.execute(
                text(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = 'settlement_matrix'::regclass AND i.indisprimary "
                    "ORDER BY a.attname"
                )
            )
        ).scalars()
        assert list(keys) == ["issuer_id", "period_id", "redeemer_id"]
    await sengine.dispose()
    await asyncio.to_thread(upgrade, settle_db)
    again = await _run(sengine, MAR, APR)
    async with sengine.connect() as conn:
        cells = await settlement.matrix(conn, period_id=again.id)
    assert [(c.issuer_id, c.redeemer_id, c.points) for c in cells] == [(None, r, 60)]
    assert again.point_value == D("1.00")  # the period came back from the downgrade as it was


async def test_the_seal_covers_the_operators_points(sengine) -> None:
    (r,), (m, _) = await coalition(sengine, prices=[("0.018", "0.0125")], effective_from=FEB)
    await bonus(sengine, m, None, 100, MAR + timedelta(days=1), reason="signup")
    await bonus(sengine, m, None, 40, FEB + timedelta(days=9), reason="signup", validity_months=1)
    await reward(sengine, m, r, 60, MAR + timedelta(days=12))
    period = await settlement.expire_and_close(
        sengine, period_id=(await _run(sengine, MAR, APR)).id, actor="operator"
    )
    assert (period.operator_issued_points, period.operator_breakage_points) == (100, 40)
    for tampering in (
        "UPDATE settlement_periods SET operator_issued_points = 0 WHERE id = :p",
        "UPDATE settlement_periods SET operator_breakage_value = 0 WHERE id = :p",
        "UPDATE settlement_matrix SET points = 59 WHERE period_id = :p AND issuer_id IS NULL",
    ):
        async with sengine.connect() as conn:
            tx = await conn.begin()
            for table in ("settlement_periods", "settlement_matrix"):
                await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            await conn.execute(text(tampering), {"p": period.id})
            check = await settlement.verify(conn, period_id=period.id)
            await tx.rollback()
        assert (check.hash_matches, check.ledger_matches) == (False, False), tampering
    async with sengine.connect() as conn:
        assert (await settlement.verify(conn, period_id=period.id)).ok


async def test_a_period_needs_a_positive_point_value(sengine) -> None:
    for bad in (D(0), D("-1"), D("NaN")):
        async with sengine.begin() as conn:
            with pytest.raises(InvalidPeriod, match="point value"):
                await settlement.run(
                    conn,
                    currency="RUB",
                    point_value=bad,
                    period_start=MAR,
                    period_end=APR,
                    actor="operator",
                )
