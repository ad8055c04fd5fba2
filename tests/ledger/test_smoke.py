from datetime import timedelta

from core.clock import utcnow
from ledger import service as ledger
from members import service as members
from partners import service as partners


async def test_earn_then_spend(conn):
    p = await partners.create(conn, name="A", category="fuel", currency="RUB")
    r = await partners.create(conn, name="B", category="shop", currency="RUB")
    m = await members.create(conn, email="a@example.com", name="A")
    t0 = utcnow()
    e = await ledger.earn(
        conn, actor="a", idempotency_key="k1", member_id=m.id, partner_id=p.id, points=100, at=t0
    )
    assert e.status == "available"
    again = await ledger.earn(
        conn, actor="a", idempotency_key="k1", member_id=m.id, partner_id=p.id, points=100, at=t0
    )
    assert again.replayed and again.transaction_id == e.transaction_id
    h = await ledger.authorize(
        conn, actor="b", idempotency_key="h1", member_id=m.id, partner_id=r.id, points=60, at=t0
    )
    b = await ledger.balance(conn, member_id=m.id, at=t0)
    assert (b.wallet, b.available, b.on_hold) == (100, 40, 60)
    c = await ledger.capture(
        conn, actor="b", idempotency_key="c1", partner_id=r.id, hold_id=h.hold_id, points=50, at=t0
    )
    assert c.released == 10
    b = await ledger.balance(conn, member_id=m.id, at=t0)
    assert (b.wallet, b.available, b.on_hold) == (50, 50, 0)
    rt = await ledger.return_points(
        conn, actor="b", idempotency_key="r1", partner_id=r.id, hold_id=h.hold_id, points=20, at=t0
    )
    assert rt.points == 20
    rv = await ledger.reverse_earn(
        conn,
        actor="a",
        idempotency_key="v1",
        partner_id=p.id,
        earn_transaction_id=e.transaction_id,
        points=100,
        at=t0,
    )
    assert (rv.from_wallet, rv.to_debt) == (70, 30)
    b = await ledger.balance(conn, member_id=m.id, at=t0)
    assert (b.wallet, b.debt) == (0, 30)
    e2 = await ledger.earn(
        conn,
        actor="a",
        idempotency_key="k2",
        member_id=m.id,
        partner_id=p.id,
        points=50,
        hold_days=14,
        at=t0,
    )
    assert e2.debt_repaid == 30 and e2.status == "pending"
    b = await ledger.balance(conn, member_id=m.id, at=t0)
    assert (b.wallet, b.debt, b.pending, b.available) == (20, 0, 20, 0)
    b = await ledger.balance(conn, member_id=m.id, at=t0 + timedelta(days=15))
    assert b.available == 20
