"""Sign-up and referral bonuses (operator-funded) through the use cases, with exact numbers.

The module has a database of its own: the bonus rules are global, and each test sets the ones
it needs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_engine
from core.errors import ValidationError
from ledger import service as ledger
from loyalty import bonuses, register
from loyalty import earn as earning
from loyalty.runtime import Services
from members import bonus_rules, referrals
from members.service import MemberRecord
from tests.db import create_test_database, drop_database
from tests.loyalty.conftest import partner_in_force, unhashed


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_bonus")
    try:
        yield uri
    finally:
        drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=20, max_overflow=20)
    yield eng
    await eng.dispose()


async def join(rt: Services, code: str | None = None) -> MemberRecord:
    return await register.register(
        rt,
        email=f"{uuid.uuid4().hex[:12]}@example.com",
        password="a long password",
        name="N",
        hashing=unhashed,
        referral_code=code,
    )


async def available(engine: AsyncEngine, member_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        return (await ledger.balance(conn, member_id=member_id)).available


async def bonuses_of(engine: AsyncEngine, member_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """The member's bonus transactions: (reason, points, issuer), oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT category, points, partner_id FROM transactions "
                "WHERE kind = 'bonus' AND member_id = :m ORDER BY recorded_at, id"
            ),
            {"m": member_id},
        )
        return [tuple(r) for r in rows]


async def buy(rt: Services, partner_id: uuid.UUID, card: str, amount: str = "100.00") -> None:
    """An earn of `amount` points (base rate 1) through the use case."""
    ref = uuid.uuid4().hex
    await earning.earn(
        rt,
        actor="test-partner",
        key_space=ledger.partner_key_space(partner_id),
        partner_id=partner_id,
        card_number=card,
        amount=amount,
        currency="RUB",
        category=None,
        order_ref=ref,
        idempotency_key=ref,
    )


async def test_a_fresh_database_gives_no_bonuses(fresh_database):
    engine = create_engine(fresh_database)
    try:
        async with engine.connect() as conn:
            rules = await bonus_rules.current(conn)
        assert (rules.signup_points, rules.referral_points, rules.recorded_at) == (0, 0, None)
    finally:
        await engine.dispose()


async def test_no_rules_no_signup_bonus(services, engine):
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=0)
    m = await join(services)
    assert await available(engine, m.id) == 0
    assert await bonuses_of(engine, m.id) == []


async def test_the_signup_bonus_is_paid_once_at_registration(services, engine):
    await bonuses.set_rules(services, actor="op", signup_points=100, referral_points=0)
    m = await join(services)
    assert await available(engine, m.id) == 100
    assert await bonuses_of(engine, m.id) == [("signup", 100, None)]  # the operator's
    async with engine.connect() as conn:
        lots = (
            await conn.execute(
                text("SELECT issuer_id, points, remaining FROM lots WHERE member_id = :m"),
                {"m": m.id},
            )
        ).all()
    assert [tuple(r) for r in lots] == [(None, 100, 100)]
    # Paying it again (any path, any time) replays the payment under its key.
    async with engine.begin() as conn:
        again = await bonuses.pay_signup_bonus(conn, member_id=m.id, points=100, validity_months=36)
    assert again.replayed
    assert await available(engine, m.id) == 100
    assert await bonuses_of(engine, m.id) == [("signup", 100, None)]


async def test_new_rules_apply_to_registrations_from_then_on(services, engine):
    await bonuses.set_rules(services, actor="op", signup_points=100, referral_points=0)
    first = await join(services)
    rules = await bonuses.set_rules(services, actor="op", signup_points=30, referral_points=7)
    assert (rules.signup_points, rules.referral_points) == (30, 7)
    assert (await bonuses.rules(services)).signup_points == 30
    second = await join(services)
    assert (await available(engine, first.id), await available(engine, second.id)) == (100, 30)


@pytest.mark.parametrize("points", [-1, 1_000_001, True])
async def test_bonus_rules_out_of_range_are_refused(services, points):
    before = await bonuses.rules(services)
    with pytest.raises(ValidationError):
        await bonuses.set_rules(services, actor="op", signup_points=points, referral_points=0)
    with pytest.raises(ValidationError):
        await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=points)
    assert await bonuses.rules(services) == before


async def count_members(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM members"))).scalar_one())


@pytest.mark.parametrize("code", ["ZZZZZZZZ", "not a code", "A" * 100, "ABCDEFGU"])
async def test_an_unknown_referral_code_is_refused_and_nothing_created(services, engine, code):
    await bonuses.set_rules(services, actor="op", signup_points=100, referral_points=500)
    before = await count_members(engine)
    with pytest.raises(ValidationError) as refused:
        await join(services, code=code)
    assert refused.value.details["field"] == "referralCode"
    assert await count_members(engine) == before


async def test_every_member_has_a_unique_referral_code(services):
    members = [await join(services) for _ in range(5)]
    codes = {m.referral_code for m in members}
    assert len(codes) == 5
    assert all(referrals.normalise(c) == c for c in codes)


async def test_the_referral_bonus_goes_to_both_after_the_first_earn_only(services, engine):
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=500)
    partner = await partner_in_force(services, "Referral fuel")
    referrer = await join(services)
    # Typed by a person: lower case, a dash, an O for a 0 are forgiven.
    typed = referrer.referral_code.lower().replace("0", "o")
    friend = await join(services, code=typed[:4] + "-" + typed[4:])
    assert (await available(engine, referrer.id), await available(engine, friend.id)) == (0, 0)

    await buy(services, partner, friend.card_number)
    assert await available(engine, referrer.id) == 500
    assert await available(engine, friend.id) == 100 + 500
    assert await bonuses_of(engine, referrer.id) == [("referral", 500, None)]
    assert await bonuses_of(engine, friend.id) == [("referral", 500, None)]

    await buy(services, partner, friend.card_number)  # a second earn: nothing more
    await buy(services, partner, referrer.card_number)  # nor the referrer's own earns
    assert await bonuses.pay_pending_referrals(engine, validity_months=36) == 0
    assert await available(engine, referrer.id) == 100 + 500
    assert await available(engine, friend.id) == 200 + 500
    assert len(await bonuses_of(engine, referrer.id)) == len(await bonuses_of(engine, friend.id))
    assert len(await bonuses_of(engine, friend.id)) == 1


async def test_eight_concurrent_first_earns_pay_the_referral_once(services, engine):
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=500)
    partner = await partner_in_force(services, "Concurrent fuel")
    referrer = await join(services)
    friend = await join(services, code=referrer.referral_code)
    await asyncio.gather(*(buy(services, partner, friend.card_number) for _ in range(8)))
    assert await available(engine, referrer.id) == 500
    assert await available(engine, friend.id) == 8 * 100 + 500
    assert await bonuses_of(engine, referrer.id) == [("referral", 500, None)]
    assert await bonuses_of(engine, friend.id) == [("referral", 500, None)]


async def test_concurrent_payments_of_one_referral_pay_it_once(services, engine):
    """Eight payments at once (earn paths of several processes, the sweep): one pays, the
    others replay it; exactly what the deterministic keys are for."""
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=500)
    referrer = await join(services)
    friend = await join(services, code=referrer.referral_code)
    paid = await asyncio.gather(
        *(bonuses.pay_referral(engine, friend_id=friend.id, validity_months=36) for _ in range(8))
    )
    done = [p for p in paid if p is not None]
    assert {p.friend.transaction_id for p in done} == {done[0].friend.transaction_id}
    assert (await available(engine, referrer.id), await available(engine, friend.id)) == (500, 500)
    assert len(await bonuses_of(engine, referrer.id)) == len(await bonuses_of(engine, friend.id))
    assert len(await bonuses_of(engine, friend.id)) == 1


async def test_the_amount_promised_at_registration_is_paid(services, engine):
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=500)
    partner = await partner_in_force(services, "Promise fuel")
    referrer = await join(services)
    promised = await join(services, code=referrer.referral_code)
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=0)
    unpromised = await join(services, code=referrer.referral_code)  # recorded, nothing due
    await buy(services, partner, promised.card_number)
    await buy(services, partner, unpromised.card_number)
    assert await available(engine, referrer.id) == 500
    assert await available(engine, promised.id) == 600
    assert await available(engine, unpromised.id) == 100
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT friend_id, points, paid_at IS NOT NULL FROM referrals "
                    "WHERE referrer_id = :r"
                ),
                {"r": referrer.id},
            )
        ).all()
    assert {tuple(r) for r in rows} == {(promised.id, 500, True), (unpromised.id, 0, False)}


async def test_the_sweep_pays_what_the_earn_path_did_not(services, engine):
    """The friend's first earn recorded without the earn path's payment (a process that ended
    in between): the sweep pays both sides once; friends with no earn wait."""
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=500)
    partner = await partner_in_force(services, "Sweep fuel")
    referrer = await join(services)
    friend = await join(services, code=referrer.referral_code)
    waiting = await join(services, code=referrer.referral_code)
    async with engine.begin() as conn:
        await ledger.earn(
            conn,
            actor="test-partner",
            idempotency_key=uuid.uuid4().hex,
            member_id=friend.id,
            partner_id=partner,
            points=100,
        )
    assert await bonuses.pay_pending_referrals(engine, validity_months=36) == 1
    assert await bonuses.pay_pending_referrals(engine, validity_months=36) == 0
    assert await available(engine, referrer.id) == 500
    assert await available(engine, friend.id) == 600
    assert await available(engine, waiting.id) == 0


async def test_one_sweep_at_a_time(services, engine):
    """A sweep running elsewhere (its advisory lock held) makes this one skip."""
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=500)
    partner = await partner_in_force(services, "One sweep fuel")
    referrer = await join(services)
    friend = await join(services, code=referrer.referral_code)
    async with engine.begin() as conn:
        await ledger.earn(
            conn,
            actor="test-partner",
            idempotency_key=uuid.uuid4().hex,
            member_id=friend.id,
            partner_id=partner,
            points=100,
        )
    async with engine.connect() as other:
        lock = {"k": bonuses.REFERRAL_SWEEP_LOCK}
        await other.execute(text("SELECT pg_advisory_lock(:k)"), lock)
        try:
            assert await bonuses.pay_pending_referrals(engine, validity_months=36) == 0
            assert await available(engine, referrer.id) == 0
        finally:
            await other.execute(text("SELECT pg_advisory_unlock(:k)"), lock)
            await other.commit()
    assert await bonuses.pay_pending_referrals(engine, validity_months=36) == 1
    assert (await available(engine, referrer.id), await available(engine, friend.id)) == (500, 600)


async def test_a_stale_pending_flag_pays_nothing_more(services, engine):
    """A process that cached the friend's card as 'referral pending' before another paid it
    (here: the sweep) pays nothing more on its next earn, and stops looking."""
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=500)
    partner = await partner_in_force(services, "Stale fuel")
    referrer = await join(services)
    friend = await join(services, code=referrer.referral_code)
    cards = services.caches.member_by_card
    assert (await cards.holder(services.pool, friend.card_number)).referral_pending
    async with engine.begin() as conn:
        await ledger.earn(
            conn,
            actor="test-partner",
            idempotency_key=uuid.uuid4().hex,
            member_id=friend.id,
            partner_id=partner,
            points=100,
        )
    assert await bonuses.pay_pending_referrals(engine, validity_months=36) == 1
    await buy(services, partner, friend.card_number)
    assert (await available(engine, referrer.id), await available(engine, friend.id)) == (
        500,
        100 + 500 + 100,
    )
    assert not (await cards.holder(services.pool, friend.card_number)).referral_pending


async def test_the_earn_of_a_member_without_a_pending_referral_costs_nothing_more(
    services, engine, count_statements
):
    """The earn path asks nothing about referrals: the cached card holder says whether one is
    due. A member without one: no statement on the engine (the earn goes through psycopg's
    pool); the friend whose referral is due: the payment's."""
    await bonuses.set_rules(services, actor="op", signup_points=0, referral_points=500)
    partner = await partner_in_force(services, "Hot path fuel")
    referrer = await join(services)
    await buy(services, partner, referrer.card_number)  # warms the partner's cached terms
    friend = await join(services, code=referrer.referral_code)
    before = count_statements.count
    await buy(services, partner, referrer.card_number)
    assert count_statements.count == before
    await buy(services, partner, friend.card_number)
    assert count_statements.count > before
    assert await available(engine, friend.id) == 600
