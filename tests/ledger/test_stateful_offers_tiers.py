"""The stateful test of purchases with offers and tiers, against the model (model_offers_tiers.py
on top of model.py).

Hypothesis drives random sequences of the use cases a coalition runs them with: setting a tier
ladder (`loyalty.tiers.set_tiers`), partners creating offers (multiplier or bonus, category,
stackable or not, requiring activation, limited uses per member, a minimum tier, a window) and
ending them (`loyalty.offers`), some refused as bad input, members activating offers,
purchases (`loyalty.earn`, through the group commit or, with offers that need the member's
state, on their own) and their replays, refunds (`loyalty.refund`), reward spends (which let a
refund run into debt), the tier review (`loyalty.tiers.run_review`), the expiry job and time
steps of minutes to months. The model predicts every result and every domain error; every
purchase's points and lines are checked as it is made. After every step:

- the ledger's invariants and the model's view of this run's members and partners
  (stateful_checks.py, as test_stateful.py checks them);
- each purchase's stored lines are the model's, and every earn's stored lines sum to its points;
- each member's tier and qualifying spend (`loyalty.tiers.status`) are the model's, and so is
  the listing of the offers the member may use (with whether it activated them).

Time is the model's: `core.clock.utcnow`, wherever the product imported it, answers the
model's clock while a machine runs (`PinnedClock`). As in test_stateful.py, each run has its
own members, partners and stretch of time (`run_start`), in a database of its own module (the
tier ladder is global).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from types import ModuleType
from typing import Any, TypeVar

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from catalog.errors import OfferNotFound
from core import clock
from core.db import create_driver_pool, create_engine
from core.errors import DomainError
from core.settings import Settings
from ledger import service as ledger
from ledger.batch import EarnBatcher
from ledger.errors import IdempotencyConflict
from loyalty import earn, offers, terms, tiers
from loyalty import refund as refunds
from loyalty.caches import Caches
from loyalty.runtime import Services
from members import service as members
from members import tiers as member_tiers
from partners.errors import OrderNotFound
from tests.db import create_test_database, drop_database
from tests.ledger.model import N_MEMBERS, N_PARTNERS
from tests.ledger.model_offers_tiers import MLine, MOffer, MPurchase, MRule, MTier
from tests.ledger.model_offers_tiers import OffersTiersModel as Model
from tests.ledger.stateful_checks import check_database, promotions_balance
from tests.ledger.test_stateful import RUN_YEARS, redeem_reward, run_start

pytestmark = pytest.mark.slow

T = TypeVar("T")

CURRENCY = "EUR"  # the partners' and the settlement currency: every purchase qualifies
VALIDITY_MONTHS = 6  # lots expire within a run
CATEGORIES = [None, None, None, "fuel", "shop", "cafe"]
TIER_NAMES = ["Silver", "Gold", "Platinum"]
MIN_TIERS = [None] * 6 + ["Silver", "Gold", "Platinum", "Bronze"]  # Bronze: no ladder has it
TIER_MULTIPLIERS = ["1", "1.1", "1.25", "1.5", "2", "3"]
OFFER_MULTIPLIERS = ["1.5", "2", "2", "2.5", "3", "5"]
BONUSES = [1, 10, 50, 100]

_runs = itertools.count()


class PinnedClock:
    """`core.clock.utcnow`, in every module that imported it, answering `now()` instead."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        self.original = clock.utcnow
        self.patched: list[ModuleType] = []

    def install(self) -> None:
        for module in list(sys.modules.values()):
            if getattr(module, "utcnow", None) is self.original:
                module.utcnow = self.now
                self.patched.append(module)

    def uninstall(self) -> None:
        for module in self.patched:
            module.utcnow = self.original
        self.patched.clear()


@dataclass(frozen=True)
class CategoryRate:
    category: str
    rate: str


RULES = st.tuples(
    st.sampled_from(["0.1", "1", "0.37", "0.05", "2.5"]),  # base rate
    st.sampled_from([{}, {"fuel": "0.1", "shop": "0.3"}, {"shop": "1.25"}]),  # category rates
    st.sampled_from([None, None, 40, 300]),  # cap (BASE only)
    st.sampled_from([0, 0, 2, 14]),  # hold days
)


@st.composite
def ladders(draw: st.DrawFn) -> list[MTier]:
    """Up to three rungs, thresholds (EUR) increasing; now and then a name left out."""
    size = draw(st.sampled_from([0, 1, 2, 3, 3, 3]), label="rungs")
    names = sorted(
        draw(st.lists(st.sampled_from(TIER_NAMES), unique=True, min_size=size, max_size=size)),
        key=TIER_NAMES.index,
    )
    thresholds = sorted(
        draw(
            st.lists(
                st.sampled_from([50, 200, 500, 1000, 2500, 6000]),
                unique=True,
                min_size=len(names),
                max_size=len(names),
            )
        )
    )
    return [
        MTier(n, Decimal(t), Decimal(draw(st.sampled_from(TIER_MULTIPLIERS), label="multiplier")))
        for n, t in zip(names, thresholds, strict=True)
    ]


# Mostly the first partner: its offers meet (stacking, the best non-stackable one).
PARTNERS = st.sampled_from([0, 0, 0, 1, 2])
PURCHASES = st.tuples(
    st.integers(0, N_MEMBERS - 1),  # member
    PARTNERS,
    st.one_of(
        st.integers(1, 2_000),
        st.integers(1, 3_000).map(lambda n: 100 * n),
        st.integers(2_000, 300_000),
    ),  # amount in cents
    st.sampled_from(CATEGORIES),
    st.sampled_from(["new"] * 9 + ["an order that earned already"]),
)

DELTAS = st.one_of(
    st.integers(1, 120).map(lambda n: timedelta(minutes=n)),
    st.integers(1, 72).map(lambda n: timedelta(hours=n)),
    st.integers(1, 20).map(lambda n: timedelta(days=n)),
    st.integers(21, 60).map(lambda n: timedelta(days=n)),
)
MONTHS_MAX = timedelta(days=240)
MAX_LADDERS = 3

# Each purchase's earn, its points and its stored lines (none: its BASE line alone).
LINES = text(
    "SELECT t.id, t.points, coalesce(l.v->>0, 'BASE'), coalesce(CAST(l.v->>1 AS bigint), "
    "t.points), CAST(l.v->>2 AS uuid) FROM transactions t "
    "LEFT JOIN earn_breakdowns b ON b.transaction_id = t.id "
    "LEFT JOIN LATERAL jsonb_array_elements(b.lines) WITH ORDINALITY AS l(v, n) ON true "
    "WHERE t.id = ANY(:ids) "
    "ORDER BY t.id, l.n"
)
RUN_SPAN = timedelta(days=365 * (RUN_YEARS - 1))  # as test_stateful.py's runs


class OffersTiersMachine(RuleBasedStateMachine):
    uri: str = ""  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.start = run_start(next(_runs))
        self.model = Model(self.start, VALIDITY_MONTHS)
        self.rt = self.run(self._runtime())
        self.members, self.cards, self.partners = self.run(self._population())
        self.promotions_before = self.run(promotions_balance(self.rt.engine))
        self.counter = itertools.count()
        self.expired_at: datetime | None = None
        self.reviewed_at: datetime | None = None
        self.ladders_set = 0
        self.clock = PinnedClock(lambda: self.model.now)
        self.clock.install()

    async def _runtime(self) -> Services:
        pool = create_driver_pool(self.uri, max_size=4)
        await pool.open(wait=True)
        return Services(
            engine=create_engine(self.uri, pool_size=2 + 2 * N_MEMBERS, max_overflow=0),
            pool=pool,
            earns=EarnBatcher(pool, max_in_flight=1),
            settings=Settings(
                database_url=self.uri,
                settlement_currency=CURRENCY,
                points_validity_months=VALIDITY_MONTHS,
            ),
            caches=Caches(),
        )

    async def _population(self) -> tuple[list[uuid.UUID], list[str], list[uuid.UUID]]:
        async with self.rt.engine.begin() as conn:
            ms = [
                await members.create(conn, email=f"{uuid.uuid4().hex}@stateful.test")
                for _ in range(N_MEMBERS)
            ]
        ps = []
        for _ in range(N_PARTNERS):
            partner = await terms.create_partner(
                self.rt, name=f"partner-{uuid.uuid4().hex}", category="shop", currency=CURRENCY
            )
            await terms.set_agreement(
                self.rt,
                actor="test",
                partner_id=str(partner.id),
                issue_price="1.00",
                redemption_price="0.90",
                effective_from=self.start - timedelta(days=1),
            )
            ps.append(partner.id)
        return [m.id for m in ms], [m.card_number for m in ms], ps

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def teardown(self) -> None:
        self.clock.uninstall()
        try:
            self.run(self.rt.earns.drain())
            self.run(self.rt.pool.close())
            self.run(self.rt.engine.dispose())
        finally:
            self.loop.close()

    # -- plumbing

    def actor(self, p: int) -> str:
        return f"partner:{self.partners[p]}"

    def fresh(self, what: str) -> str:
        return f"{what}-{next(self.counter)}"

    def attempt(
        self, op: str, call: Callable[[], Awaitable[T]], predict: Callable[[], Any]
    ) -> tuple[T | None, Any]:
        """Ask the model, then the service: they must agree on success or on the error (its
        type). Returns the service's result (None: refused) and the model's prediction."""
        try:
            prediction, error = predict(), None
        except DomainError as exc:
            prediction, error = None, exc
        try:
            result = self.run(call())
        except DomainError as exc:
            assert error is not None, f"{op}: model expected success, got {exc!r}"
            assert type(exc) is type(error), f"{op}: expected {error!r}, got {exc!r}"
            event(f"{op}: {type(exc).__name__}")
            return None, None
        assert error is None, f"{op}: expected {error!r}, got {result!r}"
        event(f"{op}: ok")
        return result, prediction

    def lines_of(self, lines: list[MLine]) -> list[tuple[str, int, uuid.UUID | None]]:
        return [(source, points, offer and offer.id) for source, points, offer in lines]

    @staticmethod
    def stored(lines: Any) -> list[tuple[str, int, uuid.UUID | None]]:
        """Lines as the service gives them, those of 0 points but BASE left out."""
        return [
            (line.source, line.points, line.offer_id)
            for line in lines
            if line.source == "BASE" or line.points > 0
        ]

    def asking_partner(self, data: st.DataObject, owner: int) -> int:
        """Mostly the owner; now and then another partner."""
        if data.draw(st.integers(0, 5), label="another partner asks") < 5:
            return owner
        return data.draw(st.sampled_from([p for p in range(N_PARTNERS) if p != owner]))

    def purchase_kwargs(self, p: MPurchase) -> dict[str, Any]:
        return {
            "actor": self.actor(p.partner),
            "key_space": ledger.partner_key_space(self.partners[p.partner]),
            "partner_id": self.partners[p.partner],
            "card_number": self.cards[p.member],
            "amount": f"{p.amount:.2f}",
            "currency": CURRENCY,
            "category": p.category,
            "order_ref": p.ref,
            "idempotency_key": p.key,
        }

    # -- rules

    @initialize(
        data=st.data(),
        hours=st.integers(0, 31 * 24),
        rules=st.lists(RULES, min_size=N_PARTNERS, max_size=N_PARTNERS),
        ladder=ladders(),
    )
    def begin(
        self, data: st.DataObject, hours: int, rules: list[tuple[Any, ...]], ladder: list[MTier]
    ) -> None:
        """Partners' earn rules, and a ladder (an empty one now and then: no tiers)."""
        self.model.now = self.start = self.start + timedelta(hours=hours)
        for p, (base_rate, category_rates, cap, hold_days) in enumerate(rules):
            self.run(
                terms.set_earn_rule(
                    self.rt,
                    actor="test",
                    partner_id=str(self.partners[p]),
                    base_rate=base_rate,
                    category_rates=[CategoryRate(c, r) for c, r in category_rates.items()],
                    hold_days=hold_days,
                    max_redeem_share="1",
                    max_points_per_transaction=cap,
                )
            )
            self.model.rules.append(
                MRule(
                    Decimal(base_rate),
                    {c: Decimal(r) for c, r in category_rates.items()},
                    cap,
                    hold_days,
                )
            )
        self.set_tiers(ladder)

    @precondition(lambda self: self.ladders_set <= MAX_LADDERS)
    @rule(ladder=ladders())
    def set_tiers(self, ladder: list[MTier]) -> None:
        """A new ladder (a few per run: tiers must have time to be reached)."""
        self.ladders_set += 1
        rungs = [
            tiers.TierInput(t.name, str(t.threshold), CURRENCY, str(t.multiplier)) for t in ladder
        ]
        self.run(tiers.set_tiers(self.rt, actor="operator", tiers_in=rungs))
        self.model.set_ladder(ladder)
        event(f"set tiers: {len(ladder)} rungs")

    @rule(
        data=st.data(),
        p=PARTNERS,
        kind=st.sampled_from(["multiplier", "multiplier", "bonus", "multiplier", "bonus", "bad"]),
        category=st.sampled_from([None, None, None, None, "fuel", "shop"]),
        starts_in=st.sampled_from([None, None, None, timedelta(hours=5), timedelta(days=3)]),
        lasts=st.sampled_from([None, None, None, timedelta(hours=12), timedelta(days=10)]),
        requires_activation=st.sampled_from([False, False, True]),
        max_uses=st.sampled_from([None, None, 1, 2]),
        stackable=st.booleans(),
        min_tier=st.sampled_from(MIN_TIERS),
    )
    def create_offer(
        self,
        data: st.DataObject,
        p: int,
        kind: str,
        category: str | None,
        starts_in: timedelta | None,
        lasts: timedelta | None,
        requires_activation: bool,
        max_uses: int | None,
        stackable: bool,
        min_tier: str | None,
    ) -> None:
        if kind == "bad":
            bad = ["x1", "x0.5", "both", "neither", "ends before it starts"]
            return self.create_bad_offer(p, data.draw(st.sampled_from(bad), label="bad offer"))
        multiplier = data.draw(st.sampled_from(OFFER_MULTIPLIERS)) if kind == "multiplier" else None
        bonus = data.draw(st.sampled_from(BONUSES)) if kind == "bonus" else None
        starts_at = None if starts_in is None else self.model.now + starts_in
        begins = starts_at or self.model.now
        self.do_create_offer(
            p,
            MOffer(
                seq=-1,
                partner=p,
                multiplier=None if multiplier is None else Decimal(multiplier),
                bonus=bonus,
                category=category,
                starts_at=begins,
                ends_at=None if lasts is None else begins + lasts,
                requires_activation=requires_activation,
                max_uses=max_uses,
                stackable=stackable,
                min_tier=min_tier,
            ),
            starts_at,
            data,
        )

    @rule(
        data=st.data(),
        p=PARTNERS,
        kinds=st.lists(st.sampled_from(OFFER_MULTIPLIERS + BONUSES), min_size=2, max_size=3),
        stackable=st.lists(st.booleans(), min_size=3, max_size=3),
        m=st.integers(0, N_MEMBERS - 1),
        cents=PURCHASES.map(lambda request: request[2]),
    )
    def offers_meet(
        self,
        data: st.DataObject,
        p: int,
        kinds: list[str | int],
        stackable: list[bool],
        m: int,
        cents: int,
    ) -> None:
        """Two or three plain offers of a partner at once, and a purchase there: stackable ones
        all apply, of the others the one adding the most (ties: the earliest created)."""
        for kind, stacks in zip(kinds, stackable, strict=False):
            offer = MOffer(
                seq=-1,
                partner=p,
                multiplier=Decimal(kind) if isinstance(kind, str) else None,
                bonus=kind if isinstance(kind, int) else None,
                category=None,
                starts_at=self.model.now,
                ends_at=None,
                requires_activation=False,
                max_uses=None,
                stackable=stacks,
                min_tier=None,
            )
            self.do_create_offer(p, offer, None)
        self.do_purchase(m, p, cents, None, "new")

    def create_bad_offer(self, p: int, bad: str) -> None:
        """Refused with a typed error, nothing created (the listings would show it)."""
        multiplier = {"x1": "1", "x0.5": "0.5", "both": "2", "neither": None}.get(bad, "2")
        now = self.model.now
        offer = MOffer(
            seq=-1,
            partner=p,
            multiplier=None if multiplier is None else Decimal(multiplier),
            bonus=10 if bad == "both" else None,
            category=None,
            starts_at=now,
            ends_at=now - timedelta(hours=1) if bad == "ends before it starts" else None,
            requires_activation=False,
            max_uses=None,
            stackable=True,
            min_tier=None,
        )
        self.do_create_offer(p, offer, now)

    def do_create_offer(
        self, p: int, offer: MOffer, starts_at: datetime | None, data: st.DataObject | None = None
    ) -> None:
        created, apply = self.attempt(
            "create offer",
            lambda: offers.create(
                self.rt,
                actor=self.actor(p),
                partner_id=self.partners[p],
                name=f"offer of partner {p}",
                description="",
                multiplier=None if offer.multiplier is None else str(offer.multiplier),
                bonus_points=offer.bonus,
                category=offer.category,
                starts_at=starts_at,
                ends_at=offer.ends_at,
                requires_activation=offer.requires_activation,
                max_uses_per_member=offer.max_uses,
                stackable=offer.stackable,
                min_tier=offer.min_tier,
            ),
            lambda: self.model.create_offer(offer),
        )
        if created is not None:
            apply(created.id)
            if data is not None:
                self.then_purchase(data, offer)

    @precondition(lambda self: self.model.offers)
    @rule(data=st.data())
    def end_offer(self, data: st.DataObject) -> None:
        offer = data.draw(st.sampled_from(self.model.offers), label="offer")
        p = self.asking_partner(data, offer.partner)

        def predict() -> None:
            if p != offer.partner:
                raise OfferNotFound("another partner's offer")
            self.model.end_offer(offer)

        self.attempt(
            "end offer",
            lambda: offers.end(self.rt, owner=self.partners[p], offer_id=str(offer.id)),
            predict,
        )

    @precondition(lambda self: self.model.offers)
    @rule(data=st.data(), m=st.integers(0, N_MEMBERS - 1))
    def activate(self, data: st.DataObject, m: int) -> None:
        wanting = [o for o in self.model.offers if o.requires_activation]
        if wanting and data.draw(st.integers(0, 5), label="an offer needing no activation") < 5:
            offer = data.draw(st.sampled_from(wanting), label="offer")
        else:
            offer = data.draw(st.sampled_from(self.model.offers), label="offer")
        activated, _ = self.attempt(
            "activate",
            lambda: offers.activate(self.rt, member_id=self.members[m], offer_id=str(offer.id)),
            lambda: self.model.activate(offer, m),
        )
        if activated is not None:
            self.then_purchase(data, offer, m)

    def then_purchase(self, data: st.DataObject, offer: MOffer, m: int | None = None) -> None:
        """Now and then a purchase that the offer may apply to, at once."""
        if data.draw(st.booleans(), label="a purchase the offer may apply to"):
            if m is None:
                m = data.draw(st.integers(0, N_MEMBERS - 1), label="member")
            cents = data.draw(PURCHASES, label="purchase")[2]
            self.do_purchase(m, offer.partner, cents, offer.category, "new")

    @rule(requests=st.lists(PURCHASES, min_size=1, max_size=3))
    def purchase(self, requests: list[tuple[Any, ...]]) -> None:
        for request in requests:
            self.do_purchase(*request)

    def do_purchase(self, m: int, p: int, cents: int, category: str | None, ref: str) -> None:
        earned = [x.ref for x in self.model.purchases if x.partner == p]
        ref = earned[cents % len(earned)] if earned and ref != "new" else self.fresh("order")
        amount = Decimal(cents) / 100
        key = self.fresh("buy")
        tier_before = self.model.tier[m]
        lines = self.model.lines(m, p, amount, category)
        stub = MPurchase(m, p, key, ref, amount, category, self.model.now, [], None)  # type: ignore[arg-type]
        result, prediction = self.attempt(
            "purchase",
            lambda: earn.earn(self.rt, **self.purchase_kwargs(stub)),
            lambda: self.model.purchase(m, p, amount, category, ref, key),
        )
        if result is None:
            return
        expected, apply = prediction
        got = {name: getattr(result, name) for name in expected}
        assert got == expected, f"purchase {stub}: expected {expected}, got {got}"
        assert self.stored(result.lines) == self.lines_of(lines), f"lines of {stub}"
        assert not result.replayed
        apply(result)
        for source, _, offer in lines:
            if offer is not None:
                event(f"purchase: an offer {'stacking' if offer.stackable else 'alone'}")
            elif source == "TIER":
                event("purchase: a TIER line")
        if sum(1 for source, _, _ in lines if source == "OFFER") > 1:
            event("purchase: several offers")
        if self.model.tier[m] != tier_before:
            event("purchase: crossed a threshold (the next one priced at the new tier)")

    @precondition(lambda self: self.model.purchases)
    @rule(data=st.data(), how=st.sampled_from(["all", "some", "some", "too much"]))
    def refund(self, data: st.DataObject, how: str) -> None:
        purchase = data.draw(st.sampled_from(self.model.purchases), label="purchase")
        p = self.asking_partner(data, purchase.partner)
        left = int((purchase.amount - purchase.refunded) * 100)
        cents = {
            "all": max(left, 1),
            "some": data.draw(st.integers(1, max(left, 1)), label="cents"),
            "too much": left + data.draw(st.integers(1, 1000), label="cents over"),
        }[how]
        amount = Decimal(cents) / 100

        def predict() -> dict[str, Any]:
            if p != purchase.partner:
                raise OrderNotFound("another partner's order")
            return self.model.refund(purchase, amount)

        result, expected = self.attempt(
            "refund",
            lambda: refunds.refund(
                self.rt,
                actor=self.actor(p),
                partner_id=self.partners[p],
                order_ref=purchase.ref,
                amount=f"{amount:.2f}",
                currency=CURRENCY,
                idempotency_key=self.fresh("refund"),
            ),
            predict,
        )
        if result is not None:
            got = {name: getattr(result, name) for name in expected}
            assert got == expected, f"refund of {purchase.ref}: expected {expected}, got {got}"
            if data.draw(st.booleans(), label="the member buys again"):  # the tier holds
                cents = data.draw(PURCHASES, label="purchase")[2]
                self.do_purchase(purchase.member, purchase.partner, cents, None, "new")

    @precondition(lambda self: self.model.purchases)
    @rule(data=st.data(), same=st.booleans())
    def replay_purchase(self, data: st.DataObject, same: bool) -> None:
        """The same key and request: the original result, whatever the offers and the tier
        now; another amount: a conflict. Neither changes anything."""
        purchase = data.draw(st.sampled_from(self.model.purchases), label="purchase")
        kwargs = self.purchase_kwargs(purchase)
        if same:
            got = self.run(earn.earn(self.rt, **kwargs))
            assert got == replace(purchase.result, replayed=True, lines=(), follow_up=None)
        else:
            kwargs["amount"] = f"{purchase.amount + 1:.2f}"
            with pytest.raises(IdempotencyConflict):
                self.run(earn.earn(self.rt, **kwargs))

    @rule(data=st.data(), m=st.integers(0, N_MEMBERS - 1), p=st.integers(0, N_PARTNERS - 1))
    def spend(self, data: st.DataObject, m: int, p: int) -> None:
        """A reward spend of some of the member's available points (a refund may then run
        into debt)."""
        available = self.model.available(m)
        if available == 0:
            return
        points = data.draw(st.integers(1, available), label="points")
        self.attempt(
            "spend",
            lambda: self.spend_call(m, p, points),
            lambda: self.model.reward(m, p, points),
        )

    async def spend_call(self, m: int, p: int, points: int) -> Any:
        async with self.rt.engine.begin() as conn:
            return await redeem_reward(
                conn,
                actor=ledger.member_key_space(self.members[m]),
                idempotency_key=self.fresh("spend"),
                at=self.model.now,
                member_id=self.members[m],
                partner_id=self.partners[p],
                points=points,
                ref=f"reward:{p}",
            )

    @precondition(lambda self: self.model.now != self.reviewed_at)
    @rule()
    def review(self) -> None:
        """The review now: every member to the tier of the 12 months before, up or down."""
        self.reviewed_at = self.model.now
        before = list(self.model.tier)
        self.run(tiers.run_review(self.rt, as_of=self.model.now))
        self.model.review()
        event(f"review: {'changes tiers' if before != self.model.tier else 'changes nothing'}")

    @precondition(lambda self: self.model.now != self.expired_at)
    @rule()
    def expire_points(self) -> None:
        self.expired_at = self.model.now
        expected = self.model.expire()
        report = self.run(
            ledger.expire_points(self.rt.engine, at=self.model.now, now=self.model.now)
        )
        got = {"members": report.members, "lots": report.lots, "points": report.points}
        assert got == expected, f"expiry at {self.model.now}: expected {expected}, got {got}"

    @precondition(lambda self: self.model.now - self.start < RUN_SPAN - MONTHS_MAX)
    @rule(delta=DELTAS)
    def advance_time(self, delta: timedelta) -> None:
        self.model.advance(delta)

    @precondition(lambda self: self.model.now - self.start < RUN_SPAN - MONTHS_MAX)
    @rule(days=st.integers(60, MONTHS_MAX.days))
    def months_pass(self, days: int) -> None:
        """Months at once: qualifying windows roll, offers end, lots expire."""
        self.model.advance(timedelta(days=days))

    # -- invariants

    @invariant()
    def database_agrees(self) -> None:
        self.run(self.checks())

    async def checks(self) -> None:
        """The ledger's (stateful_checks.py) and those of offers and tiers, side by side."""
        ledger_checks = check_database(
            self.rt.engine, self.model, self.members, self.partners, self.promotions_before
        )
        await asyncio.gather(ledger_checks, self.check_offers_and_tiers())

    async def check_offers_and_tiers(self) -> None:
        # Nothing writes meanwhile: the reads run side by side, each on its own connection.
        reads = await asyncio.gather(
            self.stored_lines(),
            *(self.member_view(member_id) for member_id in self.members),
            return_exceptions=True,  # let every read finish before failing
        )
        for read in reads:
            if isinstance(read, BaseException):
                raise read
        stored, *views = reads
        for x in self.model.purchases:
            points, lines = stored[x.lot.tx]
            assert sum(line[1] for line in lines) == points, f"lines of {x} sum to {points}"
            kept = [line for line in lines if line[0] == "BASE" or line[1] > 0]
            assert kept == self.lines_of(x.lines), f"stored lines of {x}"
        for m, (status, tier, listed) in enumerate(views):
            assert tier == self.model.tier[m], f"member {m}'s tier"
            held = self.model.held(m)
            assert (status.tier and status.tier.name) == (held and held.name), f"member {m}'s tier"
            # shown in minor units (rounded half-even); tiers are reached by the exact spend
            spend = self.model.spend(m, self.model.now).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
            assert status.qualifying_spend.amount == spend, f"member {m}'s qualifying spend"
            assert listed == self.model.listed(m), f"offers listed to member {m}"

    async def stored_lines(self) -> dict[uuid.UUID, tuple[int, list[Any]]]:
        """Each purchase's points and stored lines (source, points, offer id)."""
        stored: dict[uuid.UUID, tuple[int, list[Any]]] = {}
        async with self.rt.engine.connect() as conn:
            rows = await conn.execute(LINES, {"ids": [x.lot.tx for x in self.model.purchases]})
            for tx, points, source, line_points, offer_id in rows:
                stored.setdefault(tx, (points, []))[1].append((source, line_points, offer_id))
        return stored

    async def member_view(self, member_id: uuid.UUID) -> tuple[Any, str | None, set[Any]]:
        """The member's tier status, its stored tier, and the offers listed to it."""
        status = await tiers.status(self.rt, member_id=member_id)
        async with self.rt.engine.connect() as conn:
            tier = (await member_tiers.member_tier(conn, member_id=member_id)).tier
            listed = await offers.for_member(
                conn,
                member_id=member_id,
                limit=1000,
                before=None,
                member_tier=tier,
                tier_ranks={t.name: t.position for t in status.ladder.tiers},
            )
        return status, tier, {(o.id, activated) for o, activated in listed}


@pytest.fixture(scope="module")
def offers_tiers_db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_stateful_offers")
    yield uri
    drop_database(admin, uri)


def test_purchases_with_offers_and_tiers_match_the_model(offers_tiers_db_uri: str) -> None:
    OffersTiersMachine.uri = offers_tiers_db_uri
    run_state_machine_as_test(
        OffersTiersMachine,
        settings=settings(max_examples=15, stateful_step_count=50, deadline=None),
    )
