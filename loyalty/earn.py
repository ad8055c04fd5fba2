"""Earn for a purchase: a partner credits a member's card with points for a bill."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from catalog import offers as catalog_offers
from catalog.breakdown import (
    ApplicableOffer,
    Funder,
    Line,
    Source,
    breakdown,
    offers_for,
    usable,
)
from core.clock import utcnow
from core.errors import DomainError, ErrorCode
from core.errors import ValidationError as DomainValidation
from core.frozen import fast_init
from core.metrics import ISSUED_BY_EARN
from core.money import Money
from ledger import service as ledger
from ledger.service import EarnResult
from loyalty import bonuses
from loyalty.caches import (
    PurchaseOffers,
    live_offers,
    partner_config,
    purchase_offers,
    tier_ladder,
)
from loyalty.checks import text
from loyalty.runtime import Runtime
from members import tiers
from members.cards import is_valid_card_number
from members.service import CardHolder
from members.tiers import Ladder, TierRecord, next_tier
from partners.errors import RuleMissing
from partners.service import PartnerConfig

# What `earn` may raise (gateway.graphql checks each mutation's result union against its table).
ERRORS = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.NO_AGREEMENT,
        ErrorCode.MEMBER_NOT_FOUND,
        ErrorCode.PARTNER_NOT_FOUND,
        ErrorCode.IDEMPOTENCY_CONFLICT,
    }
)


@fast_init
@dataclass(frozen=True, slots=True)
class Purchase:
    """An earn request as the partner sent it, checked (`parse_purchase`): no database, no
    partner's rules yet."""

    card_number: str
    money: Money
    category: str | None
    order_ref: str
    digest: str  # what a replay must match: the request as sent (`earn_request_digest`)


def parse_purchase(
    card_number: str, amount: str, currency: str, category: str | None, order_ref: str
) -> Purchase:
    """Check a purchase's fields (the card's Luhn digit, the amount, the texts); a typed
    VALIDATION error for the first one wrong."""
    if not is_valid_card_number(card_number):
        raise DomainValidation(
            "cardNumber must be 16 digits with a valid Luhn check digit", field="cardNumber"
        )
    money = Money.parse(amount, currency, positive=True)
    order_ref = text(order_ref, "orderRef")
    category = text(category, "category", 100) if category is not None else None
    # What the partner sent, nothing derived from it: a retry replays the original
    # result whatever the partner's rules have become since.
    digest = ledger.earn_request_digest(
        card_number=card_number,
        amount=money.amount,
        currency=money.currency,
        category=category,
        ref=order_ref,
    )
    return Purchase(card_number, money, category, order_ref, digest)


@dataclass(frozen=True, slots=True)
class EarnTerms:
    """What prices an earn at a partner, read from the caches (`earn_terms`): its config (rule,
    currency, agreements), the tier ladder in force, the live offers and the settings that
    touch an earn. Pure from here on: an import prices a chunk of lines with one `EarnTerms`."""

    partner_id: uuid.UUID
    config: PartnerConfig
    ladder: Ladder
    offers: tuple[ApplicableOffer, ...]
    validity_months: int
    settlement_currency: str
    _by_category: dict[str | None, PurchaseOffers] = field(default_factory=dict, compare=False)

    def for_category(self, category: str | None) -> PurchaseOffers:
        """The offers that fit a purchase in `category` (`catalog.breakdown.offers_for`), and
        which need an activation: selected once per category for these terms (an import's
        chunk prices many purchases with one `EarnTerms`)."""
        found = self._by_category.get(category)
        if found is None:
            fit = offers_for(self.offers, partner_id=self.partner_id, category=category)
            found = PurchaseOffers(fit, frozenset(o.id for o in fit if o.requires_activation))
            self._by_category[category] = found
        return found

    def check_currency(self, purchase: Purchase) -> None:
        """A purchase in another currency than the partner's is refused (VALIDATION)."""
        if purchase.money.currency != self.config.partner.currency:
            raise DomainValidation(
                f"amount must be in {self.config.partner.currency}", field="amount"
            )

    def refusal(self, at: datetime) -> DomainError | None:
        """Why no earn at `at` can be priced under these terms (no agreement in force, no earn
        rule), else None. A retry of an earlier earn still replays (`_replay_or_raise`)."""
        try:
            self.config.require_agreement(at)  # from the cached config: no round trip
            if self.config.rule is None:
                raise RuleMissing("this partner has no earn rule yet")
        except DomainError as exc:
            return exc
        return None


async def earn_terms(rt: Runtime, partner_id: uuid.UUID) -> EarnTerms:
    """The partner's `EarnTerms`, from the caches (no round trip when cached)."""
    cfg = await partner_config(rt, partner_id)
    ladder = await tier_ladder(rt)
    offers = await live_offers(rt, partner_id)  # its own and the coalition-wide ones
    return EarnTerms(
        partner_id=partner_id,
        config=cfg,
        ladder=ladder,
        offers=offers,
        validity_months=rt.settings.points_validity_months,
        settlement_currency=rt.settings.settlement_currency,
    )


@fast_init
@dataclass(frozen=True, slots=True)
class PricedEarn:
    """An earn priced under `EarnTerms` (`price`): either its ledger request (`request`, None
    when it earns no points), or, when offers needing the member's activation or counting its
    uses may apply (`stateful`), what prices it once that state is read (`applying`,
    `request_of`): `_earn_with_member_state`."""

    request: ledger.EarnRequest | None
    stateful: list[ApplicableOffer]
    # what prices it once the member's state is read: only when `stateful`
    applying: Callable[[Collection[uuid.UUID], Mapping[uuid.UUID, int]], list[Line]] | None
    request_of: Callable[[list[Line]], ledger.EarnRequest] | None


def price(
    terms: EarnTerms,
    purchase: Purchase,
    holder: CardHolder,
    *,
    at: datetime,
    actor: str,
    key_space: str,
    idempotency_key: str,
    selected: PurchaseOffers | None = None,
) -> PricedEarn:
    """The earn's breakdown and ledger request, pure: the lines of `catalog.breakdown` (BASE,
    TIER for the tier the card's holder carries, one OFFER line per applying offer), the tier
    upgrade it may carry, or the offers that need the member's state. `terms.refusal(at)` must
    be None."""
    rule = terms.config.rule
    assert rule is not None  # `terms.refusal` said so
    ladder = terms.ladder
    held = ladder.by_name(holder.tier) if ladder.tiers else None
    money, category = purchase.money, purchase.category
    # Its own and the coalition-wide ones, of this category (`selected`: cached per
    # partner and category by the GraphQL earn; else selected here, once per category).
    chosen_offers = selected if selected is not None else terms.for_category(category)
    tier_ranks = ladder.ranks
    rank = None if held is None else held.position
    multiplier = None if held is None else held.multiplier
    rate, cap = rule.rate_for(category), rule.max_points_per_transaction

    # A purchase that may raise the member's tier carries the upgrade, committed with the earn
    # (in the group commit's statement): no transaction of its own.
    follow_up = (
        _upgrade_follow_up(ladder, terms.settlement_currency)
        if ladder.id is not None and _may_upgrade(terms, held, money)
        else None
    )

    # The offers that may apply were every one activated and unused (all of them, not only the
    # ones that would win: an unactivated better offer must not hide a weaker one whose
    # activation or uses then go unread): only when some of them depends on the member's
    # activations or uses are those read (and the uses counted), in the earn's own unit of
    # work; otherwise the earn goes to the group commit as any other.
    maybe = (
        usable(
            chosen_offers.offers,
            at=at,
            member_tier_rank=rank,
            activated_ids=chosen_offers.activation_ids,
            uses_by_offer={},
            tier_ranks=tier_ranks,
        )
        if chosen_offers.offers
        else []  # (no offer of this partner and category: every line of most batch files)
    )
    stateful = [o for o in maybe if o.requires_activation or o.max_uses_per_member is not None]
    if stateful:

        def applying(activated: Collection[uuid.UUID], uses: Mapping[uuid.UUID, int]) -> list[Line]:
            """The earn's lines, given the member's activations and uses."""
            offers = usable(
                chosen_offers.offers,
                at=at,
                member_tier_rank=rank,
                activated_ids=activated,
                uses_by_offer=uses,
                tier_ranks=tier_ranks,
            )
            return breakdown(money.amount, rate, cap, multiplier, offers)

        def request(lines: list[Line]) -> ledger.EarnRequest:
            points, booked = _booked(lines)
            return _request(
                terms,
                purchase,
                holder,
                booked,
                points,
                at,
                actor,
                key_space,
                idempotency_key,
                follow_up,
            )

        return PricedEarn(None, stateful, applying, request)
    # none of them depends on the member's state: they apply as they are (the functions that
    # price it with that state made only when it does: 200,000 lines of a batch file each made
    # four and called them)
    if maybe:
        points, booked = _booked(breakdown(money.amount, rate, cap, multiplier, maybe))
    else:  # no offer: the same amount at the same rate gives the same lines (`_plain`)
        points, booked = _plain(money.amount, rate, cap, multiplier)
    return PricedEarn(
        _request(
            terms,
            purchase,
            holder,
            booked,
            points,
            at,
            actor,
            key_space,
            idempotency_key,
            follow_up,
        )
        if points > 0
        else None,
        [],
        None,
        None,
    )


def _request(
    terms: EarnTerms,
    purchase: Purchase,
    holder: CardHolder,
    lines: tuple[ledger.BreakdownLine, ...],  # as the ledger stores them (`_booked`)
    points: int,  # theirs
    at: datetime,
    actor: str,
    key_space: str,
    idempotency_key: str,
    follow_up: ledger.FollowUp | None,
) -> ledger.EarnRequest:
    """The ledger's request for a priced earn of `lines` (`price`)."""
    rule = terms.config.rule
    assert rule is not None
    money = purchase.money
    return ledger.EarnRequest(
        actor=actor,
        key_space=key_space,
        digest=purchase.digest,
        at=at,
        idempotency_key=idempotency_key,
        member_id=holder.member_id,
        partner_id=terms.partner_id,
        points=points,
        hold_days=rule.hold_days,
        validity_months=terms.validity_months,
        ref=purchase.order_ref,
        amount=money.amount,
        currency=money.currency,
        category=purchase.category,
        lines=lines,
        follow_up=follow_up,
    )


def no_points() -> DomainError:
    """The refusal of a purchase that earns no points."""
    return DomainValidation("this purchase earns no points", field="amount")


async def earn(
    rt: Runtime,
    *,
    actor: str,
    key_space: str,
    partner_id: uuid.UUID,
    card_number: str,
    amount: str,
    currency: str,
    category: str | None,
    order_ref: str,
    idempotency_key: str,
) -> EarnResult:
    """Credit the card's member with the points the partner's rule gives for this purchase,
    in the group commit of the ledger (`ledger.batch`); a retry answers as the original did.

    The points are the lines of `catalog.breakdown` (`price`): BASE, TIER (the tier held before
    this earn: the card's cached holder carries it) and one OFFER line per applying offer, the
    partner's own or coalition-wide (cached per partner). A coalition-wide offer's points are
    the operator's: the ledger issues them from its `promotions` account into a lot with no
    issuer, in the same earn (`ledger.earn`), and no partner is charged for them. An earn that offers
    needing the member's activation or counting its uses may apply to runs alone, in one unit
    of work with that state (`_earn_with_member_state`); every other earn costs what an earn
    without tiers or offers does (the batch statement, lines included).

    A member whose referral bonus waits for their first earn (the card's cached holder says
    so: no query of its own) is paid it once the earn has committed (`after_commit`). A
    purchase that may raise the member's tier is upgraded in the earn's own statement
    (`members.tiers.upgrade_follow_up`); everyone else's earn costs nothing more."""
    purchase = parse_purchase(card_number, amount, currency, category, order_ref)
    terms = await earn_terms(rt, partner_id)
    terms.check_currency(purchase)
    at = utcnow()
    refused = terms.refusal(at)
    if refused is not None:
        return await _replay_or_raise(rt, key_space, idempotency_key, purchase.digest, refused)
    # The tier travels with the card (`MemberCards`), re-read only when a ladder is in force.
    holder = await rt.caches.member_by_card.holder(
        rt.pool, card_number, fresh_tier=bool(terms.ladder.tiers)
    )
    priced = price(
        terms,
        purchase,
        holder,
        at=at,
        actor=actor,
        key_space=key_space,
        idempotency_key=idempotency_key,
        # Cached per (partner, category) across requests.
        selected=await purchase_offers(rt, partner_id, purchase.category),
    )
    return await earn_priced(rt, priced, purchase, holder, key_space, idempotency_key)


async def earn_priced(
    rt: Runtime,
    priced: PricedEarn,
    purchase: Purchase,
    holder: CardHolder,
    key_space: str,
    idempotency_key: str,
) -> EarnResult:
    """Write a priced earn (the group commit, or its unit of work with the member's offer
    state), answer a refused one with its replay, then the steps after its commit."""
    result: EarnResult | None
    if priced.stateful:
        assert priced.applying is not None and priced.request_of is not None
        result = await _earn_with_member_state(
            rt, holder.member_id, priced.stateful, priced.applying, priced.request_of
        )
    elif priced.request is not None:
        result = await rt.earns.earn(priced.request)
    else:
        result = None
    if result is None:
        return await _replay_or_raise(rt, key_space, idempotency_key, purchase.digest, no_points())
    await after_commit(rt, purchase.card_number, holder, result)
    return result


async def after_commit(
    rt: Runtime, card_number: str, holder: CardHolder, result: EarnResult
) -> None:
    """What follows an earn's commit: the points counted as issued (`/metrics`), unless this
    answers a retry; then `after_commit_steps`."""
    if not result.replayed:
        counted_as_issued(result.points)
    await after_commit_steps(rt, card_number, holder, result)


def counted_as_issued(points: int) -> None:
    """Points of committed earns counted as issued (`/metrics`): one earn's, or a batch file's
    chunk's at once (it runs `after_commit_steps` only for the few earns that need one)."""
    ISSUED_BY_EARN.inc(points)


async def after_commit_steps(
    rt: Runtime, card_number: str, holder: CardHolder, result: EarnResult
) -> None:
    """The steps after an earn's commit that concern its member: the referral bonus when it
    waits for their first earn, and this process's card cache told of a tier upgrade the earn
    carried. Nothing to do unless `holder.referral_pending` or `result.follow_up`."""
    if holder.referral_pending:
        await bonuses.after_earn(rt, card_number=card_number, holder=holder)
    if result.follow_up is not None:
        # This earn counted at the tier held before it, the next one at the new tier (seen at
        # once in this process through the card cache).
        rt.caches.member_by_card.set_tier(card_number, result.follow_up)


# A line's source and funder as the ledger stores them (an enum's `.value` is a slow lookup,
# paid per line of every earn).
_NAMES: dict[StrEnum, str] = {e: e.value for e in (*Source, *Funder)}


def _points(lines: list[Line]) -> int:
    """An earn's points: its lines' (a loop, not sum() over a generator: every earn)."""
    points = 0
    for line in lines:
        points += line.points
    return points


def _booked(lines: list[Line]) -> tuple[int, tuple[ledger.BreakdownLine, ...]]:
    """An earn's points (its lines') and its lines as the ledger's request carries them."""
    return _points(lines), tuple(
        [
            ledger.BreakdownLine(
                _NAMES[line.source], line.points, line.offer_id, _NAMES[line.funded_by]
            )
            for line in lines
        ]
    )


@functools.lru_cache(maxsize=4096)
def _plain(
    amount: Decimal, rate: Decimal, cap: int | None, multiplier: Decimal | None
) -> tuple[int, tuple[ledger.BreakdownLine, ...]]:
    """`_booked` of an earn no offer applies to: BASE (and TIER) lines, pure in these four
    values, which a batch file's lines repeat (prices; one rule and a few tiers). Both
    immutable, so shared."""
    return _booked(breakdown(amount, rate, cap, multiplier, ()))


async def _earn_with_member_state(
    rt: Runtime,
    member_id: uuid.UUID,
    stateful: list[ApplicableOffer],
    applying: Callable[[Collection[uuid.UUID], Mapping[uuid.UUID, int]], list[Line]],
    request: Callable[[list[Line]], ledger.EarnRequest],
) -> EarnResult | None:
    """The earn when offers that need the member's activation or count its uses may apply: in
    ONE unit of work, the member's activations and uses of them read (the uses' rows locked
    before the ledger's: `catalog.offers.lock_member_state`), the earn written on the single
    path (`ledger.earn`: same rules, results and errors as the group commit) and the uses of
    the offers it applied counted. None: the purchase earns no points."""
    limited = {o.id for o in stateful if o.max_uses_per_member is not None}
    async with rt.engine.begin() as conn:
        activated, uses = await catalog_offers.lock_member_state(
            conn, member_id=member_id, offer_ids=[o.id for o in stateful], limited_ids=limited
        )
        lines = applying(activated, uses)
        if _points(lines) <= 0:
            return None
        result = await ledger.earn(conn, request(lines))
        if not result.replayed:
            used = [line.offer_id for line in lines if line.offer_id in limited]
            await catalog_offers.count_uses(
                conn, member_id=member_id, offer_ids=[i for i in used if i is not None]
            )
    return result


_follow_up_memo: tuple[Ladder, str, ledger.FollowUp] | None = None


def _upgrade_follow_up(ladder: Ladder, currency: str) -> ledger.FollowUp:
    """`members.tiers.upgrade_follow_up`, made once per cached ladder (not per earn)."""
    global _follow_up_memo
    memo = _follow_up_memo
    if memo is None or memo[0] is not ladder or memo[1] != currency:
        memo = _follow_up_memo = (ladder, currency, tiers.upgrade_follow_up(ladder, currency))
    return memo[2]


def _may_upgrade(terms: EarnTerms, held: TierRecord | None, money: Money) -> bool:
    """Whether this earn may raise the member's tier, known without a query: not without a
    ladder, nor at its top, nor for a purchase that does not qualify (only amounts in the
    settlement currency count: `members.tiers`)."""
    return (
        bool(terms.ladder.tiers)
        and money.currency == terms.settlement_currency
        and next_tier(terms.ladder, held) is not None
    )


async def _replay_or_raise(
    rt: Runtime, key_space: str, key: str, digest: str, refused: DomainError
) -> EarnResult:
    """Refused under the terms in force now; the retry of an earlier earn is not: its original
    result, else `refused`."""
    replay = await _replay(rt, key_space, key, digest)
    if replay is None:
        raise refused
    return replay


async def _replay(rt: Runtime, key_space: str, key: str, digest: str) -> EarnResult | None:
    """The original result of an earn under this key and request, if there was one."""
    async with rt.engine.connect() as conn:
        stored = await ledger.stored_result(
            conn, key_space=key_space, operation="earn", key=key, digest=digest
        )
    return None if stored is None else EarnResult.from_json(stored, replayed=True)
