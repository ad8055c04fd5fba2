"""Closing, sealing, late events as adjustments, the scheduled job, refusals."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from core.clock import utcnow
from core.db import create_engine
from core.settings import get_settings
from settlement import runs as settlement_runs
from settlement import service as settlement
from settlement.errors import (
    ExpiryPending,
    InvalidPeriod,
    PeriodNotEnded,
    PeriodOverlap,
)
from tests.settlement.helpers import coalition, earn, redeem, reverse

MAR = datetime(2024, 3, 1, tzinfo=UTC)
APR = datetime(2024, 4, 1, tzinfo=UTC)
MAY = datetime(2024, 5, 1, tzinfo=UTC)
JUN = datetime(2024, 6, 1, tzinfo=UTC)


async def _state(engine, period_id):
    async with engine.connect() as conn:
        period = await settlement.get_period(conn, period_id=period_id)
        return (
            period,
            await settlement.statements(conn, period_id=period_id),
            await settlement.matrix(conn, period_id=period_id),
            await settlement.adjustments(conn, period_id=period_id),
        )


@pytest.mark.parametrize("margin", [settlement.LATE_MARGIN, timedelta(0)], ids=["recent", "older"])
async def test_late_event_lands_in_next_open_period_as_adjustment(
    sengine, monkeypatch, margin
) -> None:
    # With no margin, the transactions recorded before the close are covered by the period's
    # range alone (as in production, minutes after the end); with the default one, they were
    # recorded in the last minutes and the close lists them one by one.
    monkeypatch.setattr(settlement_runs, "LATE_MARGIN", margin)
    (a, b), (m, _) = await coalition(
        sengine,
        prices=[("0.015", "0.01"), ("0.02", "0.012")],
        effective_from=MAR - timedelta(days=90),
    )
    first = await earn(sengine, m, a, 1000, MAR + timedelta(days=4))
    await redeem(sengine, m, b, 300, MAR + timedelta(days=5))
    async with sengine.begin() as conn:
        march = await settlement.run(
            conn, currency="RUB", period_start=MAR, period_end=APR, actor="operator"
        )
        april = await settlement.run(
            conn, currency="RUB", period_start=APR, period_end=MAY, actor="operator"
        )
    march = await settlement.expire_and_close(sengine, period_id=march.id, actor="operator")
    before = await _state(sengine, march.id)
    assert before[0].status == "closed" and len(before[0].content_hash) == 64
    async with sengine.connect() as conn:
        listed = (
            await conn.execute(
                text("SELECT count(*) FROM settlement_assignments WHERE period_id = :p"),
                {"p": march.id},
            )
        ).scalar_one()
    assert listed == (0 if margin == timedelta(0) else march.transaction_count)

    # Events effective in March, recorded after March was closed.
    late_earn = await earn(sengine, m, a, 400, MAR + timedelta(days=20))
    late_reversal = await reverse(sengine, a, first, 100, MAR + timedelta(days=25))
    await earn(sengine, m, b, 50, APR + timedelta(days=1))  # April's own event

    # Re-running March changes nothing: same statements, same seal, still verifiable.
    async with sengine.begin() as conn:
        again = await settlement.run(
            conn, currency="RUB", period_start=MAR, period_end=APR, actor="operator"
        )
        assert again.content_hash == march.content_hash
        assert await settlement.close(conn, period_id=march.id, actor="operator") == again
    assert await _state(sengine, march.id) == before
    async with sengine.connect() as conn:
        check = await settlement.verify(conn, period_id=march.id)
    assert check.ok and check.computed_hash == march.content_hash

    # April settles them, each naming what it adjusts.
    async with sengine.begin() as conn:
        april = await settlement.run_period(conn, period_id=april.id, actor="operator")
        adj = await settlement.adjustments(conn, period_id=april.id)
        st = {s.partner_id: s for s in await settlement.statements(conn, period_id=april.id)}
    assert {(x.transaction_id, x.adjusts_period_id, x.kind, x.points) for x in adj} == {
        (late_earn, march.id, "earn", 400),
        (late_reversal, march.id, "reversal", 100),
    }
    by_tx = {x.transaction_id: x for x in adj}
    assert by_tx[late_earn].amount.amount == Decimal("-6.00000000")  # 400 x 0.015, owed by A
    assert by_tx[late_reversal].amount.amount == Decimal("1.50000000")  # at the earn's price
    assert st[a].issued_points == 400 and st[a].reversed_points == 100
    assert st[a].adjustment_count == 2 and st[a].adjustment_net.amount == Decimal("-4.50")
    assert st[a].issuance_charge.amount == Decimal("4.50")
    assert st[b].adjustment_count == 0 and st[b].issued_points == 50
    assert april.adjustment_count == 2

    # Closing April freezes the adjustments with it; each transaction is settled exactly once.
    april = await settlement.expire_and_close(sengine, period_id=april.id, actor="operator")
    async with sengine.connect() as conn:
        assert (await settlement.verify(conn, period_id=april.id)).ok
        ids = (
            (
                await conn.execute(
                    text(
                        "SELECT id FROM transactions WHERE effective_at >= :s AND effective_at < :e"
                    ),
                    {"s": MAR, "e": MAY},
                )
            )
            .scalars()
            .all()
        )
        settled = {t: await settlement.settled_in(conn, transaction_id=t) for t in ids}
        adjusts = dict(
            (
                await conn.execute(
                    text(
                        "SELECT transaction_id, adjusts_period_id FROM settlement_assignments "
                        "WHERE adjusts_period_id IS NOT NULL"
                    )
                )
            ).all()
        )
    assert set(settled.values()) == {march.id, april.id}
    assert {t for t, p in settled.items() if p == april.id} >= {late_earn, late_reversal}
    assert adjusts == {late_earn: march.id, late_reversal: march.id}
    # Both periods together count every transaction once.
    assert march.transaction_count + april.transaction_count == len(ids)

    # A late event with no open period after it waits for the next one to exist.
    waiting = await earn(sengine, m, b, 10, MAR + timedelta(days=30))
    async with sengine.begin() as conn:
        assert await settlement.collect_late_events(conn) == 0
        may = await settlement.run(
            conn, currency="RUB", period_start=MAY, period_end=JUN, actor="operator"
        )
        adj = await settlement.adjustments(conn, period_id=may.id)
    assert [(x.transaction_id, x.adjusts_period_id) for x in adj] == [(waiting, march.id)]
    assert await _state(sengine, march.id) == before


async def test_closed_period_is_immutable_in_the_database(sengine) -> None:
    (a,), (m, _) = await coalition(
        sengine, prices=[("0.015", "0.01")], effective_from=MAR - timedelta(days=9)
    )
    await earn(sengine, m, a, 1000, MAR + timedelta(days=4))
    async with sengine.begin() as conn:
        march = await settlement.run(
            conn, currency="RUB", period_start=MAR, period_end=APR, actor="operator"
        )
    march = await settlement.expire_and_close(sengine, period_id=march.id, actor="operator")
    tampering = [
        "UPDATE settlement_statements SET issuance_charge = 0, net = 0 WHERE period_id = :p",
        "DELETE FROM settlement_statements WHERE period_id = :p",
        "UPDATE settlement_periods SET content_hash = 'x' WHERE id = :p",
        "UPDATE settlement_periods SET status = 'open', closed_at = NULL, content_hash = NULL "
        "WHERE id = :p",
        "DELETE FROM settlement_assignments WHERE period_id = :p",
        "INSERT INTO settlement_matrix (period_id, issuer_id, redeemer_id, points, value) "
        "SELECT :p, id, id, 1, 1 FROM partners",
        "DELETE FROM settlement_liability WHERE period_id = :p",
        "TRUNCATE settlement_statements CASCADE",
    ]
    for sql in tampering:
        with pytest.raises(DBAPIError, match=r"closed|insert-only|cannot be truncated"):
            async with sengine.begin() as conn:
                await conn.execute(text(sql), {"p": march.id})
    async with sengine.connect() as conn:
        assert (await settlement.verify(conn, period_id=march.id)).ok


async def test_refusals(sengine) -> None:
    (a,), (m, _) = await coalition(
        sengine, prices=[("0.015", "0.01")], effective_from=MAR - timedelta(days=9)
    )
    now = utcnow()
    start, end = settlement.period_bounds(now, granularity="monthly")
    async with sengine.begin() as conn:
        current = await settlement.run(
            conn, currency="RUB", period_start=start, period_end=end, actor="operator"
        )
        assert current.status == "open"
        with pytest.raises(PeriodNotEnded):
            await settlement.close(conn, period_id=current.id, actor="operator")
    with pytest.raises(PeriodNotEnded):
        await settlement.expire_and_close(sengine, period_id=current.id, actor="operator")
    async with sengine.begin() as conn:
        with pytest.raises(InvalidPeriod, match="started"):
            await settlement.run(
                conn,
                currency="RUB",
                period_start=end + timedelta(days=1),
                period_end=end + timedelta(days=2),
                actor="o",
            )
        with pytest.raises(InvalidPeriod, match="after"):
            await settlement.run(conn, currency="RUB", period_start=MAR, period_end=MAR, actor="o")
        with pytest.raises(InvalidPeriod, match="time zone"):
            await settlement.run(
                conn,
                currency="RUB",
                period_start=datetime(2024, 3, 1),
                period_end=datetime(2024, 4, 1),
                actor="o",
            )
        with pytest.raises(InvalidPeriod, match="at most"):
            await settlement.run(
                conn,
                currency="RUB",
                period_start=MAR,
                period_end=MAR + timedelta(days=400),
                actor="o",
            )
        await settlement.run(conn, currency="RUB", period_start=MAR, period_end=APR, actor="o")
        with pytest.raises(PeriodOverlap, match="overlaps"):
            await settlement.run(
                conn,
                currency="RUB",
                period_start=MAR + timedelta(days=3),
                period_end=APR + timedelta(days=3),
                actor="o",
            )
    # Points expired inside the period must be swept before a plain close.
    await earn(sengine, m, a, 70, MAR - timedelta(days=20), validity_months=1)
    async with sengine.begin() as conn:
        march = await settlement.get_period_by_range(conn, period_start=MAR, period_end=APR)
        with pytest.raises(ExpiryPending):
            await settlement.close(conn, period_id=march.id, actor="operator")
    march = await settlement.expire_and_close(sengine, period_id=march.id, actor="operator")
    async with sengine.connect() as conn:
        (s,) = await settlement.statements(conn, period_id=march.id)
    # Earned before any agreement was in force: reported as unpriced, valued at zero.
    assert (s.breakage_points, s.breakage_value.amount, s.unpriced_events) == (70, Decimal(0), 1)
    assert march.unpriced_events == 1


MONTHLY: dict[str, Any] = {
    "granularity": "monthly",
    "timezone": "UTC",
    "close_delay": timedelta(0),
    "currency": "RUB",
}


async def test_settle_due_creates_runs_and_closes_periods_idempotently(sengine) -> None:
    jan = datetime(2024, 1, 1, tzinfo=UTC)
    feb = datetime(2024, 2, 1, tzinfo=UTC)
    (a, b), (m, _) = await coalition(
        sengine,
        prices=[("0.015", "0.01"), ("0.02", "0.012")],
        effective_from=jan - timedelta(days=30),
    )
    await earn(sengine, m, a, 500, jan + timedelta(days=3), validity_months=1)  # expires Feb 4
    await earn(sengine, m, b, 800, jan + timedelta(days=12, hours=5))
    await redeem(sengine, m, b, 200, feb + timedelta(days=2))
    # An operator's custom period in January: the job fills the gaps around it.
    async with sengine.begin() as conn:
        custom = await settlement.run(
            conn,
            currency="RUB",
            period_start=jan + timedelta(days=10),
            period_end=jan + timedelta(days=20),
            actor="op",
        )

    now = datetime(2024, 3, 10, 12, tzinfo=UTC)
    seen = []
    report = await settlement.settle_due(
        sengine,
        now=now,
        granularity="monthly",
        timezone="UTC",
        close_delay=timedelta(0),
        currency="RUB",
        progress=lambda done, total, label: seen.append((done, total)),
    )
    assert report.created == 4  # Jan 1-11, Jan 21-Feb 1, February, March
    assert len(report.closed) == 4 and report.runs == 5
    assert report.expired_points == 300  # what was left of the January lot, expired Feb 4
    assert seen[-1] == (5, 5)
    async with sengine.connect() as conn:
        periods = await settlement.list_periods(conn, first=10)
        assert [(p.period_start, p.period_end, p.status) for p in reversed(periods)] == [
            (jan, jan + timedelta(days=10), "closed"),
            (jan + timedelta(days=10), jan + timedelta(days=20), "closed"),
            (jan + timedelta(days=20), feb, "closed"),
            (feb, datetime(2024, 3, 1, tzinfo=UTC), "closed"),
            (datetime(2024, 3, 1, tzinfo=UTC), APR, "open"),
        ]
        assert periods[-2].id == custom.id
        feb_period = periods[1]
        (sa,) = [
            s
            for s in await settlement.statements(conn, period_id=feb_period.id)
            if s.partner_id == a
        ]
        assert sa.breakage_points == 300  # the breakage lands in the month the points expired
        hashes = {p.id: p.content_hash for p in periods}
        for p in periods:
            assert (await settlement.verify(conn, period_id=p.id)).ok == (p.status == "closed")

    again = await settlement.settle_due(sengine, now=now + timedelta(minutes=5), **MONTHLY)
    assert (again.created, again.closed, again.runs) == (0, (), 1)
    async with sengine.connect() as conn:
        assert {
            p.id: p.content_hash for p in await settlement.list_periods(conn, first=10)
        } == hashes

    later = await settlement.settle_due(sengine, now=APR + timedelta(hours=1), **MONTHLY)
    assert later.created == 1 and len(later.closed) == 1

    # Two jobs at once: one waits its turn (it reports that it skipped).
    results = await asyncio.gather(
        *[settlement.settle_due(sengine, now=APR + timedelta(hours=2), **MONTHLY) for _ in range(3)]
    )
    assert sum(not r.skipped for r in results) >= 1


def test_period_bounds_in_a_time_zone() -> None:
    at = datetime(2024, 3, 31, 22, 30, tzinfo=UTC)  # already April 1st in Moscow
    assert settlement.period_bounds(at, granularity="monthly", timezone="Europe/Moscow") == (
        datetime(2024, 3, 31, 21, tzinfo=UTC),
        datetime(2024, 4, 30, 21, tzinfo=UTC),
    )
    assert settlement.period_bounds(at, granularity="weekly") == (
        datetime(2024, 3, 25, tzinfo=UTC),
        datetime(2024, 4, 1, tzinfo=UTC),
    )
    # A day across a daylight-saving change is 23 hours long.
    assert settlement.period_bounds(
        datetime(2024, 3, 31, 12, tzinfo=UTC), granularity="daily", timezone="Europe/Berlin"
    ) == (datetime(2024, 3, 30, 23, tzinfo=UTC), datetime(2024, 3, 31, 22, tzinfo=UTC))


def test_cli_settle(settle_db, monkeypatch) -> None:
    async def seed() -> None:
        engine = create_engine(settle_db)
        try:
            (a,), (m, _) = await coalition(
                engine, prices=[("0.015", "0.01")], effective_from=MAR - timedelta(days=9)
            )
            await earn(engine, m, a, 100, MAR + timedelta(days=2))
        finally:
            await engine.dispose()

    asyncio.run(seed())
    monkeypatch.setenv("DATABASE_URL", settle_db)
    monkeypatch.setenv("SETTLEMENT_PERIOD", "weekly")
    get_settings.cache_clear()
    try:
        from gateway.cli import app

        runner = CliRunner()
        result = runner.invoke(app, ["settle", "--at", "2024-03-20T00:00:00"])
        assert result.exit_code == 0, result.output
        outcome = json.loads(result.output.strip().splitlines()[-1])
        assert outcome["created"] == 4 and len(outcome["closed"]) == 3  # weeks from Feb 26
        again = runner.invoke(app, ["settle", "--at", "2024-03-20T00:00:00"])
        assert json.loads(again.output.strip().splitlines()[-1])["closed"] == []
        bad = runner.invoke(app, ["settle", "--period", "hourly"])
        assert bad.exit_code == 2 and "period must be one of" in bad.output
    finally:
        get_settings.cache_clear()
