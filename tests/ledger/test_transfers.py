"""Transfers between members: the receiver's lots carry the issuer, dates and original earn of
the sender's lots given (FIFO); the daily limit; debts; errors that change nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.errors import ErrorCode
from ledger import service as ledger
from ledger.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    LedgerValidation,
    MemberNotFound,
    TransferLimitExceeded,
)
from members import service as members
from partners import service as partners
from tests.conftest import StatementCounter
from tests.ledger.invariants import violations
from tests.ledger.test_bonuses import bonus, legs
from tests.ledger.test_validation import refused


def transfer(
    from_member_id: uuid.UUID, to_member_id: uuid.UUID, **kw: Any
) -> ledger.TransferRequest:
    fields: dict[str, Any] = {
        "actor": "app",
        "key_space": ledger.member_key_space(from_member_id),
        "idempotency_key": f"t-{uuid.uuid4()}",
        "digest": "d1",
        "from_member_id": from_member_id,
        "to_member_id": to_member_id,
        "points": 100,
        "daily_limit": None,
        **kw,
    }
    return ledger.TransferRequest(**fields)


async def lots_of(conn: AsyncConnection, member_id: uuid.UUID) -> list[Any]:
    rows = await conn.execute(
        text(
            "SELECT id, issuer_id, points, remaining, earned_at, available_at, expires_at, "
            "earn_tx_id, origin_lot_id, transfer_tx_id FROM lots WHERE member_id = :m ORDER BY id"
        ),
        {"m": member_id},
    )
    return list(rows)


async def test_a_transfer_gives_the_receiver_lots_carrying_issuer_and_dates(
    conn: AsyncConnection,
) -> None:
    p = await partners.create(conn, name="P", category="shop", currency="RUB")
    a, b = await members.create(conn, name="A"), await members.create(conn, name="B")
    t0 = utcnow()
    e = await ledger.earn(
        conn,
        actor="p",
        idempotency_key="e1",
        member_id=a.id,
        partner_id=p.id,
        points=100,
        at=t0 - timedelta(days=3),
        validity_months=24,
    )
    op = await ledger.award_bonus(
        conn, bonus(a.id, None, points=40, at=t0 - timedelta(days=2), validity_months=6)
    )
    await ledger.earn(  # pending: not transferable
        conn,
        actor="p",
        idempotency_key="e2",
        member_id=a.id,
        partner_id=p.id,
        points=500,
        at=t0,
        hold_days=14,
    )
    r = await ledger.transfer_points(conn, transfer(a.id, b.id, points=70, at=t0))
    assert (r.from_member_id, r.to_member_id, r.points, r.debt_repaid, r.replayed) == (
        a.id,
        b.id,
        70,
        0,
        False,
    )
    sender = await lots_of(conn, a.id)
    assert [x.remaining for x in sender] == [70, 0, 500]  # the bonus expires first
    given = sorted(await lots_of(conn, b.id), key=lambda x: x.expires_at)
    assert len(given) == 2
    bon, ern = given
    assert (bon.issuer_id, bon.points, bon.remaining, bon.earn_tx_id) == (
        None,
        40,
        40,
        op.transaction_id,
    )
    assert (bon.earned_at, bon.available_at, bon.expires_at) == (
        sender[1].earned_at,
        sender[1].available_at,
        sender[1].expires_at,
    )
    assert (bon.origin_lot_id, bon.transfer_tx_id) == (sender[1].id, r.transaction_id)
    assert (ern.issuer_id, ern.points, ern.remaining, ern.earn_tx_id) == (
        p.id,
        30,
        30,
        e.transaction_id,
    )
    assert ern.expires_at == sender[0].expires_at and ern.origin_lot_id == sender[0].id
    assert await legs(conn, r.transaction_id) == {("wallet", a.id): -70, ("wallet", b.id): 70}
    postings = await conn.execute(
        text(
            "SELECT lot_id, points FROM lot_postings WHERE transaction_id = :t AND kind = 'transfer'"
        ),
        {"t": r.transaction_id},
    )
    assert dict(postings.all()) == {sender[0].id: -30, sender[1].id: -40, ern.id: 30, bon.id: 40}
    ba = await ledger.balance(conn, member_id=a.id, at=t0)
    bb = await ledger.balance(conn, member_id=b.id, at=t0)
    assert (ba.available, ba.pending, bb.wallet, bb.available) == (70, 500, 70, 70)
    out = (await ledger.history(conn, member_id=a.id))[0]
    inn = (await ledger.history(conn, member_id=b.id))[0]
    assert (out.kind, out.amount, out.counterparty_id) == ("transfer_out", -70, b.id)
    assert (inn.kind, inn.amount, inn.counterparty_id) == ("transfer_in", 70, a.id)
    # No partner account moved: the issuance of p is still its earns.
    assert await ledger.account_balance(conn, kind="issuance", owner_id=p.id) == -600
    assert not await violations(conn)


async def test_transferred_points_travel_on_and_can_be_spent(conn: AsyncConnection) -> None:
    p = await partners.create(conn, name="P", category="shop", currency="RUB")
    shop = await partners.create(conn, name="Shop", category="shop", currency="RUB")
    a, b, c = [await members.create(conn, name=n) for n in "ABC"]
    e = await ledger.earn(
        conn, actor="p", idempotency_key="e1", member_id=a.id, partner_id=p.id, points=100
    )
    await ledger.transfer_points(conn, transfer(a.id, b.id, points=60))
    await ledger.transfer_points(conn, transfer(b.id, c.id, points=25))
    await ledger.transfer_points(conn, transfer(c.id, a.id, points=5))
    (lot_c,) = await lots_of(conn, c.id)
    assert (lot_c.issuer_id, lot_c.earn_tx_id, lot_c.points, lot_c.remaining) == (
        p.id,
        e.transaction_id,
        25,
        20,
    )
    lots_a = await lots_of(conn, a.id)
    assert [(x.earn_tx_id, x.remaining) for x in lots_a] == [
        (e.transaction_id, 40),
        (e.transaction_id, 5),
    ]
    h = await ledger.authorize(
        conn, actor="s", idempotency_key="h", member_id=b.id, partner_id=shop.id, points=35
    )
    await ledger.capture(
        conn, actor="s", idempotency_key="c", partner_id=shop.id, hold_id=h.hold_id, points=35
    )
    # The reversal of the earn still finds its own lot (not the transferred ones).
    rv = await ledger.reverse_earn(
        conn,
        actor="p",
        idempotency_key="v",
        partner_id=p.id,
        earn_transaction_id=e.transaction_id,
        points=45,
    )
    assert (rv.from_wallet, rv.to_debt) == (45, 0)
    assert [x.remaining for x in await lots_of(conn, a.id)] == [0, 0]
    assert not await violations(conn)


async def test_a_transfer_repays_the_receivers_debt_first(conn: AsyncConnection) -> None:
    p = await partners.create(conn, name="P", category="shop", currency="RUB")
    shop = await partners.create(conn, name="Shop", category="shop", currency="RUB")
    a, b = await members.create(conn, name="A"), await members.create(conn, name="B")
    t0 = utcnow()
    e = await ledger.earn(
        conn, actor="p", idempotency_key="e", member_id=b.id, partner_id=p.id, points=50, at=t0
    )
    rw = await ledger.redeem_reward_points(
        conn,
        ledger.RewardSpendRequest(
            actor="s",
            key_space="s",
            idempotency_key="r",
            digest="d",
            member_id=b.id,
            partner_id=shop.id,
            points=50,
            ref="reward:x",
            at=t0,
        ),
    )
    assert rw.points == 50
    await ledger.reverse_earn(
        conn,
        actor="p",
        idempotency_key="v",
        partner_id=p.id,
        earn_transaction_id=e.transaction_id,
        points=50,
        at=t0,
    )
    assert (await ledger.balance(conn, member_id=b.id, at=t0)).debt == 50
    await ledger.award_bonus(conn, bonus(a.id, None, points=30, at=t0, validity_months=3))
    await ledger.award_bonus(conn, bonus(a.id, p.id, points=100, at=t0, validity_months=9))
    r = await ledger.transfer_points(conn, transfer(a.id, b.id, points=80, at=t0))
    assert r.debt_repaid == 50
    assert await legs(conn, r.transaction_id) == {
        ("wallet", a.id): -80,
        ("wallet", b.id): 30,
        ("debt", b.id): 50,
    }
    # The first 50 taken (30 of the operator's, 20 of p's) repaid the debt; b gets 30 of p's.
    received = [x for x in await lots_of(conn, b.id) if x.transfer_tx_id is not None]
    assert [(x.issuer_id, x.points) for x in received] == [(p.id, 30)]
    bb = await ledger.balance(conn, member_id=b.id, at=t0)
    assert (bb.wallet, bb.debt, bb.available) == (30, 0, 30)
    assert not await violations(conn)


async def test_the_daily_limit_counts_the_senders_last_24_hours(conn: AsyncConnection) -> None:
    a, b, c = [await members.create(conn, name=n) for n in "ABC"]
    t0 = utcnow()
    await ledger.award_bonus(conn, bonus(a.id, None, points=1000, at=t0 - timedelta(days=2)))
    await ledger.award_bonus(conn, bonus(b.id, None, points=1000, at=t0 - timedelta(days=2)))
    await ledger.transfer_points(
        conn, transfer(a.id, b.id, points=300, daily_limit=500, at=t0 - timedelta(hours=25))
    )
    await ledger.transfer_points(
        conn, transfer(a.id, b.id, points=200, daily_limit=500, at=t0 - timedelta(hours=23))
    )
    await ledger.transfer_points(conn, transfer(a.id, c.id, points=250, daily_limit=500, at=t0))
    await ledger.transfer_points(conn, transfer(b.id, a.id, points=500, daily_limit=500, at=t0))
    sp = await conn.begin_nested()
    with pytest.raises(TransferLimitExceeded) as info:
        await ledger.transfer_points(conn, transfer(a.id, c.id, points=51, daily_limit=500, at=t0))
    await sp.rollback()
    assert info.value.code == ErrorCode.LIMIT_EXCEEDED
    assert info.value.details == {"limit": 500, "used": 450}
    r = await ledger.transfer_points(conn, transfer(a.id, c.id, points=50, daily_limit=500, at=t0))
    assert r.points == 50
    # A transfer dated before one already written (it read the clock first, the lock later)
    # counts that one too.
    await ledger.transfer_points(
        conn, transfer(c.id, a.id, points=10, daily_limit=10, at=t0 + timedelta(minutes=1))
    )
    sp = await conn.begin_nested()
    with pytest.raises(TransferLimitExceeded) as info:
        await ledger.transfer_points(conn, transfer(c.id, b.id, points=1, daily_limit=10, at=t0))
    await sp.rollback()
    assert info.value.details == {"limit": 10, "used": 10}
    # Without a limit, nothing is counted.
    await ledger.transfer_points(conn, transfer(a.id, c.id, points=100, at=t0))


async def test_a_transfer_replays_and_conflicts_under_its_key(conn: AsyncConnection) -> None:
    a, b = await members.create(conn, name="A"), await members.create(conn, name="B")
    await ledger.award_bonus(conn, bonus(a.id, None, points=100))
    req = transfer(a.id, b.id, points=60, daily_limit=60)
    first = await ledger.transfer_points(conn, req)
    again = await ledger.transfer_points(conn, req)  # not refused by the limit: a replay
    assert again.replayed and again.transaction_id == first.transaction_id
    assert (again.from_member_id, again.to_member_id, again.points) == (a.id, b.id, 60)
    with pytest.raises(IdempotencyConflict):
        await ledger.transfer_points(
            conn, transfer(a.id, b.id, points=61, idempotency_key=req.idempotency_key, digest="x")
        )
    assert (await ledger.balance(conn, member_id=b.id)).wallet == 60


@pytest.mark.parametrize(
    ("change", "error", "code", "sql"),
    [
        ({"to_member_id": "self"}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"points": 0}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"points": -1}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"points": ledger.MAX_POINTS + 1}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"points": True}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"daily_limit": -1}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"idempotency_key": "\x00"}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"from_member_id": "unknown"}, MemberNotFound, ErrorCode.MEMBER_NOT_FOUND, True),
        ({"to_member_id": "unknown"}, MemberNotFound, ErrorCode.MEMBER_NOT_FOUND, True),
        ({"points": 101}, InsufficientPoints, ErrorCode.INSUFFICIENT_POINTS, True),
        ({"daily_limit": 99}, TransferLimitExceeded, ErrorCode.LIMIT_EXCEEDED, True),
    ],
)
async def test_a_refused_transfer_changes_nothing(
    conn: AsyncConnection,
    count_statements: StatementCounter,
    change: dict[str, Any],
    error: type[Exception],
    code: ErrorCode,
    sql: bool,
) -> None:
    a, b = await members.create(conn, name="A"), await members.create(conn, name="B")
    await ledger.award_bonus(conn, bonus(a.id, None, points=100, at=utcnow() - timedelta(hours=1)))
    await ledger.award_bonus(conn, bonus(b.id, None, points=10, at=utcnow() - timedelta(hours=1)))
    fields: dict[str, Any] = {"from_member_id": a.id, "to_member_id": b.id, **change}
    for name, value in change.items():
        if value == "self":
            fields[name] = a.id
        elif value == "unknown":
            fields[name] = uuid.uuid4()
    request = transfer(**fields)
    await refused(
        conn,
        count_statements,
        error,
        code,
        lambda: ledger.transfer_points(conn, request),
        sql=sql,
    )
