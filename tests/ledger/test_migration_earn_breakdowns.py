"""Migration 0024: an earn's breakdown moves from a row per line (`earn_lines`) to one row per
earn (`earn_breakdowns`) and back, unchanged as `ledger.earn_lines` reads it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import text

from core.db import create_engine
from ledger import service as ledger
from members import service as members
from migrations.runner import alembic_config, upgrade
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants


@pytest.fixture
def db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_mig")
    yield uri
    drop_database(admin, uri)


LINES = (
    ledger.BreakdownLine("BASE", 150),
    ledger.BreakdownLine("TIER", 75),
    ledger.BreakdownLine("OFFER", 300, uuid.UUID(int=7), "PARTNER"),
    ledger.BreakdownLine("OFFER", 75, uuid.UUID(int=9), "OPERATOR"),
)


async def test_breakdowns_survive_the_upgrade_and_the_downgrade(db_uri: str) -> None:
    engine = create_engine(db_uri)
    async with engine.begin() as c:
        p = await partners.create(c, name="Migrated", category="fuel", currency="RUB")
        m = await members.create(c, name="M")

    async def earn(key: str, lines: tuple[ledger.BreakdownLine, ...]) -> uuid.UUID:
        async with engine.begin() as c:
            result = await ledger.earn(
                c,
                ledger.EarnRequest(
                    actor="t",
                    idempotency_key=key,
                    member_id=m.id,
                    partner_id=p.id,
                    points=sum(line.points for line in lines),
                    ref=key,
                    amount=Decimal("1500"),
                    currency="RUB",
                    lines=lines,
                ),
            )
        return result.transaction_id

    async def read(ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[ledger.BreakdownLine, ...]]:
        async with engine.connect() as c:
            return await ledger.earn_lines(c, transaction_ids=ids)

    ids = [await earn("K1", LINES), await earn("K2", (ledger.BreakdownLine("BASE", 40),))]
    expected = {ids[0]: LINES, ids[1]: (ledger.BreakdownLine("BASE", 40),)}
    assert await read(ids) == expected
    await engine.dispose()
    # Down: a row per line, as 0016 stored them; up again: the same breakdowns.
    await asyncio.to_thread(command.downgrade, alembic_config(db_uri), "0022")
    async with engine.connect() as c:
        rows = (
            await c.execute(
                text(
                    "SELECT position, source, points, offer_id, funded_by FROM earn_lines "
                    "WHERE transaction_id = :t ORDER BY position"
                ),
                {"t": ids[0]},
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (n, line.source, line.points, line.offer_id, line.funded_by) for n, line in enumerate(LINES)
    ]
    await engine.dispose()
    await asyncio.to_thread(upgrade, db_uri)
    assert await read(ids) == expected
    await assert_invariants(engine)
    await engine.dispose()
