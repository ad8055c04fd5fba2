"""Reward spends: the points taken at once from available lots, earliest expiry first, to the
delivering partner's redemption account, with `capture` lot postings."""

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
    PartnerNotFound,
)
from members import service as members
from partners import service as partners
from tests.conftest import StatementCounter
from tests.ledger.invariants import violations
from tests.ledger.test_bonuses import bonus, legs
from tests.ledger.test_validation import refused


def spend(member_id: uuid.UUID, partner_id: uuid.UUID, **kw: Any) -> ledger.RewardSpendRequest:
    fields: dict[str, Any] = {
        "actor": "app",
        "key_space": ledger.member_key_space(member_id),
        "idempotency_key": f"r-{uuid.uuid4()}",
        "digest": "d1",
        "member_id": member_id,
        "partner_id": partner_id,
        "points": 100,
        "ref": "reward:1",
        **kw,
    }
    return ledger.RewardSpendRequest(**fields)


async def remaining(conn: AsyncConnection, member_id: uuid.UUID) -> list[int]:
    rows = await conn.execute(
        text("SELECT remaining FROM lots WHERE member_id = :m ORDER BY id"), {"m": member_id}
    )
    return [int(r) for r in rows.scalars()]


async def test_a_reward_takes_available_points_earliest_expiry_first(
    conn: AsyncConnection,
) -> None:
    p = await partners.create(conn, name="P", category="shop", currency="RUB")
    shop = await partners.create(conn, name="Shop", category="shop", currency="RUB")
    m = await members.create(conn, name="M")
    t0 = utcnow()

    async def earn(points: int, **kw: Any) -> None:
        await ledger.earn(
            conn,
            actor="p",
            idempotency_key=f"e-{uuid.uuid4()}",
            member_id=m.id,
            partner_id=p.id,
            points=points,
            **kw,
        )

    await earn(100, at=t0 - timedelta(days=2), validity_months=24)  # lot 1: expires last
    await earn(50, at=t0 - timedelta(days=1), validity_months=12)  # lot 2: expires first
    await earn(70, at=t0, hold_days=14)  # lot 3: pending, not spendable
    await ledger.award_bonus(conn, bonus(m.id, None, points=30, at=t0, validity_months=18))
    r = await ledger.redeem_reward_points(conn, spend(m.id, shop.id, points=120, at=t0))
    assert (r.points, r.partner_id, r.member_id, r.replayed) == (120, shop.id, m.id, False)
    # lot 2 (50) then the bonus (30) then 40 of lot 1; the pending lot untouched.
    assert await remaining(conn, m.id) == [60, 0, 70, 0]
    assert await legs(conn, r.transaction_id) == {
        ("wallet", m.id): -120,
        ("redemption", shop.id): 120,
    }
    postings = await conn.execute(
        text("SELECT kind, sum(points) FROM lot_postings WHERE transaction_id = :t GROUP BY kind"),
        {"t": r.transaction_id},
    )
    assert dict(postings.all()) == {"capture": -120}
    tx = (
        await conn.execute(
            text(
                "SELECT kind, partner_id, member_id, ref, points, hold_id FROM transactions "
                "WHERE id = :t"
            ),
            {"t": r.transaction_id},
        )
    ).one()
    assert tuple(tx) == ("reward", shop.id, m.id, "reward:1", 120, None)
    b = await ledger.balance(conn, member_id=m.id, at=t0)
    assert (b.wallet, b.available, b.pending, b.on_hold) == (130, 60, 70, 0)
    (item, *_) = await ledger.history(conn, member_id=m.id)
    assert (item.kind, item.amount, item.partner_id, item.ref) == (
        "reward",
        -120,
        shop.id,
        "reward:1",
    )
    assert not await violations(conn)


async def test_a_reward_replays_and_conflicts_under_its_key(conn: AsyncConnection) -> None:
    shop = await partners.create(conn, name="Shop", category="shop", currency="RUB")
    m = await members.create(conn, name="M")
    await ledger.award_bonus(conn, bonus(m.id, None, points=100))
    req = spend(m.id, shop.id, points=60)
    first = await ledger.redeem_reward_points(conn, req)
    again = await ledger.redeem_reward_points(conn, req)
    assert again.replayed and again.transaction_id == first.transaction_id and again.points == 60
    with pytest.raises(IdempotencyConflict):
        await ledger.redeem_reward_points(
            conn, spend(m.id, shop.id, points=60, idempotency_key=req.idempotency_key, digest="x")
        )
    assert (await ledger.balance(conn, member_id=m.id)).available == 40


async def test_a_reward_counts_expired_stale_holds_back_and_skips_expired_lots(
    conn: AsyncConnection,
) -> None:
    shop = await partners.create(conn, name="Shop", category="shop", currency="RUB")
    m = await members.create(conn, name="M")
    t0 = utcnow()
    await ledger.award_bonus(
        conn, bonus(m.id, None, points=50, at=t0 - timedelta(days=40), validity_months=1)
    )  # expired, not yet swept
    await ledger.award_bonus(conn, bonus(m.id, None, points=80, at=t0 - timedelta(hours=2)))
    await ledger.authorize(
        conn,
        actor="s",
        idempotency_key="a",
        member_id=m.id,
        partner_id=shop.id,
        points=80,
        at=t0 - timedelta(hours=1),
    )  # its 30 minutes ran out: released by the spend
    with pytest.raises(InsufficientPoints):
        sp = await conn.begin_nested()
        try:
            await ledger.redeem_reward_points(conn, spend(m.id, shop.id, points=81, at=t0))
        finally:
            await sp.rollback()
    r = await ledger.redeem_reward_points(conn, spend(m.id, shop.id, points=80, at=t0))
    assert r.points == 80
    assert await remaining(conn, m.id) == [50, 0]
    assert not await violations(conn)


@pytest.mark.parametrize(
    ("change", "error", "code", "sql"),
    [
        ({"points": 0}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"points": ledger.MAX_POINTS + 1}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"ref": "r\x00"}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"idempotency_key": "k" * 201}, LedgerValidation, ErrorCode.VALIDATION, False),
        ({"points": 101}, InsufficientPoints, ErrorCode.INSUFFICIENT_POINTS, True),
        ({"member_id": uuid.uuid4()}, MemberNotFound, ErrorCode.MEMBER_NOT_FOUND, True),
        ({"partner_id": uuid.uuid4()}, PartnerNotFound, ErrorCode.PARTNER_NOT_FOUND, True),
    ],
)
async def test_a_refused_reward_changes_nothing(
    conn: AsyncConnection,
    count_statements: StatementCounter,
    change: dict[str, Any],
    error: type[Exception],
    code: ErrorCode,
    sql: bool,
) -> None:
    shop = await partners.create(conn, name="Shop", category="shop", currency="RUB")
    m = await members.create(conn, name="M")
    await ledger.award_bonus(conn, bonus(m.id, None, points=100, at=utcnow() - timedelta(hours=1)))
    fields: dict[str, Any] = {"member_id": m.id, "partner_id": shop.id, **change}
    request = spend(**fields)
    info = await refused(
        conn,
        count_statements,
        error,
        code,
        lambda: ledger.redeem_reward_points(conn, request),
        sql=sql,
    )
    if error is InsufficientPoints:
        assert info.details == {"available": 100}
