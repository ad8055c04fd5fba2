"""A bad earn never poisons a group-commit batch (issue 9, item 15): text PostgreSQL cannot store
(NUL, an unpaired surrogate) is refused before the earn joins a batch, so the other earns of the
burst still commit together, none of them falling back to the single path."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_driver_pool
from ledger import service as ledger
from ledger.batch import EarnBatcher
from ledger.errors import LedgerValidation
from members import service as members
from partners import service as partners


@pytest.fixture
async def pool(db_uri: str) -> AsyncIterator[AsyncConnectionPool]:
    p = create_driver_pool(db_uri, max_size=4)
    await p.open(wait=True)
    yield p
    await p.close()


BAD_FIELDS = [
    ("ref", "order-\x00"),
    ("ref", "order-\ud800"),
    ("category", "fuel\x00"),
    ("category", "\udfff"),
    ("currency", "RU\x00"),
    ("idempotency_key", "key-\x00"),
    ("idempotency_key", "key-\ud83d"),
]


IDS = [f + ("-nul" if "\x00" in v else "-surrogate") for f, v in BAD_FIELDS]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=IDS)
async def test_an_earn_with_unstorable_text_is_refused_before_its_batch(
    engine: AsyncEngine, pool: AsyncConnectionPool, field: str, value: str
) -> None:
    async with engine.begin() as c:
        p = await partners.create(c, name="Batch text", category="shop", currency="RUB")
        ms = [await members.create(c, name=f"m{i}") for i in range(6)]
    batcher = EarnBatcher(pool, max_batch=64, max_in_flight=1)
    calls = [
        {
            "actor": "client-a",
            "idempotency_key": f"k-{uuid.uuid4()}",
            "member_id": m.id,
            "partner_id": p.id,
            "points": 10 + i,
            "ref": f"o-{uuid.uuid4()}",
            "amount": None,
            "currency": "RUB",
            "category": None,
        }
        for i, m in enumerate(ms)
    ]
    calls[2][field] = value
    results = await asyncio.gather(*(batcher.earn(**c) for c in calls), return_exceptions=True)

    assert isinstance(results[2], LedgerValidation), results[2]
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 2), results
    # The five good earns committed in batches: no failed batch, nothing retried alone.
    assert batcher.stats.failed_batches == 0 and batcher.stats.single_path == 0
    assert batcher.stats.batched_earns == 5
    async with engine.connect() as c:
        wallets = [(await ledger.balance(c, member_id=m.id)).wallet for m in ms]
    assert wallets == [10, 11, 0, 13, 14, 15]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=IDS)
async def test_the_single_path_refuses_unstorable_text_as_validation(
    engine: AsyncEngine, field: str, value: str
) -> None:
    async with engine.begin() as c:
        p = await partners.create(c, name="Single text", category="shop", currency="RUB")
        m = await members.create(c, name="m")
    call = {
        "actor": "client-a",
        "idempotency_key": f"k-{uuid.uuid4()}",
        "member_id": m.id,
        "partner_id": p.id,
        "points": 10,
        "ref": "o-1",
        "currency": "RUB",
        field: value,
    }
    with pytest.raises(LedgerValidation, match="NUL"):
        async with engine.begin() as c:
            await ledger.earn(c, **call)
