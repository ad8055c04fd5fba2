"""Status tiers with exact numbers: the qualifying spend over the rolling 12 months (refunds
subtracted), the upgrade (at exactly the threshold, never down, one change under concurrency),
the review (up and down, idempotent), and the ladder's checks.

Each test has a database of its own: the ladder is global and the review reads every member."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import create_engine
from core.errors import DomainError, ValidationError
from core.money import Money
from ledger import service as ledger
from ledger.earn import add_months
from loyalty import tiers as tier_cases
from members import service as members
from members import tiers
from members.tiers import TierSpec
from partners import service as partners

RUB = "RUB"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LADDER = [
    TierSpec("Silver", Money.parse("20000", RUB), "1.25"),
    TierSpec("Gold", Money.parse("60000", RUB), "1.5"),
    TierSpec("Platinum", Money.parse("150000", RUB), "2"),
]


@pytest.fixture
async def db(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(fresh_database, pool_size=5, max_overflow=5)
    try:
        yield eng
    finally:
        await eng.dispose()


async def setup(engine: AsyncEngine, n: int = 1) -> tuple[uuid.UUID, list[uuid.UUID]]:
    async with engine.begin() as conn:
        p = await partners.create(conn, name="Shop", category="shop", currency=RUB)
        ms = [(await members.create(conn)).id for _ in range(n)]
        await tiers.set_tiers(conn, tiers=LADDER, currency=RUB, actor="test")
    return p.id, ms


async def buy(
    engine: AsyncEngine,
    partner: uuid.UUID,
    member: uuid.UUID,
    amount: str,
    at: datetime,
    *,
    currency: str = RUB,
    points: int = 100,
) -> uuid.UUID:
    async with engine.begin() as conn:
        r = await ledger.earn(
            conn,
            actor="test",
            idempotency_key=uuid.uuid4().hex,
            member_id=member,
            partner_id=partner,
            points=points,
            ref=uuid.uuid4().hex,
            amount=Decimal(amount),
            currency=currency,
            at=at,
        )
    return r.transaction_id


async def spend(engine: AsyncEngine, member: uuid.UUID, at: datetime) -> Decimal:
    async with engine.connect() as conn:
        return (await tiers.qualifying_spend(conn, member_id=member, at=at, currency=RUB)).amount


async def held(engine: AsyncEngine, member: uuid.UUID) -> str | None:
    async with engine.connect() as conn:
        return (await tiers.member_tier(conn, member_id=member)).tier


async def changes(engine: AsyncEngine, member: uuid.UUID) -> list[tuple[str | None, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT to_tier, reason FROM member_tier_changes WHERE member_id = :m ORDER BY id"
            ),
            {"m": member},
        )
        return [(r[0], r[1]) for r in rows]


async def upgrade(engine: AsyncEngine, member: uuid.UUID, at: datetime) -> str | None:
    async with engine.begin() as conn:
        t = await tiers.upgrade_if_due(conn, member_id=member, at=at, currency=RUB)
    return None if t is None else t.name


async def test_spend_counts_the_rolling_twelve_months_in_the_settlement_currency(db) -> None:
    p, (m,) = await setup(db)
    year_ago = add_months(NOW, -12)
    await buy(db, p, m, "1000.00", year_ago - timedelta(days=1))  # 12 months + 1 day: out
    await buy(db, p, m, "2000.00", year_ago + timedelta(days=1))
    await buy(db, p, m, "300.50", NOW - timedelta(hours=1))
    await buy(db, p, m, "999.00", NOW + timedelta(hours=1))  # after the instant: out
    async with db.begin() as conn:
        usd = await partners.create(conn, name="US", category="shop", currency="USD")
    await buy(db, usd.id, m, "500.00", NOW - timedelta(days=2), currency="USD")  # not RUB: out
    assert await spend(db, m, NOW) == Decimal("2300.50")
    # A day later the earn of a year ago plus a day is still in; two days later it is out.
    assert await spend(db, m, NOW + timedelta(days=2, hours=2)) == Decimal("1299.50")


async def test_refunds_are_subtracted_pro_rata_to_the_points_reversed(db) -> None:
    p, (m,) = await setup(db)
    a = await buy(db, p, m, "10000.00", NOW - timedelta(days=10), points=1000)
    b = await buy(db, p, m, "5000.00", NOW - timedelta(days=5), points=500)
    async with db.begin() as conn:
        for tx, pts in ((a, 300), (b, 500)):  # 30 % of the first, all of the second
            await ledger.reverse_earn(
                conn,
                actor="test",
                idempotency_key=uuid.uuid4().hex,
                partner_id=p,
                earn_transaction_id=tx,
                points=pts,
                at=NOW - timedelta(days=1),
            )
    assert await spend(db, m, NOW) == Decimal("7000.00")
    # Before the refunds were effective they did not count.
    assert await spend(db, m, NOW - timedelta(days=2)) == Decimal("15000.00")


async def test_upgrade_at_exactly_the_threshold_and_never_down(db) -> None:
    p, (m,) = await setup(db)
    await buy(db, p, m, "19999.99", NOW - timedelta(days=3))
    assert await upgrade(db, m, NOW - timedelta(days=3)) is None
    assert await held(db, m) is None
    await buy(db, p, m, "0.01", NOW - timedelta(days=2))  # exactly 20,000.00
    assert await upgrade(db, m, NOW - timedelta(days=2)) == "Silver"
    await buy(db, p, m, "40000.00", NOW - timedelta(days=1))  # 60,000.00: Gold
    assert await upgrade(db, m, NOW - timedelta(days=1)) == "Gold"
    assert await upgrade(db, m, NOW) is None  # nothing new
    # A year later the spend is gone, but an upgrade never lowers the tier.
    assert await upgrade(db, m, add_months(NOW, 13)) is None
    assert await held(db, m) == "Gold"
    assert await changes(db, m) == [("Silver", "upgrade"), ("Gold", "upgrade")]


async def test_review_downgrades_upgrades_and_is_idempotent(db) -> None:
    p, (a, b, c) = await setup(db, 3)
    await buy(db, p, a, "70000.00", add_months(NOW, -14))  # Gold a while ago
    assert await upgrade(db, a, add_months(NOW, -14)) == "Gold"
    await buy(db, p, a, "25000.00", NOW - timedelta(days=30))  # the last 12 months: Silver
    await buy(db, p, b, "150000.00", NOW - timedelta(days=30))  # Platinum, never upgraded
    # c bought nothing: untiered, unchanged.
    report = await tier_cases.review(db, as_of=NOW, currency=RUB, chunk=2)
    assert report == tiers.ReviewReport(reviewed=3, upgraded=1, downgraded=1)
    assert [await held(db, x) for x in (a, b, c)] == ["Silver", "Platinum", None]
    again = await tier_cases.review(db, as_of=NOW, currency=RUB, chunk=2)
    assert again == tiers.ReviewReport(reviewed=3, upgraded=0, downgraded=0)
    assert await changes(db, a) == [("Gold", "upgrade"), ("Silver", "review")]
    assert await changes(db, b) == [("Platinum", "review")]
    # The next year's review with nothing bought drops everyone to untiered.
    later = await tier_cases.review(db, as_of=add_months(NOW, 13), currency=RUB)
    assert later == tiers.ReviewReport(reviewed=3, upgraded=0, downgraded=2)
    assert [await held(db, x) for x in (a, b, c)] == [None, None, None]


async def test_review_in_one_connection_reports_progress_per_chunk(db) -> None:
    p, ms = await setup(db, 5)
    for i, m in enumerate(ms[1:], start=1):
        await buy(db, p, m, str(20000 * i), NOW - timedelta(days=1))
    seen: list[tiers.ReviewReport] = []
    async with db.begin() as conn:
        report = await tiers.review(conn, as_of=NOW, currency=RUB, chunk=2, progress=seen.append)
    # Spends 0, 20,000, 40,000, 60,000, 80,000: untiered, Silver twice, Gold twice.
    assert report == tiers.ReviewReport(reviewed=5, upgraded=4, downgraded=0)
    assert [r.reviewed for r in seen] == [2, 4, 5]
    assert [await held(db, m) for m in ms] == [None, "Silver", "Silver", "Gold", "Gold"]


async def test_review_leaves_an_upgrade_later_than_its_instant(db) -> None:
    p, (m,) = await setup(db)
    await buy(db, p, m, "60000.00", NOW - timedelta(days=1))
    assert await upgrade(db, m, NOW - timedelta(days=1)) == "Gold"
    # A review as of before that earn qualifies nothing, but the upgrade is newer than it.
    report = await tier_cases.review(db, as_of=NOW - timedelta(days=2), currency=RUB)
    assert report == tiers.ReviewReport(reviewed=1, upgraded=0, downgraded=0)
    assert await held(db, m) == "Gold"


async def _waiting_on_a_lock(engine: AsyncEngine, task: asyncio.Task[object]) -> None:
    """Until `task` is done or some backend waits on a lock (PostgreSQL's own view)."""
    async with engine.connect() as conn:
        while not task.done():
            waiting = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
            await conn.rollback()
            if waiting:
                return
            await asyncio.sleep(0)


async def test_concurrent_upgrades_of_one_member_record_one_change(db) -> None:
    p, (m,) = await setup(db)
    await buy(db, p, m, "20000.00", NOW - timedelta(days=1))
    first: AsyncConnection
    async with db.connect() as first:
        await first.begin()
        t = await tiers.upgrade_if_due(first, member_id=m, at=NOW, currency=RUB)
        assert t is not None and t.name == "Silver"
        second = asyncio.ensure_future(upgrade(db, m, NOW))
        await _waiting_on_a_lock(db, second)
        await first.commit()
    assert await second is None
    assert await changes(db, m) == [("Silver", "upgrade")]


async def test_a_fresh_database_has_no_tiers(fresh_database: str) -> None:
    eng = create_engine(fresh_database)
    try:
        async with eng.begin() as conn:
            m = await members.create(conn)
            assert (await tiers.ladder(conn)).tiers == ()
            assert await tiers.upgrade_if_due(conn, member_id=m.id, at=NOW, currency=RUB) is None
        report = await tier_cases.review(eng, as_of=NOW, currency=RUB)
        assert report == tiers.ReviewReport(0, 0, 0)
    finally:
        await eng.dispose()


@pytest.mark.parametrize(
    ("ladder", "field"),
    [
        ([TierSpec("A", Money.parse("10", RUB), "0.99")], "tiers.0"),
        ([TierSpec("A", Money.parse("10", RUB), "NaN")], "tiers.0"),
        ([TierSpec("A", Money.parse("10", RUB), "Infinity")], "tiers.0"),
        ([TierSpec("A", Money.parse("10", RUB), "x")], "tiers.0"),
        ([TierSpec("A", Money.parse("10", RUB), "11")], "tiers.0"),
        ([TierSpec("A", Money.parse("0", RUB), "1")], "tiers.0.threshold"),
        ([TierSpec("A", Money.parse("10", "USD"), "1")], "tiers.0.threshold"),
        ([TierSpec(" ", Money.parse("10", RUB), "1")], "tiers.0.name"),
        ([TierSpec("A\x00", Money.parse("10", RUB), "1")], "tiers.0.name"),
        (
            [
                TierSpec("A", Money.parse("10", RUB), "1"),
                TierSpec("a", Money.parse("20", RUB), "1"),
            ],
            "tiers.1.name",
        ),
        (
            [
                TierSpec("A", Money.parse("20", RUB), "1"),
                TierSpec("B", Money.parse("20", RUB), "1"),
            ],
            "tiers.1.threshold",
        ),
        (
            [TierSpec(f"T{i}", Money.parse(str(i + 1), RUB), "1") for i in range(21)],
            "tiers",
        ),
    ],
)
def test_bad_ladders_are_refused(ladder: list[TierSpec], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        tiers.check_ladder(ladder, currency=RUB)
    assert exc.value.details["field"] == field


async def test_a_future_review_is_refused(db) -> None:
    with pytest.raises(DomainError) as exc:
        await tier_cases.review(db, as_of=datetime.now(UTC) + timedelta(days=1), currency=RUB)
    assert exc.value.code == "VALIDATION"


async def test_one_review_at_a_time(db) -> None:
    async with db.connect() as holder:
        await holder.execute(
            text("SELECT pg_advisory_lock(:k)"), {"k": tier_cases.TIER_REVIEW_LOCK}
        )
        await holder.commit()
        with pytest.raises(tier_cases.ReviewRunning):
            await tier_cases.review(db, as_of=NOW, currency=RUB)
        await holder.execute(
            text("SELECT pg_advisory_unlock(:k)"), {"k": tier_cases.TIER_REVIEW_LOCK}
        )
        await holder.commit()


def test_coalition_review_tiers(fresh_database, monkeypatch) -> None:
    from typer.testing import CliRunner

    from gateway import cli

    async def world() -> uuid.UUID:
        eng = create_engine(fresh_database)
        try:
            p, (m,) = await setup(eng)
            await buy(eng, p, m, "60000.00", NOW - timedelta(days=1))
            return m
        finally:
            await eng.dispose()

    m = asyncio.run(world())
    monkeypatch.setattr(cli, "_url", lambda: fresh_database)
    runner = CliRunner()
    first = runner.invoke(cli.app, ["review-tiers", "--as-of", "2025-06-01T12:00:00+00:00"])
    again = runner.invoke(cli.app, ["review-tiers", "--as-of", "2025-06-01T12:00:00+00:00"])
    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    assert first.output.splitlines()[-1] == (
        '{"asOf": "2025-06-01T12:00:00+00:00", "reviewed": 1, "upgraded": 1, "downgraded": 0}'
    )
    assert '"upgraded": 0, "downgraded": 0' in again.output.splitlines()[-1]
    future = runner.invoke(cli.app, ["review-tiers", "--as-of", "2999-01-01T00:00:00+00:00"])
    assert future.exit_code == 2

    async def held_now() -> str | None:
        eng = create_engine(fresh_database)
        try:
            return await held(eng, m)
        finally:
            await eng.dispose()

    assert asyncio.run(held_now()) == "Gold"


@pytest.mark.parametrize(
    ("now", "day", "due"),
    [
        (datetime(2026, 1, 1, 5, tzinfo=UTC), "01-01", datetime(2026, 1, 1, tzinfo=UTC)),
        (datetime(2026, 1, 2, 0, tzinfo=UTC), "01-01", None),
        (datetime(2026, 3, 15, 23, tzinfo=UTC), "03-15", datetime(2026, 3, 15, tzinfo=UTC)),
        (datetime(2026, 1, 1, 5, tzinfo=UTC), "", None),
    ],
)
def test_the_review_day_of_serve(now: datetime, day: str, due: datetime | None) -> None:
    from gateway.app import tier_review_due

    assert tier_review_due(now, day) == due


@pytest.mark.parametrize("day", ["1-1", "13-01", "02-29", "01-32", "x"])
def test_a_bad_review_day_is_refused(day: str) -> None:
    from pydantic import ValidationError as SettingsError

    from core.settings import Settings

    with pytest.raises(SettingsError):
        Settings(tier_review_day=day)


async def test_serve_reviews_tiers_on_the_review_day(fresh_database, monkeypatch) -> None:
    """With TIER_REVIEW_DAY set to today, the app's lifespan runs the review as of 00:00 UTC
    today (observed through its call); off when the setting is empty."""
    from asgi_lifespan import LifespanManager

    from core.settings import Settings
    from gateway.app import create_app

    ran = asyncio.Event()
    instants: list[datetime] = []
    real = tier_cases.review

    async def observed(engine: AsyncEngine, **kw: object) -> tiers.ReviewReport:
        report = await real(engine, **kw)  # type: ignore[arg-type]
        instants.append(kw["as_of"])  # type: ignore[arg-type]
        ran.set()
        return report

    monkeypatch.setattr(tier_cases, "review", observed)
    today = datetime.now(UTC)
    off = create_app(Settings(database_url=fresh_database), database_url=fresh_database)
    async with LifespanManager(off):
        assert not ran.is_set()
    on = create_app(
        Settings(database_url=fresh_database, tier_review_day=today.strftime("%m-%d")),
        database_url=fresh_database,
    )
    async with LifespanManager(on):
        await asyncio.wait_for(ran.wait(), timeout=60)
    assert instants == [datetime(today.year, today.month, today.day, tzinfo=UTC)]
