"""The demo coalition: a few partners with rules, prices and API clients, members with a few
months of history, so that a new user sees every screen with data in it.

Demo credentials are fixed and printed: they are for a local demo database only.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from catalog import service as catalog
from catalog.service import RewardDraft
from core.clock import utcnow
from core.db import create_driver_pool
from core.settings import Settings
from ledger import service as ledger
from ledger.batch import EarnBatcher
from loyalty import bonuses, offers, register, rewards, tiers, transfers
from loyalty import earn as earning
from loyalty.caches import Caches
from loyalty.runtime import Services
from members import operators
from members import service as members
from members.cards import luhn_check_digit
from members.passwords import hash_password
from members.service import MemberRecord
from members.tiers import ReviewReport
from partners import clients
from partners import service as partners
from partners.service import EarnRuleRecord, PartnerRecord

if TYPE_CHECKING:
    from settlement.service import SettleReport

DEMO_PASSWORD = "demo-password"
OPERATOR_ID, OPERATOR_SECRET = "demo-operator", "demo-operator-secret-change-me"
OPERATOR_USER = "operator@example.com"  # signs in to the console with DEMO_PASSWORD

PARTNERS = [
    # name, category, base rate, category rates, hold days, redeem share, cap, issue, redemption
    ("Northwind Fuel", "fuel", "0.1", {"shop": "0.3"}, 0, "0.99", None, "1.20", "0.95"),
    ("Green Basket", "grocery", "0.05", {"organic": "0.1"}, 14, "0.5", None, "1.10", "0.90"),
    ("Aurora Air", "travel", "0.02", {"business": "0.05"}, 30, "0.3", 50_000, "1.40", "1.00"),
    ("Cinema Central", "entertainment", "0.1", {}, 0, "1", None, "1.00", "0.85"),
]
# A charity delivers its donations as a partner: it issues no points, it accepts them.
CHARITY = ("Kind Hearts Foundation", "charity", "0", "1.00")
# partner, title, kind, price, stock, category, voucher codes, days on offer (None: no end)
REWARDS = [
    ("Northwind Fuel", "Car wash", "VOUCHER", 150, None, "car", "WASH", None),
    ("Northwind Fuel", "Coffee to go", "GOODS", 60, None, "food", None, None),
    ("Green Basket", "Organic hamper", "GOODS", 800, 20, "grocery", None, None),
    ("Aurora Air", "Lounge pass", "GOODS", 2500, 10, "travel", None, 90),
    ("Cinema Central", "Movie ticket", "VOUCHER", 400, None, "entertainment", "CINE", None),
    ("Kind Hearts Foundation", "Plant a tree", "CHARITY", 100, None, "charity", None, None),
    ("Kind Hearts Foundation", "A meal for a family", "CHARITY", 300, 500, "charity", None, 30),
]
CODES_PER_VOUCHER = 6
# member, reward title: what the demo members redeemed (each with points enough)
REDEMPTIONS = [
    ("anna@example.com", "Car wash"),
    ("boris@example.com", "Plant a tree"),
    ("chen@example.com", "Coffee to go"),
    ("anna@example.com", "Plant a tree"),
]
MEMBERS = [
    ("anna@example.com", "Anna Ivanova"),
    ("boris@example.com", "Boris Petrov"),
    ("chen@example.com", "Chen Wei"),
    ("dana@example.com", "Dana Smith"),
    ("emil@example.com", "Emil Novak"),
]
# Members who join now with a member's referral code (sign-up bonus at once, the referral bonus
# to both after their first earn): new member, name, who invited them.
REFERRED = [
    ("fay@example.com", "Fay Olsen", "anna@example.com"),
    ("gus@example.com", "Gus Moreau", "chen@example.com"),
]
SIGNUP_POINTS, REFERRAL_POINTS = 100, 500
# The tier ladder (name, threshold in the settlement currency, multiplier), set so that the
# demo's purchases (about 2,500 to 210,000 RUB a member) put members in all three tiers.
TIERS = [
    ("Silver", "2000", "1.25"),
    ("Gold", "150000", "1.5"),
    ("Platinum", "200000", "2"),
]


@dataclass
class DemoReport:
    partners: dict[str, dict[str, str]] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    operator: dict[str, str] = field(default_factory=dict)
    operator_user: str = ""  # the console's sign-in email (password DEMO_PASSWORD)
    earns: int = 0
    redemptions: int = 0
    referrals: int = 0  # paid
    transfers: int = 0
    bonuses: int = 0  # partners' own
    rewards: int = 0
    reward_redemptions: int = 0
    offers: int = 0
    promo_codes_applied: int = 0
    periods: SettleReport | None = None  # set once the history is settled
    tier_review: ReviewReport | None = None  # the review after the ladder is set


async def is_empty(engine: AsyncEngine) -> bool:
    """True when no partner exists yet."""
    async with engine.connect() as conn:
        return not await partners.list_partners(conn, limit=1)


async def load(engine: AsyncEngine, settings: Settings, *, seed: int = 7) -> DemoReport:
    """Create the demo coalition (in one transaction)."""
    rnd = random.Random(seed)
    now = utcnow()
    start = now - timedelta(days=120)
    report = DemoReport()
    async with engine.begin() as conn:
        op = await clients.create_operator_client(
            conn, name="Demo operator", client_id=OPERATOR_ID, client_secret=OPERATOR_SECRET
        )
        report.operator = {"client_id": op.client_id, "client_secret": op.client_secret}
        user, _ = await operators.add(conn, email=OPERATOR_USER, password=DEMO_PASSWORD)
        report.operator_user = user.email
        configs = []
        for name, category, base, rates, hold_days, share, cap, issue, redeem in PARTNERS:
            p = await partners.create(
                conn, name=name, category=category, currency=settings.settlement_currency
            )
            await partners.set_agreement(
                conn,
                partner_id=p.id,
                issue_price=issue,
                redemption_price=redeem,
                effective_from=start - timedelta(days=1),
                currency=settings.settlement_currency,
                actor=OPERATOR_ID,
            )
            rule = await partners.set_earn_rule(
                conn,
                partner_id=p.id,
                base_rate=base,
                category_rates=rates,
                hold_days=hold_days,
                max_redeem_share=share,
                max_points_per_transaction=cap,
                actor=OPERATOR_ID,
            )
            slug = name.lower().split()[0]
            cred = await clients.create_partner_client(
                conn,
                partner_id=p.id,
                scopes=list(clients.PARTNER_SCOPES),
                client_id=f"demo-{slug}",
                client_secret=f"demo-{slug}-secret-change-me",
            )
            report.partners[name] = {
                "id": str(p.id),
                "client_id": cred.client_id,
                "client_secret": cred.client_secret,
            }
            configs.append((p, rule, category, list(rates)))
        charity_name, charity_category, charity_issue, charity_redeem = CHARITY
        charity = await partners.create(
            conn,
            name=charity_name,
            category=charity_category,
            currency=settings.settlement_currency,
        )
        await partners.set_agreement(
            conn,
            partner_id=charity.id,
            issue_price=charity_issue,
            redemption_price=charity_redeem,
            effective_from=start - timedelta(days=1),
            currency=settings.settlement_currency,
            actor=OPERATOR_ID,
        )
        cred = await clients.create_partner_client(
            conn,
            partner_id=charity.id,
            scopes=["catalog:write", "settlement:read"],
            client_id="demo-kind",
            client_secret="demo-kind-secret-change-me",
        )
        report.partners[charity_name] = {
            "id": str(charity.id),
            "client_id": cred.client_id,
            "client_secret": cred.client_secret,
        }
        # A price change mid-way (settlement honours it per event).
        grocer = configs[1][0]
        await partners.set_agreement(
            conn,
            partner_id=grocer.id,
            issue_price="1.15",
            redemption_price="0.92",
            effective_from=now - timedelta(days=45),
            currency=settings.settlement_currency,
            actor=OPERATOR_ID,
        )
        people = []
        for i, (email, name) in enumerate(MEMBERS):
            # Known card numbers (anna's is 7000000000000005), so the README's calls work as
            # written.
            payload = f"70000000000000{i}"
            m = await members.create(
                conn,
                email=email,
                name=name,
                password_hash=hash_password(DEMO_PASSWORD),
                card_number=payload + luhn_check_digit(payload),
            )
            report.members[email] = m.card_number
            people.append(m)

        # ~4 months of purchases, some paid partly with points.
        order = 0
        for day in range(0, 118, 2):
            at = start + timedelta(days=day, hours=rnd.randint(8, 20))
            for m in rnd.sample(people, 3):
                p, rule, category, extra = rnd.choice(configs)
                order += 1
                cat = rnd.choice([category, *extra])
                amount = Decimal(rnd.randint(300, 9000))
                points = rule.points_for(amount, cat)
                if points <= 0:
                    continue
                await ledger.earn(
                    conn,
                    actor=report.partners[p.name]["client_id"],
                    idempotency_key=f"demo-{order}",
                    member_id=m.id,
                    partner_id=p.id,
                    points=points,
                    hold_days=rule.hold_days,
                    validity_months=settings.points_validity_months,
                    ref=f"ORD-{order:05d}",
                    amount=amount,
                    currency=p.currency,
                    category=cat,
                    at=at,
                )
                report.earns += 1
                if rnd.random() < 0.35:
                    bal = await ledger.balance(conn, member_id=m.id, at=at + timedelta(minutes=5))
                    q, qrule, *_ = rnd.choice(configs)
                    bill = Decimal(rnd.randint(500, 5000))
                    cap = int(
                        (bill * qrule.max_redeem_share / settings.point_value).to_integral_value(
                            ROUND_FLOOR
                        )
                    )
                    want = min(bal.available, cap, rnd.randint(50, 800))
                    if want <= 0:
                        continue
                    client = report.partners[q.name]["client_id"]
                    hold = await ledger.authorize(
                        conn,
                        actor=client,
                        idempotency_key=f"demo-a-{order}",
                        member_id=m.id,
                        partner_id=q.id,
                        points=want,
                        ref=f"PAY-{order:05d}",
                        purchase_amount=bill,
                        currency=q.currency,
                        at=at + timedelta(minutes=5),
                    )
                    if rnd.random() < 0.1:
                        await ledger.void(
                            conn,
                            actor=client,
                            idempotency_key=f"demo-v-{order}",
                            partner_id=q.id,
                            hold_id=hold.hold_id,
                            at=at + timedelta(minutes=6),
                        )
                        continue
                    await ledger.capture(
                        conn,
                        actor=client,
                        idempotency_key=f"demo-c-{order}",
                        partner_id=q.id,
                        hold_id=hold.hold_id,
                        points=want - rnd.choice([0, 0, 0, 10]) if want > 10 else want,
                        at=at + timedelta(minutes=6),
                    )
                    report.redemptions += 1
        await _catalog(conn, report, {m.email: m.id for m in people}, now)
        await _offers(conn, report, {m.email: m.id for m in people}, now)
    await _bonuses_and_transfers(engine, settings, report, people, configs)
    # Settle the months of that history: past months closed and sealed, the current one open.
    from settlement import service as settlement

    settled = await settlement.settle_due(
        engine,
        granularity="monthly",
        timezone=settings.settlement_timezone,
        close_delay=timedelta(minutes=settings.settlement_close_delay_minutes),
        currency=settings.settlement_currency,
        point_value=settings.point_value,
        actor=OPERATOR_ID,
    )
    report.periods = settled
    return report


async def _plain_hash(fn: Callable[[str], str], password: str) -> str:
    return fn(password)


async def _bonuses_and_transfers(
    engine: AsyncEngine,
    settings: Settings,
    report: DemoReport,
    people: list[MemberRecord],
    configs: list[tuple[PartnerRecord, EarnRuleRecord, str, list[str]]],
) -> None:
    """Today, through the use cases (as the API runs them): the bonus rules, members who join
    with referral codes and earn (so both sides get the referral bonus), a partner's bonus for
    a review, transfers between members, and the tier ladder with a review."""
    pool = create_driver_pool(engine.url.render_as_string(hide_password=False), max_size=2)
    await pool.open()
    rt = Services(
        engine=engine, pool=pool, earns=EarnBatcher(pool), settings=settings, caches=Caches()
    )
    try:
        await bonuses.set_rules(
            rt, actor=OPERATOR_ID, signup_points=SIGNUP_POINTS, referral_points=REFERRAL_POINTS
        )
        by_email = {m.email: m for m in people}
        fuel, _, fuel_category, _ = configs[0]  # no return window: the points are available
        fuel_client = report.partners[fuel.name]["client_id"]
        for i, (email, name, referrer) in enumerate(REFERRED, start=1):
            m = await register.register(
                rt,
                email=email,
                name=name,
                password=DEMO_PASSWORD,
                hashing=_plain_hash,
                referral_code=by_email[referrer].referral_code,
            )
            report.members[email] = m.card_number
            by_email[email] = m
            await earning.earn(
                rt,
                actor=fuel_client,
                key_space=ledger.partner_key_space(fuel.id),
                partner_id=fuel.id,
                card_number=m.card_number,
                amount="2500.00",
                currency=fuel.currency,
                category=fuel_category,
                order_ref=f"REF-{i:03d}",
                idempotency_key=f"demo-ref-{i}",
            )
            report.earns += 1
            report.referrals += 1
        cinema = configs[3][0]
        await bonuses.award(
            rt,
            actor=report.partners[cinema.name]["client_id"],
            key_space=ledger.partner_key_space(cinema.id),
            partner_id=cinema.id,
            card_number=by_email["dana@example.com"].card_number,
            points=50,
            reason="Film review",
            idempotency_key="demo-review-1",
        )
        report.bonuses += 1
        for i, (sender, receiver, points) in enumerate(
            [
                ("anna@example.com", "boris@example.com", 300),
                ("fay@example.com", "anna@example.com", 150),
            ],
            start=1,
        ):
            who = by_email[sender]
            await transfers.transfer(
                rt,
                actor="coalition-app",
                key_space=ledger.member_key_space(who.id),
                member_id=who.id,
                to_card_number=by_email[receiver].card_number,
                points=points,
                idempotency_key=f"demo-transfer-{i}",
            )
            report.transfers += 1
        await tiers.set_tiers(
            rt,
            actor=OPERATOR_ID,
            tiers_in=[
                tiers.TierInput(name, amount, settings.settlement_currency, multiplier)
                for name, amount, multiplier in TIERS
            ],
        )
        report.tier_review = await tiers.review(
            engine, as_of=utcnow(), currency=settings.settlement_currency
        )
    finally:
        await rt.earns.drain()
        await pool.close()


async def _catalog(
    conn: AsyncConnection,
    report: DemoReport,
    people: dict[str | None, uuid.UUID],
    now: datetime,
) -> None:
    """Rewards of every kind, and a few redeemed by the demo members (their codes are theirs)."""
    published: dict[str, uuid.UUID] = {}
    for partner, title, kind, price, stock, category, prefix, days in REWARDS:
        codes = [f"{prefix}-{i:04d}" for i in range(1, CODES_PER_VOUCHER + 1)] if prefix else []
        r = await catalog.publish(
            conn,
            partner_id=uuid.UUID(report.partners[partner]["id"]),
            draft=RewardDraft(
                title=title,
                description=f"{title}, delivered by {partner}.",
                kind=kind,
                price_points=price,
                stock=stock,
                category=category,
                available_from=now - timedelta(days=7),
                available_until=now + timedelta(days=days) if days else None,
            ),
            voucher_codes=codes,
            actor=OPERATOR_ID,
        )
        published[title] = r.id
        report.rewards += 1
    for i, (email, title) in enumerate(REDEMPTIONS):
        price = (await catalog.get(conn, reward_id=published[title])).price_points
        if (await ledger.balance(conn, member_id=people[email], at=now)).available < price:
            continue  # a history without the points for it (another seed)
        await rewards.redeem_in(
            conn,
            actor=clients.APP_CLIENT_ID,  # as if through the member app
            member_id=people[email],
            reward_id=published[title],
            idempotency_key=f"demo-reward-{i}",
            at=now,
        )
        report.reward_redemptions += 1


async def _offers(
    conn: AsyncConnection,
    report: DemoReport,
    people: dict[str | None, uuid.UUID],
    now: datetime,
) -> None:
    """A few offers: a partner's x2 on weekends, an activation-only coupon anna activated, one
    reachable with the promo code WELCOME10 (boris applied it), a coalition-wide bonus (the
    operator's points: today's earns get it, the referred members' first ones included)."""
    fuel = uuid.UUID(report.partners["Northwind Fuel"]["id"])
    cinema = uuid.UUID(report.partners["Cinema Central"]["id"])
    # This weekend, or the next one (Saturday 00:00 to Monday 00:00, UTC).
    shift = 5 - now.weekday() if now.weekday() < 5 else -(now.weekday() - 5)
    saturday = (now + timedelta(days=shift)).replace(hour=0, minute=0, second=0, microsecond=0)

    async def offer(partner_id: uuid.UUID | None, name: str, **kw: object) -> str:
        fields: dict[str, Any] = {
            "description": f"{name}.",
            "multiplier": None,
            "bonus_points": None,
            "category": None,
            "starts_at": now - timedelta(days=1),
            "ends_at": now + timedelta(days=60),
            "requires_activation": False,
            "max_uses_per_member": None,
            "stackable": False,
            "min_tier": None,
            **kw,
        }
        o = await offers.create_in(
            conn, actor=OPERATOR_ID, partner_id=partner_id, name=name, **fields
        )
        report.offers += 1
        return str(o.id)

    await offer(
        fuel,
        "Weekend double points",
        multiplier="2",
        starts_at=saturday,
        ends_at=saturday + timedelta(days=2),
    )
    coupon = await offer(
        fuel,
        "x5 points on the car wash",
        multiplier="5",
        category="car",
        requires_activation=True,
        max_uses_per_member=1,
    )
    await offers.activate_in(conn, member_id=people["anna@example.com"], offer_id=coupon)
    welcome = await offer(
        cinema,
        "Welcome: 100 bonus points",
        bonus_points=100,
        requires_activation=True,
        max_uses_per_member=1,
        stackable=True,
    )
    await offers.create_promo_code_in(
        conn,
        actor=OPERATOR_ID,
        owner=None,
        offer_id=welcome,
        code="WELCOME10",
        max_redemptions=1000,
        valid_until=now + timedelta(days=90),
    )
    await offers.apply_promo_code_in(conn, member_id=people["boris@example.com"], code="WELCOME10")
    report.promo_codes_applied += 1
    await offer(None, "Coalition week: 50 bonus points everywhere", bonus_points=50, stackable=True)
