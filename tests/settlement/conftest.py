"""Settlement fixtures: a fresh database per test (copied from the session's migrated template).

Settlement reads every ledger row of a time range and records when transactions were recorded,
so these tests commit each ledger call in its own unit of work (as the API does) instead of
running inside one rolled-back transaction; a database of their own keeps them isolated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_engine


@pytest.fixture
def settle_db(fresh_database: str) -> str:
    """The URI of a new, empty, migrated database of this test's own."""
    return fresh_database


@pytest.fixture
async def sengine(settle_db: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's own database."""
    engine = create_engine(settle_db, pool_size=5, max_overflow=10)
    try:
        yield engine
    finally:
        await engine.dispose()
