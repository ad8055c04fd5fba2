"""Fixtures: a real PostgreSQL (server or embedded), databases copied from a migrated template.

The ledger and core tests share the session's database inside rolled-back transactions
(`conn`); whatever commits and reads more than its own rows (gateway modules, settlement,
concurrency) gets a database of its own (`fresh_database`, tests/gateway/conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import settings as hyp_settings
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import create_engine
from tests.db import create_test_database, drop_database, drop_template

hyp_settings.register_profile("ci", deadline=None, print_blob=True)
hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """argon2 at production cost makes every registration ~50 ms: tests use the minimum."""
    from argon2 import PasswordHasher

    from members import passwords

    real = passwords.hasher
    passwords.hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    yield
    passwords.hasher = real


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """Print the order's seed even under -q, so that a failure can be replayed."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(f"test order: replay with -p randomly --randomly-seed={seed}")


@pytest.fixture(scope="session", autouse=True)
def migrated_template() -> Iterator[None]:
    """The session's migrated template (tests.db makes it on first use), dropped at the end."""
    yield
    drop_template()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """The URI of a new, migrated database of this test's own (dropped after it)."""
    admin, uri = create_test_database("coalition_fresh")
    try:
        yield uri
    finally:
        drop_database(admin, uri)


@pytest.fixture(scope="session")
def database() -> Iterator[tuple[str, str]]:
    admin, uri = create_test_database()
    yield admin, uri
    drop_database(admin, uri)


@pytest.fixture(scope="session")
def db_uri(database: tuple[str, str]) -> str:
    return database[1]


@pytest.fixture(scope="session")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=20, max_overflow=60)
    yield eng
    await eng.dispose()


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that is rolled back after the test."""
    async with engine.connect() as c:
        tx = await c.begin()
        try:
            yield c
        finally:
            await tx.rollback()


class StatementCounter:
    """Counts SQL statements sent on an engine (round trips of the use case under test)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        self.statements.append(statement)

    @property
    def count(self) -> int:
        return len(self.statements)


@pytest.fixture
def count_statements(engine: AsyncEngine) -> Iterator[StatementCounter]:
    counter = StatementCounter()
    event.listen(engine.sync_engine, "before_cursor_execute", counter)
    yield counter
    event.remove(engine.sync_engine, "before_cursor_execute", counter)
