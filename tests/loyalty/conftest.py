"""Use-case fixtures: a plain `Services` runtime (as the CLI, imports and webhooks run the use
cases), and a partner in force."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from core.db import create_driver_pool, create_engine
from core.settings import Settings
from ledger.batch import EarnBatcher
from loyalty import terms
from loyalty.caches import Caches
from loyalty.runtime import Services


@pytest.fixture
async def services(engine, db_uri) -> AsyncIterator[Services]:
    pool = create_driver_pool(db_uri, max_size=4)
    await pool.open(wait=True)
    earns = EarnBatcher(pool)
    try:
        yield Services(
            engine=engine,
            pool=pool,
            earns=earns,
            settings=Settings(database_url=db_uri),
            caches=Caches(),
        )
    finally:
        await earns.drain()
        await pool.close()


@pytest.fixture
async def fresh_services(fresh_database: str) -> AsyncIterator[Services]:
    """`services` over a database of the test's own (for what is global: the tier ladder,
    coalition-wide offers)."""
    engine = create_engine(fresh_database, pool_size=5, max_overflow=5)
    pool = create_driver_pool(fresh_database, max_size=4)
    await pool.open(wait=True)
    earns = EarnBatcher(pool)
    try:
        yield Services(
            engine=engine,
            pool=pool,
            earns=earns,
            settings=Settings(database_url=fresh_database),
            caches=Caches(),
        )
    finally:
        await earns.drain()
        await pool.close()
        await engine.dispose()


async def unhashed(fn: Callable[[str], str], password: str) -> str:
    """Hash in place: the tests' hasher is cheap (tests/conftest.py)."""
    return fn(password)


async def partner_in_force(
    rt: Services, name: str, *, agreement: bool = True, base_rate: str = "1"
) -> uuid.UUID:
    """A partner with an agreement in force since yesterday (unless not) and an earn rule of
    `base_rate` points per unit, no return window."""
    p = await terms.create_partner(rt, name=name, category="fuel", currency="RUB")
    if agreement:
        await terms.set_agreement(
            rt,
            actor="test",
            partner_id=str(p.id),
            issue_price="1.20",
            redemption_price="0.95",
            effective_from=datetime.now(UTC) - timedelta(days=1),
        )
    await terms.set_earn_rule(
        rt,
        actor="test",
        partner_id=str(p.id),
        base_rate=base_rate,
        category_rates=[],
        hold_days=0,
        max_redeem_share="1",
        max_points_per_transaction=None,
    )
    return p.id
