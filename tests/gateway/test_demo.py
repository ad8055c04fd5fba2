"""The demo coalition: every screen has data, including a closed settlement period."""

from __future__ import annotations

from sqlalchemy import text

from core.db import create_engine
from core.settings import Settings
from gateway import demo
from tests.db import create_test_database, drop_database


async def test_demo_loads_once_with_history_and_a_closed_period():
    admin, uri = create_test_database("coalition_demo")
    engine = create_engine(uri)
    try:
        assert await demo.is_empty(engine)
        report = await demo.load(engine, Settings(database_url=uri))
        assert not await demo.is_empty(engine)
        assert len(report.partners) == 5 and len(report.members) == 7 and report.earns > 50
        assert report.redemptions > 5 and report.periods.closed
        assert report.offers == 4 and report.promo_codes_applied == 1
        # The README's earn example uses anna's card.
        assert report.members["anna@example.com"] == "7000000000000005"
        async with engine.connect() as conn:
            kinds = dict(
                (
                    await conn.execute(
                        text("SELECT kind, count(*) FROM transactions GROUP BY kind")
                    )
                ).all()
            )
            closed = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM settlement_periods WHERE status = 'closed' AND content_hash IS NOT NULL"
                    )
                )
            ).scalar_one()
            # Agreements entered in the same unit of work as events price them (one clock).
            unpriced = (
                await conn.execute(
                    text("SELECT coalesce(sum(unpriced_events), 0) FROM settlement_periods")
                )
            ).scalar_one()
            unbalanced = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM (SELECT transaction_id FROM entries GROUP BY 1 HAVING sum(amount) <> 0) x"
                    )
                )
            ).scalar_one()
            # Two members joined with referral codes and earned: both sides got the bonus.
            referrals = (
                await conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE paid_at IS NOT NULL), count(*) "
                        "FROM referrals"
                    )
                )
            ).one()
            bonuses = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT category, sum(points) FROM transactions WHERE kind = 'bonus' "
                            "GROUP BY category"
                        )
                    )
                ).all()
            )
        assert kinds["earn"] == report.earns and kinds["capture"] == report.redemptions
        assert (report.referrals, report.transfers, report.bonuses) == (2, 2, 1)
        assert tuple(referrals) == (2, 2) and kinds["transfer"] == 2
        signup, referral = demo.SIGNUP_POINTS, demo.REFERRAL_POINTS
        assert bonuses == {"signup": 2 * signup, "referral": 4 * referral, "Film review": 50}
        # The catalog: rewards of every kind, voucher codes, and the members' redemptions.
        assert report.rewards == len(demo.REWARDS) == 7
        assert report.reward_redemptions == len(demo.REDEMPTIONS) == kinds["reward"] == 4
        async with engine.connect() as conn:
            by_kind = dict(
                (await conn.execute(text("SELECT kind, count(*) FROM rewards GROUP BY kind"))).all()
            )
            handed = (
                await conn.execute(
                    text(
                        "SELECT m.email, r.voucher_code FROM reward_redemptions r "
                        "JOIN members m ON m.id = r.member_id WHERE r.voucher_code IS NOT NULL"
                    )
                )
            ).all()
            unused = (
                await conn.execute(
                    text("SELECT count(*) FROM voucher_codes WHERE redemption_id IS NULL")
                )
            ).scalar_one()
            # Offers: anna activated the coupon, boris applied WELCOME10.
            activated = (
                await conn.execute(
                    text(
                        "SELECT m.email, o.name, a.via FROM offer_activations a "
                        "JOIN members m ON m.id = a.member_id JOIN offers o ON o.id = a.offer_id "
                        "ORDER BY m.email"
                    )
                )
            ).all()
            wide = (
                await conn.execute(text("SELECT count(*) FROM offers WHERE partner_id IS NULL"))
            ).scalar_one()
            # The coalition-wide +50 applied to the referred members' first earns (today's):
            # the operator's points, in lots with no issuer.
            operator_earns = (
                await conn.execute(
                    text(
                        "SELECT count(*), coalesce(sum(t.operator_points), 0), "
                        "(SELECT coalesce(sum(l.points), 0) FROM lots l JOIN transactions e "
                        " ON e.id = l.earn_tx_id AND e.kind = 'earn' "
                        " WHERE l.issuer_id IS NULL AND l.transfer_tx_id IS NULL) "
                        "FROM transactions t WHERE t.kind = 'earn' AND t.operator_points > 0"
                    )
                )
            ).one()
            held = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT t.tier_name, count(*) FROM member_tiers t GROUP BY t.tier_name"
                        )
                    )
                ).all()
            )
        # The ladder and its review: members in every tier (their purchases of 120 days).
        assert report.tier_review is not None
        assert report.tier_review.reviewed == 7 and report.tier_review.downgraded == 0
        assert held == {"Silver": 3, "Gold": 3, "Platinum": 1}
        assert by_kind == {"VOUCHER": 2, "GOODS": 3, "CHARITY": 2}
        assert [tuple(h) for h in handed] == [("anna@example.com", "WASH-0001")]
        assert unused == 2 * demo.CODES_PER_VOUCHER - 1
        assert [tuple(r) for r in activated] == [
            ("anna@example.com", "x5 points on the car wash", "APP"),
            ("boris@example.com", "Welcome: 100 bonus points", "PROMO_CODE"),
        ]
        assert wide == 1 and tuple(operator_earns) == (2, 100, 100)
        assert closed >= 3 and unbalanced == 0 and unpriced == 0
    finally:
        await engine.dispose()
        drop_database(admin, uri)


async def test_serve_can_run_settlement_on_a_schedule(monkeypatch):
    """With SETTLE_EVERY_MINUTES set, the app's lifespan runs the settlement job (here: the
    first run, observed through its report); off by default."""
    import asyncio

    from asgi_lifespan import LifespanManager

    from gateway.app import create_app
    from settlement import service as settlement

    admin, uri = create_test_database("coalition_sched")
    ran = asyncio.Event()
    reports = []
    real = settlement.settle_due

    async def observed(engine, **kw):
        report = await real(engine, **kw)
        reports.append(report)
        ran.set()
        return report

    monkeypatch.setattr(settlement, "settle_due", observed)
    try:
        off = create_app(Settings(database_url=uri), database_url=uri)
        async with LifespanManager(off):
            assert not ran.is_set()
        on = create_app(Settings(database_url=uri, settle_every_minutes=5), database_url=uri)
        async with LifespanManager(on):
            await asyncio.wait_for(ran.wait(), timeout=60)
        assert len(reports) == 1 and not reports[0].skipped  # ran once, holding the job lock
    finally:
        drop_database(admin, uri)
