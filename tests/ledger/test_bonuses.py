"""Bonuses: a lot available at once, funded by the partner's issuance account or the operator's
promotions account; a debt is repaid first; idempotent under the request's key space."""

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
    LedgerValidation,
    MemberNotFound,
    PartnerNotFound,
    TransactionNotFound,
)
from members import service as members
from partners import service as partners
from tests.conftest import StatementCounter
from tests.ledger.invariants import violations
from tests.ledger.test_validation import refused


def bonus(member_id: uuid.UUID, issuer_id: uuid.UUID | None, **kw: Any) -> ledger.BonusRequest:
    fields: dict[str, Any] = {
        "actor": "op",
        "key_space": ledger.OPERATOR_KEY_SPACE,
        "idempotency_key": f"b-{uuid.uuid4()}",
        "digest": "d1",
        "member_id": member_id,
        "issuer_id": issuer_id,
        "points": 100,
        "reason": "signup",
        **kw,
    }
    return ledger.BonusRequest(**fields)


async def lots_of(conn: AsyncConnection, member_id: uuid.UUID) -> list[Any]:
    rows = await conn.execute(
        text(
            "SELECT issuer_id, points, remaining, earned_at, available_at, expires_at, earn_tx_id "
            "FROM lots WHERE member_id = :m ORDER BY id"
        ),
        {"m": member_id},
    )
    return list(rows)


async def legs(conn: AsyncConnection, tx: uuid.UUID) -> dict[tuple[str, uuid.UUID | None], int]:
    rows = await conn.execute(
        text(
            "SELECT a.kind, a.owner_id, e.amount FROM entries e "
            "JOIN accounts a ON a.id = e.account_id WHERE e.transaction_id = :t"
        ),
        {"t": tx},
    )
    return {(r.kind, r.owner_id): int(r.amount) for r in rows}


async def test_an_operator_bonus_is_a_lot_without_issuer_funded_by_promotions(
    conn: AsyncConnection,
) -> None:
    m = await members.create(conn, name="M")
    t0 = utcnow()
    before = await ledger.account_balance(conn, kind="promotions", owner_id=None)
    r = await ledger.award_bonus(conn, bonus(m.id, None, points=250, at=t0, validity_months=12))
    assert (r.points, r.issuer_id, r.member_id, r.replayed) == (250, None, m.id, False)
    assert r.expires_at == ledger.add_months(t0, 12) and r.debt_repaid == 0
    (lot,) = await lots_of(conn, m.id)
    assert lot.issuer_id is None and (lot.points, lot.remaining) == (250, 250)
    assert lot.earned_at == t0 == lot.available_at and lot.expires_at == ledger.add_months(t0, 12)
    assert lot.earn_tx_id == r.transaction_id
    assert await legs(conn, r.transaction_id) == {("promotions", None): -250, ("wallet", m.id): 250}
    assert await ledger.account_balance(conn, kind="promotions", owner_id=None) == before - 250
    tx = (
        await conn.execute(
            text(
                "SELECT kind, partner_id, member_id, category, points FROM transactions "
                "WHERE id = :t"
            ),
            {"t": r.transaction_id},
        )
    ).one()
    assert tuple(tx) == ("bonus", None, m.id, "signup", 250)
    b = await ledger.balance(conn, member_id=m.id, at=t0)
    assert (b.wallet, b.available, b.pending) == (250, 250, 0)
    assert not await violations(conn)


async def test_a_partner_bonus_is_issued_and_funded_by_the_partner(conn: AsyncConnection) -> None:
    p = await partners.create(conn, name="P", category="shop", currency="RUB")
    m = await members.create(conn, name="M")
    t0 = utcnow()
    r = await ledger.award_bonus(
        conn, bonus(m.id, p.id, points=40, reason="review", ref="R-1", at=t0)
    )
    assert r.issuer_id == p.id and r.expires_at == ledger.add_months(t0, 36)
    (lot,) = await lots_of(conn, m.id)
    assert lot.issuer_id == p.id and lot.remaining == 40
    assert await legs(conn, r.transaction_id) == {("issuance", p.id): -40, ("wallet", m.id): 40}
    assert await ledger.account_balance(conn, kind="issuance", owner_id=p.id) == -40
    (item,) = await ledger.history(conn, member_id=m.id)
    assert (item.kind, item.reason, item.amount, item.partner_id, item.ref) == (
        "bonus",
        "review",
        40,
        p.id,
        "R-1",
    )
    assert not await violations(conn)


async def test_a_bonus_repays_a_debt_first_as_an_earn_does(conn: AsyncConnection) -> None:
    p = await partners.create(conn, name="P", category="shop", currency="RUB")
    q = await partners.create(conn, name="Q", category="shop", currency="RUB")
    m = await members.create(conn, name="M")
    t0 = utcnow()
    e = await ledger.earn(
        conn, actor="p", idempotency_key="e", member_id=m.id, partner_id=p.id, points=100, at=t0
    )
    h = await ledger.authorize(
        conn, actor="q", idempotency_key="a", member_id=m.id, partner_id=q.id, points=100, at=t0
    )
    await ledger.capture(
        conn,
        actor="q",
        idempotency_key="c",
        partner_id=q.id,
        hold_id=h.hold_id,
        points=100,
        at=t0,
    )
    await ledger.reverse_earn(
        conn,
        actor="p",
        idempotency_key="v",
        partner_id=p.id,
        earn_transaction_id=e.transaction_id,
        points=100,
        at=t0,
    )
    assert (await ledger.balance(conn, member_id=m.id, at=t0)).debt == 100
    small = await ledger.award_bonus(conn, bonus(m.id, None, points=30, at=t0))
    assert small.debt_repaid == 30
    assert await legs(conn, small.transaction_id) == {("promotions", None): -30, ("debt", m.id): 30}
    big = await ledger.award_bonus(conn, bonus(m.id, p.id, points=100, at=t0))
    assert big.debt_repaid == 70
    assert await legs(conn, big.transaction_id) == {
        ("issuance", p.id): -100,
        ("wallet", m.id): 30,
        ("debt", m.id): 70,
    }
    b = await ledger.balance(conn, member_id=m.id, at=t0)
    assert (b.wallet, b.debt, b.available) == (30, 0, 30)
    assert not await violations(conn)


async def test_a_bonus_replays_and_conflicts_under_its_key(conn: AsyncConnection) -> None:
    m = await members.create(conn, name="M")
    req = bonus(m.id, None, points=10)
    first = await ledger.award_bonus(conn, req)
    again = await ledger.award_bonus(conn, req)
    assert again.replayed and again.transaction_id == first.transaction_id
    assert (again.points, again.issuer_id, again.expires_at) == (10, None, first.expires_at)
    # The same key in another key space is another bonus.
    other = await ledger.award_bonus(
        conn,
        bonus(
            m.id,
            None,
            points=10,
            idempotency_key=req.idempotency_key,
            key_space=ledger.member_key_space(m.id),
        ),
    )
    assert not other.replayed and other.transaction_id != first.transaction_id
    with pytest.raises(IdempotencyConflict):
        await ledger.award_bonus(
            conn, bonus(m.id, None, points=11, idempotency_key=req.idempotency_key, digest="d2")
        )
    assert (await ledger.balance(conn, member_id=m.id)).wallet == 20


@pytest.mark.parametrize(
    ("change", "error", "code"),
    [
        ({"points": 0}, LedgerValidation, ErrorCode.VALIDATION),
        ({"points": -5}, LedgerValidation, ErrorCode.VALIDATION),
        ({"points": ledger.MAX_POINTS + 1}, LedgerValidation, ErrorCode.VALIDATION),
        ({"reason": " "}, LedgerValidation, ErrorCode.VALIDATION),
        ({"reason": "x" * 201}, LedgerValidation, ErrorCode.VALIDATION),
        ({"reason": "a\x00b"}, LedgerValidation, ErrorCode.VALIDATION),
        ({"ref": "a\x00b"}, LedgerValidation, ErrorCode.VALIDATION),
        ({"validity_months": 0}, LedgerValidation, ErrorCode.VALIDATION),
        ({"idempotency_key": ""}, LedgerValidation, ErrorCode.VALIDATION),
        ({"member_id": uuid.uuid4()}, MemberNotFound, ErrorCode.MEMBER_NOT_FOUND),
        ({"issuer_id": uuid.uuid4()}, PartnerNotFound, ErrorCode.PARTNER_NOT_FOUND),
    ],
)
async def test_a_refused_bonus_changes_nothing(
    conn: AsyncConnection,
    count_statements: StatementCounter,
    change: dict[str, Any],
    error: type[Exception],
    code: ErrorCode,
) -> None:
    m = await members.create(conn, name="M")
    await ledger.award_bonus(conn, bonus(m.id, None, at=utcnow() - timedelta(hours=1)))
    fields: dict[str, Any] = {"member_id": m.id, "issuer_id": None, **change}
    request = bonus(**fields)
    found = not ("member_id" in change or "issuer_id" in change)
    await refused(
        conn,
        count_statements,
        error,
        code,
        lambda: ledger.award_bonus(conn, request),
        sql=not found,
    )


async def test_a_bonus_is_not_an_earn_to_reverse(
    conn: AsyncConnection, count_statements: StatementCounter
) -> None:
    p = await partners.create(conn, name="P", category="shop", currency="RUB")
    m = await members.create(conn, name="M")
    r = await ledger.award_bonus(conn, bonus(m.id, p.id, points=50, reason="review"))
    await refused(
        conn,
        count_statements,
        TransactionNotFound,
        ErrorCode.TRANSACTION_NOT_FOUND,
        lambda: ledger.reverse_earn(
            conn,
            actor="p",
            idempotency_key="v",
            partner_id=p.id,
            earn_transaction_id=r.transaction_id,
            points=10,
        ),
    )
