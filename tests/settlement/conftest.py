"""Settlement fixtures: a fresh database per test (copied from a migrated template).

Settlement reads every ledger row of a time range and records when transactions were recorded,
so these tests commit each ledger call in its own unit of work (as the API does) instead of
running inside one rolled-back transaction; a database of their own keeps them isolated.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_engine
from tests.db import create_test_database, drop_database, with_database


@pytest.fixture(scope="session")
def settlement_template() -> Iterator[tuple[str, str]]:
    admin, uri = create_test_database(prefix="coalition_settle_tpl")
    yield admin, uri
    drop_database(admin, uri)


@pytest.fixture
def settle_db(settlement_template: tuple[str, str]) -> Iterator[str]:
    """The URI of a new, empty, migrated database of this test's own."""
    admin, template = settlement_template
    name = f"coalition_settle_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(template).database}"')
    uri = with_database(admin, name)
    try:
        yield uri
    finally:
        drop_database(admin, uri)


@pytest.fixture
async def sengine(settle_db: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's own database."""
    engine = create_engine(settle_db, pool_size=5, max_overflow=10)
    try:
        yield engine
    finally:
        await engine.dispose()
