"""Migration 0011: members who exist when it runs get a referral code each (valid, unique). The
test starts with its downgrade (to 0010: no referral codes)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import text

from core.db import create_engine
from members.cards import new_card_number
from members.referrals import normalise
from migrations.runner import alembic_config, upgrade
from tests.db import create_test_database, drop_database


@pytest.fixture
def db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_mig11")
    yield uri
    drop_database(admin, uri)


async def test_existing_members_get_a_referral_code_each(db_uri: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(db_uri), "0010")
    engine = create_engine(db_uri)
    try:
        async with engine.begin() as c:
            columns = (
                await c.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = 'members'"
                    )
                )
            ).scalars()
            assert "referral_code" not in set(columns)
            for _ in range(250):
                await c.execute(
                    text("INSERT INTO members (id, card_number) VALUES (:id, :card)"),
                    {"id": uuid.uuid4(), "card": new_card_number()},
                )
        await asyncio.to_thread(upgrade, db_uri)
        async with engine.connect() as c:
            codes = list((await c.execute(text("SELECT referral_code FROM members"))).scalars())
        assert len(codes) == len(set(codes)) == 250
        assert all(re.fullmatch("[0-9A-HJKMNP-TV-Z]{8}", code) for code in codes)
        assert all(normalise(code) == code for code in codes)
    finally:
        await engine.dispose()
