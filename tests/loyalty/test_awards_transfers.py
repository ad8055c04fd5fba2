"""A partner's own bonus (funded by it) and transfers between members, through the use cases,
with exact numbers; every refusal changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import DomainError, ErrorCode
from ledger import service as ledger
from loyalty import bonuses, register, transfers
from loyalty.runtime import Services
from members.cards import new_card_number
from members.service import MemberRecord
from tests.loyalty.conftest import partner_in_force, unhashed


async def join(rt: Services) -> MemberRecord:
    return await register.register(
        rt,
        email=f"{uuid.uuid4().hex[:12]}@example.com",
        password="a long password",
        name="N",
        hashing=unhashed,
    )


async def award(rt: Services, partner: uuid.UUID, card: str, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "actor": f"client-of-{partner}",
        "key_space": ledger.partner_key_space(partner),
        "partner_id": partner,
        "card_number": card,
        "points": 40,
        "reason": "Review of the car wash",
        "idempotency_key": uuid.uuid4().hex,
    }
    return await bonuses.award(rt, **{**args, **kw})


async def state(engine: AsyncEngine, *member_ids: uuid.UUID) -> dict[str, Any]:
    """What a refused request must leave unchanged: the members' lots and the ledger's rows."""
    async with engine.connect() as conn:
        lots = (
            await conn.execute(
                text(
                    "SELECT member_id, issuer_id, points, remaining, earned_at, expires_at "
                    "FROM lots WHERE member_id = ANY(:m) ORDER BY id"
                ),
                {"m": list(member_ids)},
            )
        ).all()
        counts = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM entries), "
                    "(SELECT count(*) FROM idempotency_keys)"
                )
            )
        ).one()
    return {"lots": [tuple(r) for r in lots], "counts": tuple(counts)}


# ---------------------------------------------------------------------------------------------
# awardBonus


async def test_a_partners_bonus_is_issued_and_funded_by_the_partner(services, engine):
    partner = await partner_in_force(services, "Award wash")
    m = await join(services)
    async with engine.connect() as conn:
        issued_before = await ledger.account_balance(conn, kind="issuance", owner_id=partner)
    r = await award(services, partner, m.card_number, points=40)
    assert (r.points, r.issuer_id, r.member_id, r.replayed) == (40, partner, m.id, False)
    async with engine.connect() as conn:
        issued = await ledger.account_balance(conn, kind="issuance", owner_id=partner)
        lot = (
            await conn.execute(
                text("SELECT issuer_id, points, earn_tx_id FROM lots WHERE member_id = :m"),
                {"m": m.id},
            )
        ).one()
        tx = (
            await conn.execute(
                text("SELECT kind, partner_id, category FROM transactions WHERE id = :t"),
                {"t": r.transaction_id},
            )
        ).one()
        balance = await ledger.balance(conn, member_id=m.id)
    assert issued - issued_before == -40  # charged to the partner, like its earns
    assert tuple(lot) == (partner, 40, r.transaction_id)
    assert tuple(tx) == ("bonus", partner, "Review of the car wash")
    assert balance.available == 40


async def test_a_partners_bonus_is_idempotent_in_its_own_key_space(services, engine):
    a = await partner_in_force(services, "Award A")
    b = await partner_in_force(services, "Award B")
    m = await join(services)
    first = await award(services, a, m.card_number, idempotency_key="review-1")
    again = await award(services, a, m.card_number, idempotency_key="review-1")
    assert (again.transaction_id, again.replayed) == (first.transaction_id, True)
    with pytest.raises(DomainError) as conflict:
        await award(services, a, m.card_number, idempotency_key="review-1", points=41)
    assert conflict.value.code == ErrorCode.IDEMPOTENCY_CONFLICT
    other = await award(services, b, m.card_number, idempotency_key="review-1")
    assert other.transaction_id != first.transaction_id and not other.replayed
    async with engine.connect() as conn:
        assert (await ledger.balance(conn, member_id=m.id)).available == 80
        issuers = (
            await conn.execute(
                text("SELECT issuer_id, points FROM lots WHERE member_id = :m ORDER BY id"),
                {"m": m.id},
            )
        ).all()
    assert [tuple(r) for r in issuers] == [(a, 40), (b, 40)]


async def test_a_partner_without_an_agreement_in_force_awards_nothing(services, engine):
    partner = await partner_in_force(services, "Award unsigned", agreement=False)
    m = await join(services)
    before = await state(engine, m.id)
    with pytest.raises(DomainError) as refused:
        await award(services, partner, m.card_number)
    assert refused.value.code == ErrorCode.NO_AGREEMENT
    assert await state(engine, m.id) == before


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"points": 0}, ErrorCode.VALIDATION),
        ({"points": -5}, ErrorCode.VALIDATION),
        ({"points": 100_001}, ErrorCode.VALIDATION),
        ({"points": True}, ErrorCode.VALIDATION),
        ({"reason": "   "}, ErrorCode.VALIDATION),
        ({"reason": "x" * 201}, ErrorCode.VALIDATION),
        ({"card_number": "1234"}, ErrorCode.VALIDATION),
        ({"card_number": "unknown"}, ErrorCode.MEMBER_NOT_FOUND),
        ({"idempotency_key": ""}, ErrorCode.VALIDATION),
    ],
)
async def test_a_bad_award_is_refused_and_changes_nothing(services, engine, change, code):
    partner = await partner_in_force(services, f"Award bad {uuid.uuid4().hex[:6]}")
    m = await join(services)
    if change.get("card_number") == "unknown":
        change = {"card_number": new_card_number()}
    before = await state(engine, m.id)
    with pytest.raises(DomainError) as refused:
        await award(services, partner, m.card_number, **change)
    assert refused.value.code == code
    assert await state(engine, m.id) == before


# ---------------------------------------------------------------------------------------------
# transferPoints


async def send(rt: Services, sender: MemberRecord, to_card: str, points: Any, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "actor": "coalition-app",
        "key_space": ledger.member_key_space(sender.id),
        "member_id": sender.id,
        "to_card_number": to_card,
        "points": points,
        "idempotency_key": uuid.uuid4().hex,
    }
    return await transfers.transfer(rt, **{**args, **kw})


async def test_a_transfer_moves_lots_with_their_issuer_earn_date_and_expiry(services, engine):
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=0)
    partner = await partner_in_force(services, "Transfer fuel")
    giver, receiver = await join(services), await join(services)
    async with engine.begin() as conn:
        # The operator's points expire first (validity 12 months), then the partner's (36).
        await bonuses.pay_signup_bonus(conn, member_id=giver.id, points=100, validity_months=12)
    await award(services, partner, giver.card_number, points=300)
    async with engine.connect() as conn:
        given = (
            await conn.execute(
                text(
                    "SELECT issuer_id, earned_at, expires_at FROM lots WHERE member_id = :m "
                    "ORDER BY expires_at"
                ),
                {"m": giver.id},
            )
        ).all()
    r = await send(services, giver, receiver.card_number, 350)
    assert (r.points, r.from_member_id, r.to_member_id) == (350, giver.id, receiver.id)
    async with engine.connect() as conn:
        got = (
            await conn.execute(
                text(
                    "SELECT issuer_id, points, remaining, earned_at, expires_at FROM lots "
                    "WHERE member_id = :m ORDER BY expires_at"
                ),
                {"m": receiver.id},
            )
        ).all()
        left = (
            await conn.execute(
                text(
                    "SELECT issuer_id, remaining FROM lots WHERE member_id = :m ORDER BY expires_at"
                ),
                {"m": giver.id},
            )
        ).all()
        balances = [
            (await ledger.balance(conn, member_id=m)).available for m in (giver.id, receiver.id)
        ]
    (op_issuer, op_earned, op_expires), (p_issuer, p_earned, p_expires) = given
    assert (op_issuer, p_issuer) == (None, partner)
    # Earliest expiry first: all 100 of the operator's points, then 250 of the partner's.
    assert [tuple(g) for g in got] == [
        (None, 100, 100, op_earned, op_expires),
        (partner, 250, 250, p_earned, p_expires),
    ]
    assert [tuple(row) for row in left] == [(None, 0), (partner, 50)]
    assert balances == [50, 350]


@pytest.fixture
async def pair(services, engine) -> tuple[MemberRecord, MemberRecord]:
    """Two members; the first holds 1,000 points of a partner's (and nothing else)."""
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=0)
    partner = await partner_in_force(services, f"Pair {uuid.uuid4().hex[:6]}")
    giver, receiver = await join(services), await join(services)
    await award(services, partner, giver.card_number, points=1000)
    return giver, receiver


@pytest.mark.parametrize(
    ("points", "to", "code"),
    [
        (10, "self", ErrorCode.VALIDATION),
        (0, "other", ErrorCode.VALIDATION),
        (-5, "other", ErrorCode.VALIDATION),
        (ledger.MAX_POINTS + 1, "other", ErrorCode.VALIDATION),
        (True, "other", ErrorCode.VALIDATION),
        (10, "malformed", ErrorCode.VALIDATION),
        (10, "unknown", ErrorCode.MEMBER_NOT_FOUND),
        (1001, "other", ErrorCode.INSUFFICIENT_POINTS),
    ],
)
async def test_a_bad_transfer_is_refused_and_changes_nothing(
    services, engine, pair, points, to, code
):
    giver, receiver = pair
    card = {
        "self": giver.card_number,
        "other": receiver.card_number,
        "malformed": "7000",
        "unknown": new_card_number(),
    }[to]
    before = await state(engine, giver.id, receiver.id)
    with pytest.raises(DomainError) as refused:
        await send(services, giver, card, points)
    assert refused.value.code == code
    if to in ("self", "malformed"):
        assert refused.value.details["field"] == "toCardNumber"
    assert await state(engine, giver.id, receiver.id) == before


async def test_the_daily_limit_counts_each_senders_transfers(services, engine, pair):
    giver, receiver = pair
    rt = dataclasses.replace(
        services, settings=services.settings.model_copy(update={"transfer_daily_limit": 500})
    )
    await send(rt, giver, receiver.card_number, 300)
    before = await state(engine, giver.id, receiver.id)
    with pytest.raises(DomainError) as refused:
        await send(rt, giver, receiver.card_number, 201)
    assert refused.value.code == ErrorCode.LIMIT_EXCEEDED
    assert await state(engine, giver.id, receiver.id) == before
    await send(rt, giver, receiver.card_number, 200)  # exactly up to the limit
    async with engine.connect() as conn:
        assert (await ledger.balance(conn, member_id=receiver.id)).available == 500
        assert (await ledger.balance(conn, member_id=giver.id)).available == 500


async def test_concurrent_transfers_of_one_sender_respect_the_daily_limit(services, engine, pair):
    giver, receiver = pair
    rt = dataclasses.replace(
        services, settings=services.settings.model_copy(update={"transfer_daily_limit": 500})
    )
    results = await asyncio.gather(
        *(send(rt, giver, receiver.card_number, 100) for _ in range(8)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, DomainError)]
    assert len(refused) == 3 and {r.code for r in refused} == {ErrorCode.LIMIT_EXCEEDED}
    async with engine.connect() as conn:
        assert (await ledger.balance(conn, member_id=receiver.id)).available == 500


async def test_a_daily_limit_of_zero_turns_transfers_off(services, engine, pair):
    giver, receiver = pair
    rt = dataclasses.replace(
        services, settings=services.settings.model_copy(update={"transfer_daily_limit": 0})
    )
    before = await state(engine, giver.id, receiver.id)
    with pytest.raises(DomainError) as refused:
        await send(rt, giver, receiver.card_number, 1)
    assert refused.value.code == ErrorCode.LIMIT_EXCEEDED
    assert await state(engine, giver.id, receiver.id) == before


async def test_a_transfer_is_idempotent_per_member(services, engine, pair):
    giver, receiver = pair
    first = await send(services, giver, receiver.card_number, 70, idempotency_key="gift")
    again = await send(services, giver, receiver.card_number, 70, idempotency_key="gift")
    assert (again.transaction_id, again.replayed) == (first.transaction_id, True)
    with pytest.raises(DomainError) as conflict:
        await send(services, giver, receiver.card_number, 71, idempotency_key="gift")
    assert conflict.value.code == ErrorCode.IDEMPOTENCY_CONFLICT
    async with engine.connect() as conn:
        assert (await ledger.balance(conn, member_id=receiver.id)).available == 70
