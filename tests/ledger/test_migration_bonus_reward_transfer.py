"""Migration 0010: its downgrade refuses while bonuses, rewards or transfers exist (the former
checks could not hold them), and restores the former schema when none does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import text

from core.db import create_engine
from ledger import service as ledger
from members import service as members
from migrations.runner import alembic_config, upgrade
from tests.db import create_test_database, drop_database


@pytest.fixture
def db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_mig10")
    yield uri
    drop_database(admin, uri)


async def test_the_downgrade_refuses_while_a_bonus_exists_and_works_without(db_uri: str) -> None:
    engine = create_engine(db_uri)
    async with engine.begin() as c:
        m = await members.create(c, name="M")
        await ledger.award_bonus(
            c,
            ledger.BonusRequest(
                actor="op",
                key_space="op",
                idempotency_key="k",
                digest="d",
                member_id=m.id,
                issuer_id=None,
                points=10,
                reason="signup",
            ),
        )
    await engine.dispose()
    with pytest.raises(Exception, match="bonuses, rewards or transfers exist"):
        await asyncio.to_thread(command.downgrade, alembic_config(db_uri), "0009")

    async with engine.begin() as c:  # the same database without the bonus
        for sql in (
            "ALTER TABLE transactions DISABLE TRIGGER transactions_insert_only",
            "ALTER TABLE entries DISABLE TRIGGER entries_insert_only",
            "ALTER TABLE lots DISABLE TRIGGER lots_permanent",
            "DELETE FROM idempotency_keys",
            "DELETE FROM lots",
            "DELETE FROM entries",
            "DELETE FROM transactions",
            "ALTER TABLE transactions ENABLE TRIGGER transactions_insert_only",
            "ALTER TABLE entries ENABLE TRIGGER entries_insert_only",
            "ALTER TABLE lots ENABLE TRIGGER lots_permanent",
        ):
            await c.execute(text(sql))
    await engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(db_uri), "0009")
    async with engine.connect() as c:
        kinds = (await c.execute(text("SELECT kind FROM accounts WHERE owner_id IS NULL"))).all()
        assert sorted(k for (k,) in kinds) == ["adjustments", "breakage"]
        nullable = (
            await c.execute(
                text(
                    "SELECT is_nullable FROM information_schema.columns "
                    "WHERE table_name = 'lots' AND column_name = 'issuer_id'"
                )
            )
        ).scalar_one()
        assert nullable == "NO"
    await engine.dispose()
    await asyncio.to_thread(upgrade, db_uri)
    async with engine.begin() as c:
        m2 = await members.create(c, name="M2")
        r = await ledger.award_bonus(
            c,
            ledger.BonusRequest(
                actor="op",
                key_space="op",
                idempotency_key=str(uuid.uuid4()),
                digest="d",
                member_id=m2.id,
                issuer_id=None,
                points=10,
                reason="signup",
            ),
        )
        assert r.points == 10
    await engine.dispose()
