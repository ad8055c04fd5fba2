"""The app's settlement scheduler settles under the app's settings, not the environment's."""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import utcnow
from core.settings import Settings
from gateway.app import create_app, settle_with
from settlement import service as settlement
from tests.settlement.helpers import coalition, earn

MOSCOW_MIDNIGHT_UTC = 21  # Europe/Moscow is UTC+3 all year


def daily_in_moscow(uri: str, **more: Any) -> Settings:
    return Settings(
        database_url=uri,
        settlement_period="daily",
        settlement_timezone="Europe/Moscow",
        settlement_currency="EUR",
        settlement_close_delay_minutes=120,
        **more,
    )


async def test_the_scheduler_settles_with_the_apps_settings(
    sengine: AsyncEngine, settle_db: str
) -> None:
    (a,), (m, _) = await coalition(
        sengine, prices=[("0.015", "0.01")], effective_from=datetime(2024, 2, 1, tzinfo=UTC)
    )
    await earn(sengine, m, a, 100, datetime(2024, 3, 2, 10, tzinfo=UTC))
    app = create_app(daily_in_moscow(settle_db), database_url=settle_db)
    # One hour after Moscow's midnight of March 4th: March 3rd ended, but less than the close
    # delay (two hours) ago.
    now = datetime(2024, 3, 3, MOSCOW_MIDNIGHT_UTC + 1, tzinfo=UTC)

    report = await settle_with(sengine, app.state.settings, now=now)

    async with sengine.connect() as conn:
        periods = list(reversed(await settlement.list_periods(conn, first=10)))
    assert report.created == len(periods) == 3  # March 2nd, 3rd, 4th (Moscow days)
    assert {(p.kind, p.currency) for p in periods} == {("daily", "EUR")}
    first = datetime(2024, 3, 1, MOSCOW_MIDNIGHT_UTC, tzinfo=UTC)
    assert [(p.period_start, p.period_end) for p in periods] == [
        (first + timedelta(days=i), first + timedelta(days=i + 1)) for i in range(3)
    ]
    assert [p.status for p in periods] == ["closed", "open", "open"]  # the delay holds March 3rd
    assert report.closed == (periods[0].id,)


async def test_the_serve_scheduler_passes_the_apps_settings(
    sengine: AsyncEngine, settle_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the app's lifespan (SETTLE_EVERY_MINUTES): the job it runs gets the settings the
    app was built with, and the periods it creates follow them; the test process's collector is
    left as it is."""
    (a,), (m, _) = await coalition(
        sengine, prices=[("0.015", "0.01")], effective_from=utcnow() - timedelta(days=30)
    )
    await earn(sengine, m, a, 100, utcnow() - timedelta(days=2))
    ran = asyncio.Event()
    calls: list[dict[str, Any]] = []
    real = settlement.settle_due

    async def observed(engine: AsyncEngine, **kw: Any) -> settlement.SettleReport:
        report = await real(engine, **kw)
        calls.append(kw)
        ran.set()
        return report

    monkeypatch.setattr(settlement, "settle_due", observed)
    app = create_app(daily_in_moscow(settle_db, settle_every_minutes=5), database_url=settle_db)
    frozen = gc.get_freeze_count()
    async with LifespanManager(app):
        await asyncio.wait_for(ran.wait(), timeout=60)
    assert gc.get_freeze_count() == frozen  # only `coalition serve` freezes the collector
    assert {k: calls[0][k] for k in ("granularity", "timezone", "close_delay", "currency")} == {
        "granularity": "daily",
        "timezone": "Europe/Moscow",
        "close_delay": timedelta(minutes=120),
        "currency": "EUR",
    }
    async with sengine.connect() as conn:
        periods = await settlement.list_periods(conn, first=10)
    assert periods and {(p.kind, p.currency) for p in periods} == {("daily", "EUR")}
    assert {p.period_start.hour for p in periods} == {MOSCOW_MIDNIGHT_UTC}
