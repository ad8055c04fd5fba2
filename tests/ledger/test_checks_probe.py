"""The entries' and lots' existence checks (migration 0029) probe an index per row: a chunk of
earns reads no ledger table whole, whatever the tables' statistics (here: never analyzed, as
after a bulk write that autovacuum has not caught up with)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command

from core.db import create_engine
from ledger import batch
from ledger import service as ledger
from members import service as members
from migrations.runner import alembic_config, upgrade
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants

TABLES = ("transactions", "lots", "entries")


@pytest.fixture
def db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_probe")
    yield uri
    drop_database(admin, uri)


def _requests(
    partner: uuid.UUID, member_ids: list[uuid.UUID], tag: str, n: int
) -> list[ledger.EarnRequest]:
    return [
        ledger.EarnRequest(
            actor="test",
            key_space=ledger.partner_key_space(partner),
            idempotency_key=f"{tag}-{k}",
            member_id=member_ids[k % len(member_ids)],
            partner_id=partner,
            points=1 + k % 50,
            ref=f"{tag}-{k}",
        )
        for k in range(n)
    ]


async def _seq_scans(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """The whole-table reads of TABLES so far, this connection's included: its pending counts
    are flushed when it goes idle after a transaction that asked for it."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    cur = await conn.execute(
        "SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname = ANY(%s)", [list(TABLES)]
    )
    return dict(await cur.fetchall())


async def test_a_chunk_of_earns_probes_rows_and_reads_no_table_whole(db_uri: str) -> None:
    engine = create_engine(db_uri)
    try:
        async with engine.begin() as c:
            partner = (await partners.create(c, name="P", category="fuel", currency="RUB")).id
            member_ids = [(await members.create(c, name=f"m{i}")).id for i in range(40)]
    finally:
        await engine.dispose()
    async with await psycopg.AsyncConnection.connect(db_uri, autocommit=True) as conn:
        await conn.execute("SET stats_fetch_consistency = none")
        # A ledger of some size first (its statistics still those of the empty template).
        async with conn.transaction():
            assert all(await batch.write_earns(conn, _requests(partner, member_ids, "past", 3000)))
        before = await _seq_scans(conn)
        async with conn.transaction():
            results = await batch.write_earns(conn, _requests(partner, member_ids, "chunk", 3000))
        after = await _seq_scans(conn)
        assert all(r is not None for r in results)
        # A scan of a whole table would show here (a hashed anti-join on every table checked)
        assert after == before
        cur = await conn.execute(
            "SELECT count(*) FROM lots l JOIN transactions t ON t.id = l.earn_tx_id "
            "WHERE t.ref LIKE 'chunk-%%'"
        )
        assert (await cur.fetchone()) == (3000,)
    engine = create_engine(db_uri)
    try:
        await assert_invariants(engine)
    finally:
        await engine.dispose()


async def test_the_checks_still_refuse_rows_naming_nothing(db_uri: str) -> None:
    """The probes are the same guards: a lot or an entry naming a transaction that does not
    exist is refused (SQLSTATE 23503 and 23514, as before)."""
    engine = create_engine(db_uri)
    try:
        async with engine.begin() as c:
            member = await members.create(c, name="m")
    finally:
        await engine.dispose()
    async with await psycopg.AsyncConnection.connect(db_uri, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT id FROM accounts WHERE kind = 'wallet' AND owner_id = %s", [member.id]
        )
        row = await cur.fetchone()
        assert row is not None
        wallet = row[0]
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="earn transaction"):
            await conn.execute(
                "INSERT INTO lots (member_id, wallet_id, earn_tx_id, points, remaining, "
                "earned_at, available_at, expires_at, actor) "
                "VALUES (%s, %s, %s, 1, 1, now(), now(), now(), 't')",
                [member.id, wallet, uuid.uuid4()],
            )
        with pytest.raises(psycopg.errors.CheckViolation, match="does not exist"):
            await conn.execute(
                "INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor) "
                "VALUES (%(tx)s, %(w)s, 1, now(), 't'), (%(tx)s, %(w)s, -1, now(), 't')",
                {"tx": uuid.uuid4(), "w": wallet},
            )


async def test_the_migration_edits_every_probe_and_its_downgrade_restores_them(
    db_uri: str,
) -> None:
    """0029 adds `OFFSET 0` to each of the six existence probes (it refuses to run when it
    finds another number) and its downgrade takes them out again."""

    async def probed() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(db_uri) as conn:
            cur = await conn.execute(
                "SELECT proname, prosrc FROM pg_proc WHERE proname = ANY(%s)",
                [["ledger_entries_after_insert", "ledger_lots_after_insert"]],
            )
            return {name: src.count(" OFFSET 0)") for name, src in await cur.fetchall()}

    assert await probed() == {"ledger_entries_after_insert": 2, "ledger_lots_after_insert": 4}
    await asyncio.to_thread(command.downgrade, alembic_config(db_uri), "0028")
    assert await probed() == {"ledger_entries_after_insert": 0, "ledger_lots_after_insert": 0}
    await asyncio.to_thread(upgrade, db_uri)
    assert await probed() == {"ledger_entries_after_insert": 2, "ledger_lots_after_insert": 4}
