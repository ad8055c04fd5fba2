"""The referral sweep, the safety net of the earn path: `coalition pay-referrals`, and `serve`
running it every REFERRAL_SWEEP_MINUTES (at start, then on schedule)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from core.clock import utcnow
from core.db import create_engine
from core.settings import Settings
from gateway.app import create_app
from ledger import service as ledger
from loyalty import bonuses
from members import referrals
from members import service as members
from partners import service as partners


async def friend_who_earned(engine: AsyncEngine) -> tuple[uuid.UUID, uuid.UUID]:
    """A referrer and a friend promised 500 points each, the friend's first earn recorded
    without the earn path's payment (as after a crash in between)."""
    async with engine.begin() as conn:
        p = await partners.create(conn, name="Sweep", category="fuel", currency="RUB")
        referrer = await members.create(conn)
        friend = await members.create(conn)
        await referrals.record(
            conn, friend_id=friend.id, referrer_id=referrer.id, points=500, at=utcnow()
        )
        await ledger.earn(
            conn,
            actor="test",
            idempotency_key=uuid.uuid4().hex,
            member_id=friend.id,
            partner_id=p.id,
            points=100,
        )
    return referrer.id, friend.id


async def available(engine: AsyncEngine, member_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        return (await ledger.balance(conn, member_id=member_id)).available


def test_coalition_pay_referrals_pays_what_is_due_once(fresh_database, monkeypatch) -> None:
    from gateway import cli

    engine = create_engine(fresh_database)
    try:
        referrer, friend = asyncio.run(friend_who_earned(engine))
    finally:
        asyncio.run(engine.dispose())
    monkeypatch.setattr(cli, "_url", lambda: fresh_database)
    runner = CliRunner()
    first = runner.invoke(cli.app, ["pay-referrals"])
    again = runner.invoke(cli.app, ["pay-referrals"])
    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    assert first.output.splitlines()[-1] == '{"paid": 1}'
    assert again.output.splitlines()[-1] == '{"paid": 0}'

    async def balances() -> tuple[int, int]:
        engine = create_engine(fresh_database)
        try:
            return await available(engine, referrer), await available(engine, friend)
        finally:
            await engine.dispose()

    assert asyncio.run(balances()) == (500, 600)


async def test_serve_runs_the_sweep_on_a_schedule(fresh_database, monkeypatch) -> None:
    engine = create_engine(fresh_database)
    ran = asyncio.Event()
    paid: list[int] = []
    real = bonuses.pay_pending_referrals

    async def observed(engine: AsyncEngine, **kw: Any) -> int:
        paid.append(await real(engine, **kw))
        ran.set()
        return paid[-1]

    monkeypatch.setattr(bonuses, "pay_pending_referrals", observed)
    try:
        referrer, friend = await friend_who_earned(engine)
        off = create_app(
            Settings(database_url=fresh_database, referral_sweep_minutes=0),
            database_url=fresh_database,
        )
        async with LifespanManager(off):
            pass
        assert paid == []
        on = create_app(
            Settings(database_url=fresh_database, referral_sweep_minutes=5),
            database_url=fresh_database,
        )
        async with LifespanManager(on):
            await asyncio.wait_for(ran.wait(), timeout=60)
        assert paid == [1]
        assert (await available(engine, referrer), await available(engine, friend)) == (500, 600)
    finally:
        await engine.dispose()
