"""Earn for a purchase: a partner credits a member's card with points for a bill."""

from __future__ import annotations

import uuid

from catalog.breakdown import breakdown
from core.clock import utcnow
from core.errors import DomainError, ErrorCode
from core.errors import ValidationError as DomainValidation
from core.money import Money
from ledger import service as ledger
from ledger.service import EarnResult
from loyalty import bonuses, tiers
from loyalty.caches import partner_config, tier_ladder
from loyalty.checks import text
from loyalty.runtime import Runtime
from members.cards import is_valid_card_number
from members.tiers import Ladder, TierRecord, next_tier
from partners.errors import RuleMissing

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

    A member whose referral bonus waits for their first earn (the card's cached holder says
    so: no query of its own) is paid it once the earn has committed; everyone else's earn
    costs nothing more."""
    if not is_valid_card_number(card_number):
        raise DomainValidation(
            "cardNumber must be 16 digits with a valid Luhn check digit", field="cardNumber"
        )
    money = Money.parse(amount, currency, positive=True)
    order_ref = text(order_ref, "orderRef")
    category = text(category, "category", 100) if category is not None else None
    cfg = await partner_config(rt, partner_id)
    if money.currency != cfg.partner.currency:
        raise DomainValidation(f"amount must be in {cfg.partner.currency}", field="amount")
    # What the partner sent, nothing derived from it: a retry replays the original
    # result whatever the partner's rules have become since.
    digest = ledger.earn_request_digest(
        card_number=card_number,
        amount=money.amount,
        currency=money.currency,
        category=category,
        ref=order_ref,
    )
    at = utcnow()
    try:
        cfg.require_agreement(at)  # from the cached config: no round trip
        rule = cfg.rule
        if rule is None:
            raise RuleMissing("this partner has no earn rule yet")
    except DomainError as exc:
        return await _replay_or_raise(rt, key_space, idempotency_key, digest, exc)
    ladder = await tier_ladder(rt)  # cached: no round trip
    # The tier travels with the card (`MemberCards`), re-read only when a ladder is in force.
    holder = await rt.caches.member_by_card.holder(
        rt.pool, card_number, fresh_tier=bool(ladder.tiers)
    )
    held = ladder.by_name(holder.tier) if ladder.tiers else None
    lines = breakdown(
        money.amount,
        rule.rate_for(category),
        rule.max_points_per_transaction,
        None if held is None else held.multiplier,
        (),
    )
    points = sum(line.points for line in lines)
    if points <= 0:
        refused = DomainValidation("this purchase earns no points", field="amount")
        return await _replay_or_raise(rt, key_space, idempotency_key, digest, refused)
    request = ledger.EarnRequest(
        actor=actor,
        key_space=key_space,
        digest=digest,
        at=at,
        idempotency_key=idempotency_key,
        member_id=holder.member_id,
        partner_id=partner_id,
        points=points,
        hold_days=rule.hold_days,
        validity_months=rt.settings.points_validity_months,
        ref=order_ref,
        amount=money.amount,
        currency=money.currency,
        category=category,
        lines=tuple(
            ledger.BreakdownLine(
                line.source.value, line.points, line.offer_id, line.funded_by.value
            )
            for line in lines
        ),
    )
    result = await rt.earns.earn(request)  # group commit: see ledger.batch
    if holder.referral_pending:
        await bonuses.after_earn(rt, card_number=card_number, holder=holder)
    if not result.replayed and _may_upgrade(rt, ladder, held, money):
        # After the commit: this earn counted at the tier held before it, the next one at the
        # new tier (seen at once in this process through the card cache).
        upgraded = await tiers.upgrade_after_earn(rt, member_id=holder.member_id, at=at)
        if upgraded is not None:
            rt.caches.member_by_card.set_tier(card_number, upgraded.name)
    return result


def _may_upgrade(rt: Runtime, ladder: Ladder, held: TierRecord | None, money: Money) -> bool:
    """Whether this earn may raise the member's tier, known without a query: not without a
    ladder, nor at its top, nor for a purchase that does not qualify (only amounts in the
    settlement currency count: `members.tiers`)."""
    return (
        bool(ladder.tiers)
        and money.currency == rt.settings.settlement_currency
        and next_tier(ladder, held) is not None
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
