"""Expiry of the new kinds of lots: a transferred lot expires at its original date, in the
receiver's wallet; a lot the operator issued expires to breakage like any other."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import utcnow
from core.db import create_engine
from ledger import service as ledger
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    """A database of this module's own: the expiry job sweeps every lot of its database."""
    admin, uri = create_test_database("coalition_expiry_issuers")
    yield uri
    drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri)
    yield eng
    await eng.dispose()


def common(prefix: str) -> dict[str, str]:
    k = f"{prefix}-{uuid.uuid4()}"
    return {"actor": "test", "key_space": "test", "idempotency_key": k, "digest": k}


async def test_transferred_and_operator_lots_expire_at_their_dates(engine: AsyncEngine) -> None:
    now = utcnow()
    t0 = now - timedelta(days=100)
    async with engine.begin() as c:
        p = await partners.create(c, name="P", category="shop", currency="RUB")
        a, b = (await members.create(c, name="A")).id, (await members.create(c, name="B")).id
        breakage0 = await ledger.account_balance(c, kind="breakage", owner_id=None)
        # a: 60 of p's expiring at t0 + 1 month, 40 of the operator's at t0 + 2 months.
        await ledger.earn(
            c,
            actor="p",
            idempotency_key="e",
            member_id=a,
            partner_id=p.id,
            points=60,
            at=t0,
            validity_months=1,
        )
        await ledger.award_bonus(
            c,
            ledger.BonusRequest(
                **common("b"),
                member_id=a,
                issuer_id=None,
                points=40,
                reason="signup",
                at=t0,
                validity_months=2,
            ),
        )
        # b gets all 60 of p's and 20 of the operator's (earliest expiry first), 10 days
        # later; 20 of the operator's stay with a; b has an operator bonus of its own too.
        await ledger.transfer_points(
            c,
            ledger.TransferRequest(
                **common("t"),
                from_member_id=a,
                to_member_id=b,
                points=80,
                daily_limit=None,
                at=t0 + timedelta(days=10),
            ),
        )
        await ledger.award_bonus(
            c,
            ledger.BonusRequest(
                **common("b"),
                member_id=b,
                issuer_id=None,
                points=5,
                reason="referral",
                at=now,
            ),
        )
    one_month = ledger.add_months(t0, 1)
    # Between the two expiries: p's points go at their original date, from b's wallet.
    report = await ledger.expire_points(engine, at=one_month + timedelta(days=1))
    assert (report.lots, report.points) == (1, 60)
    async with engine.connect() as c:
        assert [(await ledger.balance(c, member_id=m, at=one_month)).wallet for m in (a, b)] == [
            20,
            25,
        ]
    report = await ledger.expire_points(engine)
    assert (report.lots, report.points) == (2, 40)
    async with engine.connect() as c:
        assert [(await ledger.balance(c, member_id=m)).wallet for m in (a, b)] == [0, 5]
        assert await ledger.account_balance(c, kind="breakage", owner_id=None) == breakage0 + 100
        by_issuer = await c.execute(
            text(
                "SELECT l.issuer_id, -sum(lp.points) FROM lot_postings lp "
                "JOIN lots l ON l.id = lp.lot_id WHERE lp.kind = 'expiry' GROUP BY l.issuer_id"
            )
        )
        assert dict(by_issuer.all()) == {p.id: 60, None: 40}
    await assert_invariants(engine)
