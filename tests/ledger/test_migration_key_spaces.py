"""Migration 0007: idempotency keys move from the client's key space to its partner's, and the
stored earn digests to what the client sent, so that a retry across the upgrade (through any
client of the partner) replays; the downgrade restores both."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import text

from core.db import create_engine
from ledger import service as ledger
from members import service as members
from migrations.runner import alembic_config, upgrade
from partners import clients
from partners import service as partners
from tests.db import create_test_database, drop_database


@pytest.fixture
def db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_mig")
    yield uri
    drop_database(admin, uri)


async def test_keys_and_digests_survive_the_upgrade_and_the_downgrade(db_uri: str) -> None:
    engine = create_engine(db_uri)
    async with engine.begin() as c:
        p = await partners.create(c, name="Migrated", category="fuel", currency="RUB")
        till1 = await clients.create_partner_client(c, partner_id=p.id, scopes=["points:earn"])
        till2 = await clients.create_partner_client(c, partner_id=p.id, scopes=["points:earn"])
        m = await members.create(c, name="M")
    space = ledger.partner_key_space(p.id)
    amount = Decimal("1500.00")
    request = {
        "card_number": m.card_number,
        "amount": amount,
        "currency": "RUB",
        "category": "fuel",
        "ref": "O-1",
    }
    earn = {
        "idempotency_key": "K1",
        "member_id": m.id,
        "partner_id": p.id,
        "points": 300,
        "hold_days": 3,
        "ref": "O-1",
        "amount": amount,
        "currency": "RUB",
        "category": "fuel",
    }
    async with engine.begin() as c:
        original = await ledger.earn(
            c,
            actor=till1.client_id,
            key_space=space,
            digest=ledger.earn_request_digest(**request),
            **earn,
        )

    # Down: the key is the client's again, under the digest the former code computed.
    await engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(db_uri), "0006")
    former = ledger.earn_digest(
        member_id=m.id,
        partner_id=p.id,
        points=300,
        ref="O-1",
        amount=amount,
        currency="RUB",
        category="fuel",
        hold_days=3,
        validity_months=ledger.DEFAULT_VALIDITY_MONTHS,
    )
    async with engine.begin() as c:
        row = (
            await c.execute(
                text("SELECT actor, request_hash FROM idempotency_keys WHERE key = 'K1'")
            )
        ).one()
        assert tuple(row) == (till1.client_id, former)
        # Before 0007 the partner's other client could claim the same key for itself.
        await c.execute(
            text(
                "INSERT INTO idempotency_keys (actor, operation, key, request_hash, result) "
                "VALUES (:a, 'earn', 'K1', 'x', '{}')"
            ),
            {"a": till2.client_id},
        )

    # Up again: the partner's key space, the client's request; nothing collides or is lost.
    await asyncio.to_thread(upgrade, db_uri)
    async with engine.begin() as c:
        rows = (
            await c.execute(
                text(
                    "SELECT key_space, actor, request_hash FROM idempotency_keys "
                    "WHERE key = 'K1' ORDER BY id"
                )
            )
        ).all()
        assert [tuple(r) for r in rows] == [
            (space, till1.client_id, ledger.earn_request_digest(**request)),
            (f"{space}/{till2.client_id}", till2.client_id, "x"),
        ]
        # The retry through the other client, after the upgrade, replays the original.
        again = await ledger.earn(
            c,
            actor=till2.client_id,
            key_space=space,
            digest=ledger.earn_request_digest(**request),
            **{**earn, "points": 600},
        )
    assert again.replayed and again.transaction_id == original.transaction_id
    assert again.points == 300
    await engine.dispose()
