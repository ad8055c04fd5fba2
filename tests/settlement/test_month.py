"""A generated month of coalition activity through the real ledger, settled, and checked against
an independent recomputation over the requests the test made (tests/settlement/model.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from core.money import quantize
from members import service as members
from partners import service as partners
from settlement import service as settlement
from tests.settlement.world import World

START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 4, 1, tzinfo=UTC)
CUR = "RUB"
POINT = Decimal("0.9")  # the face value that values the operator's points


async def _setup(engine, n_members: int = 12):
    async with engine.begin() as conn:
        ps = [
            await partners.create(conn, name=name, category=cat, currency=CUR)
            for name, cat in [
                ("Fuel", "fuel"),
                ("Shop", "grocery"),
                ("Air", "travel"),
                ("Bank", "finance"),
            ]
        ]
        ms = [
            await members.create(conn, email=f"m{i}@example.com", name=f"M{i}")
            for i in range(n_members)
        ]
    return [p.id for p in ps], [m.id for m in ms]


async def generate_month(
    engine, *, seed: int = 20240301, ops: int = 420
) -> tuple[World, list, list]:
    """Several partners, agreements changing mid-period (one recorded before the events, one
    recorded after events it would otherwise cover, one retroactive), earns, partial and full
    captures, voids, refunds before and after redemptions, returns, bonuses of partners and of
    the operator, rewards, transfers between members, expiry inside the month (of partners'
    and of the operator's points)."""
    rng = random.Random(seed)
    w = World(engine, CUR, POINT)
    (fuel, shop, air, bank), mem = await _setup(engine)
    hold_days = {fuel: 0, shop: 0, air: 0, bank: 2}
    for p, (ip, rp) in zip(
        (fuel, shop, air, bank),
        [
            ("0.01234567", "0.00987654"),
            ("0.015", "0.01"),
            ("0.02000001", "0.01333333"),
            ("0.011", "0.0105"),
        ],
        strict=True,
    ):
        await w.agreement(p, ip, rp, START - timedelta(days=60))
    # Fuel: new prices from the middle of the month, known before any event is recorded.
    await w.agreement(fuel, "0.01777777", "0.01111119", START + timedelta(days=15))

    # Last month: points that expire inside this month (validity 1 month), and long-lived ones.
    earns: list[tuple] = []  # (earn tx, points, partner)
    for _ in range(16):
        at = START - timedelta(days=28) + timedelta(seconds=rng.randrange(26 * 86400))
        m, p = rng.choice(mem), rng.choice((fuel, shop, air, bank))
        pts = rng.randrange(50, 600)
        tx = await w.earn(m, p, pts, at, validity_months=1, hold_days=hold_days[p])
        earns.append((tx, pts, p))
    for issuer in (None, None, shop, air):  # bonuses of last month expiring in this one
        at = START - timedelta(days=27) + timedelta(seconds=rng.randrange(25 * 86400))
        pts = rng.randrange(20, 200) if issuer else rng.randrange(1500, 3000)  # not all spent
        await w.bonus(rng.choice(mem), issuer, pts, at, validity_months=1)
    for m in mem:
        p = rng.choice((fuel, shop, air))
        tx = await w.earn(
            m, p, rng.randrange(100, 900), START - timedelta(days=rng.randrange(2, 27))
        )
        earns.append((tx, 0, p))

    times = sorted(
        START + timedelta(seconds=rng.randrange(int((END - START).total_seconds()) - 3600))
        for _ in range(ops)
    )
    times[0] = START  # the first instant of the period belongs to it
    captured: list = []
    partner_ids = (fuel, shop, air, bank)
    expiry_days = [START + timedelta(days=8, hours=3), START + timedelta(days=19, hours=7)]
    for i, at in enumerate(times):
        if i == int(ops * 0.3):
            # Air: an agreement recorded now but effective from before the month: it prices the
            # events recorded from now on, never those already recorded.
            await w.agreement(air, "0.025", "0.0125", START - timedelta(days=30))
        if i == int(ops * 0.75):
            # Shop: effective from day 10, recorded late: events of days 10.. recorded before
            # this keep the old price.
            await w.agreement(shop, "0.0175", "0.0123", START + timedelta(days=10))
        while expiry_days and at >= expiry_days[0]:
            await w.expire(expiry_days.pop(0))
        roll = rng.random()
        m = rng.choice(mem)
        if roll < 0.30:
            p = rng.choice((fuel, shop, air, bank))
            tx = await w.earn(m, p, rng.randrange(1, 800), at, hold_days=hold_days[p])
            earns.append((tx, 0, p))
        elif roll < 0.55:
            avail = w.model.available(m, at)
            if avail == 0:
                continue
            pts = rng.randrange(1, avail + 1)
            r = rng.random()
            cap = None if r < 0.2 else (pts if r < 0.45 else rng.randrange(1, pts + 1))
            p = rng.choice((fuel, shop, air, bank))
            hold = await w.redeem(m, p, pts, cap, at)
            if cap is not None:
                captured.append(hold)
        elif roll < 0.61:
            avail = w.model.available(m, at)
            if avail:
                await w.reward(m, rng.choice(partner_ids), rng.randrange(1, avail + 1), at)
        elif roll < 0.67:
            issuer = rng.choice((fuel, shop, air, bank, None, None))
            await w.bonus(m, issuer, rng.randrange(1, 300), at)
        elif roll < 0.73:
            avail = w.model.available(m, at)
            if avail:
                to = rng.choice([x for x in mem if x != m])
                await w.transfer(m, to, rng.randrange(1, avail + 1), at)
        elif roll < 0.86:
            candidates = [
                x
                for x in w.model.lots
                if x.source == "earn" and x.reversed < x.points and x.earned_at <= at
            ]
            if not candidates:
                continue
            lot = rng.choice(candidates)
            left = lot.points - lot.reversed
            await w.reverse(
                lot.earn_tx, rng.randrange(1, left + 1) if rng.random() < 0.7 else left, at
            )
        else:
            open_holds = [
                h for h in captured if w.model.holds[h].captured > w.model.holds[h].returned
            ]
            if not open_holds:
                continue
            h = w.model.holds[rng.choice(open_holds)]
            left = h.captured - h.returned
            await w.return_points(h.id, rng.randrange(1, left + 1), at)
    # The last microsecond of the month is inside it; the first of the next is not.
    await w.earn(mem[0], fuel, 77, END - timedelta(microseconds=1))
    await w.earn(mem[1], shop, 55, END)
    return w, [fuel, shop, air, bank], mem


async def test_month_matches_independent_recomputation(sengine, monkeypatch) -> None:
    # Covered at the close by recording time (no per-transaction rows), as in production.
    monkeypatch.setattr(settlement, "LATE_MARGIN", timedelta(0))
    w, partner_ids, _ = await generate_month(sengine)
    async with sengine.begin() as conn:
        period = await settlement.run(
            conn,
            currency="RUB",
            point_value=POINT,
            period_start=START,
            period_end=END,
            actor="operator",
        )
    assert period.status == "open"
    # The close runs the expiry up to the period's end first: the model does the same.
    period = await settlement.expire_and_close(sengine, period_id=period.id, actor="operator")
    w.model_expire(END - timedelta(microseconds=1))
    assert period.status == "closed" and period.content_hash

    expected = w.model.statements(START, END, CUR)
    async with sengine.connect() as conn:
        got = {s.partner_id: s for s in await settlement.statements(conn, period_id=period.id)}
        cells = await settlement.matrix(conn, period_id=period.id)
        payments = await settlement.payment_instructions(conn, period_id=period.id)
        history = await settlement.liability_history(conn)
        count = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM transactions "
                    "WHERE effective_at >= :s AND effective_at < :e"
                ),
                {"s": START, "e": END},
            )
        ).scalar_one()

    assert set(got) == set(expected)
    for pid, e in expected.items():
        s = got[pid]
        assert (s.issued_points, s.reversed_points, s.redeemed_points, s.returned_points) == (
            e["issued"],
            e["reversed"],
            e["redeemed"],
            e["returned"],
        ), pid
        assert s.issuance_charge.amount == e["charge"], pid
        assert s.reimbursement.amount == e["reimbursement"], pid
        assert s.net.amount == e["net"], pid
        assert (s.breakage_points, s.breakage_value.amount) == (
            e["breakage_points"],
            e["breakage_value"],
        )
        assert s.unpriced_events == 0 and s.adjustment_count == 0
    # Every kind of event happened, and breakage too.
    assert all(
        sum(e[k] for e in expected.values()) > 0
        for k in ("issued", "reversed", "redeemed", "returned", "breakage_points")
    )
    in_month = [e for e in w.model.events if START <= e.at < END]
    kinds = {(e.kind, e.partner is None) for e in in_month}
    assert {("bonus", True), ("bonus", False), ("reward", False)} <= kinds
    assert sum(x.source == "transfer" for x in w.model.lots) > 10
    # The operator's own points: issued, expired, on no statement; in the period's totals.
    issued, expired, expired_value = w.model.operator(START, END, CUR)
    assert issued > 0 and expired > 0
    assert (
        period.operator_issued_points,
        period.operator_breakage_points,
        period.operator_breakage_value.amount,
    ) == (issued, expired, expired_value)
    assert period.breakage_points == expired + sum(e["breakage_points"] for e in expected.values())
    assert period.breakage_value.amount == expired_value + sum(
        e["breakage_value"] for e in expected.values()
    )
    assert period.transaction_count == count
    # The agreement changes mattered: Fuel's events carry both prices; Shop's events from day
    # 10 on carry the old price (recorded before the change was) and the new one.
    fuel, shop, air, _ = partner_ids
    assert {e.price for e in in_month if e.partner == fuel and e.kind == "earn"} == {
        Decimal("0.01234567"),
        Decimal("0.01777777"),
    }
    late_shop = {
        e.price
        for e in in_month
        if e.partner == shop and e.kind == "earn" and e.at >= START + timedelta(days=10)
    }
    assert late_shop == {Decimal("0.015"), Decimal("0.0175")}
    assert {e.price for e in in_month if e.partner == air and e.kind == "earn"} == {
        Decimal("0.02000001"),
        Decimal("0.025"),
    }

    # The operator's margin balances the partners' nets; the payment instructions too.
    assert sum(s.net.amount for s in got.values()) + period.operator_margin.amount == 0
    assert period.operator_margin.amount == -sum(e["net"] for e in expected.values())
    signed = sum(
        (i.amount.amount if i.payee == "partner" else -i.amount.amount)
        for i in payments.instructions
    )
    assert signed + payments.operator_margin.amount == 0
    assert len(payments.instructions) == len(got)

    # The matrix, cell by cell; its columns are what each partner accepted net of returns.
    expected_cells = w.model.matrix_cells(START, END, CUR)
    assert {
        (c.issuer_id, c.redeemer_id): (c.points, c.value.amount) for c in cells
    } == expected_cells
    for pid in partner_ids:
        column = sum(c.points for c in cells if c.redeemer_id == pid)
        st = got.get(pid)
        assert column == (st.redeemed_points - st.returned_points if st else 0)
        row = sum(c.points for c in cells if c.issuer_id == pid)
        assert row == sum(v[0] for k, v in expected_cells.items() if k[0] == pid)
    assert sum(c.points for c in cells) == sum(
        s.redeemed_points - s.returned_points for s in got.values()
    )
    assert any(c.issuer_id == c.redeemer_id for c in cells)  # the diagonal is there
    assert any(c.issuer_id is None for c in cells)  # the operator's points were accepted
    # The matrix values the redeemed points at the same prices as the reimbursements.
    for pid in partner_ids:
        exact = sum(
            (-e.points if e.kind == "return" else e.points) * e.price
            for e in w.model.events
            if e.partner == pid
            and e.kind in ("capture", "reward", "return")
            and START <= e.at < END
        )
        assert got[pid].reimbursement.amount == quantize(Decimal(exact), CUR)

    # Liability at the period end, by issuer, at the issue price in force then.
    outstanding = w.model.outstanding(END)
    snap = next(h for h in history if h.period_id == period.id)
    assert {x.issuer_id: x.points for x in snap.lines} == outstanding
    assert None in outstanding  # the operator's line, at the point value
    for x in snap.lines:
        price = POINT if x.issuer_id is None else w.model.price(x.issuer_id, END).issue
        assert x.issue_price == price
        assert x.value.amount == quantize(outstanding[x.issuer_id] * price, CUR)

    async with sengine.connect() as conn:
        assert (await settlement.verify(conn, period_id=period.id)).ok
