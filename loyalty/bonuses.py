"""Bonuses: the operator's rules (sign-up and referral points), a partner's own bonus for a
non-purchase event, and the referral bonus paid after a referred member's first earn.

Who funds what (DOMAIN.md): sign-up and referral bonuses are the operator's (their lots name no
issuer); a partner's bonus is the partner's (issued at its issue price, like its earns).

Operator-funded bonuses are keyed deterministically in the operator's key space, so each is
paid at most once whatever runs it and however often, concurrently or not: `signup:<member>`,
`referral:<friend>:referrer` and `referral:<friend>:friend`. A second payment of a referral
waits on the first one's key, then replays it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.clock import utcnow
from core.errors import ErrorCode
from core.errors import ValidationError as DomainValidation
from ledger import reads as ledger_reads
from ledger import service as ledger
from ledger.service import BonusRequest, BonusResult
from loyalty.caches import partner_config
from loyalty.checks import text as checked_text
from loyalty.runtime import Runtime
from members import bonus_rules, referrals
from members.bonus_rules import BonusRulesRecord
from members.cards import is_valid_card_number
from members.service import CardHolder

log = logging.getLogger(__name__)

# What each use case may raise (gateway.graphql checks each mutation's result union against it).
SET_RULES_ERRORS = frozenset({ErrorCode.VALIDATION})
AWARD_ERRORS = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.NO_AGREEMENT,
        ErrorCode.MEMBER_NOT_FOUND,
        ErrorCode.PARTNER_NOT_FOUND,
        ErrorCode.IDEMPOTENCY_CONFLICT,
    }
)

MAX_AWARD_POINTS = 100_000  # a partner's bonus for one event (a review): more is a mistake
REFERRALS_ACTOR = "system:referrals"
SIGNUP, REFERRAL = "signup", "referral"
REFERRAL_SWEEP_LOCK = 727_276  # pg advisory lock: one sweep at a time (settlement's is 727_275)


async def set_rules(
    rt: Runtime, *, actor: str, signup_points: int, referral_points: int
) -> BonusRulesRecord:
    """Put the operator's bonus rules in force from now on."""
    async with rt.engine.begin() as conn:
        return await bonus_rules.set_rules(
            conn, signup_points=signup_points, referral_points=referral_points, actor=actor
        )


async def rules(rt: Runtime) -> BonusRulesRecord:
    """The bonus rules in force."""
    async with rt.engine.connect() as conn:
        return await bonus_rules.current(conn)


# ---------------------------------------------------------------------------------------------
# A partner's bonus


async def award(
    rt: Runtime,
    *,
    actor: str,
    key_space: str,
    partner_id: uuid.UUID,
    card_number: str,
    points: int,
    reason: str,
    idempotency_key: str,
) -> BonusResult:
    """Credit the card's member with the partner's own bonus points (funded by the partner,
    like its earns), for a non-purchase event described by `reason`."""
    if not is_valid_card_number(card_number):
        raise DomainValidation(
            "cardNumber must be 16 digits with a valid Luhn check digit", field="cardNumber"
        )
    if isinstance(points, bool) or not 0 < points <= MAX_AWARD_POINTS:
        raise DomainValidation(f"points must be between 1 and {MAX_AWARD_POINTS}", field="points")
    reason = checked_text(reason, "reason")
    # What the partner sent (see the earn): a retry replays the original whatever changed since.
    digest = ledger.client_digest("awardBonus", card_number, str(points), reason)
    at = utcnow()
    # Agreements are never withdrawn, so one in force now was in force for any earlier request
    # this may be the retry of: checking before the replay refuses no retry.
    (await partner_config(rt, partner_id)).require_agreement(at)
    member_id = await rt.caches.member_by_card.member_id(rt.pool, card_number)
    async with rt.engine.begin() as conn:
        return await ledger.award_bonus(
            conn,
            BonusRequest(
                actor=actor,
                key_space=key_space,
                idempotency_key=idempotency_key,
                digest=digest,
                member_id=member_id,
                issuer_id=partner_id,
                points=points,
                reason=reason,
                at=at,
                validity_months=rt.settings.points_validity_months,
            ),
        )


# ---------------------------------------------------------------------------------------------
# Operator-funded bonuses: sign-up and referral


def _operator_bonus(
    *, key: str, member_id: uuid.UUID, points: int, reason: str, ref: str, validity_months: int
) -> BonusRequest:
    return BonusRequest(
        actor=REFERRALS_ACTOR if reason == REFERRAL else "system:signup",
        key_space=ledger.OPERATOR_KEY_SPACE,
        idempotency_key=key,
        # The key names the event and the amount is fixed by it: the digest only has to tell
        # this bonus from anything else ever stored under the key.
        digest=ledger.client_digest("bonus", reason, ref, str(points)),
        member_id=member_id,
        issuer_id=None,  # the operator's
        points=points,
        reason=reason,
        ref=ref,
        validity_months=validity_months,
    )


async def pay_signup_bonus(
    conn: AsyncConnection, *, member_id: uuid.UUID, points: int, validity_months: int
) -> BonusResult:
    """The sign-up bonus, in the registration's unit of work."""
    return await ledger.award_bonus(
        conn,
        _operator_bonus(
            key=f"signup:{member_id}",
            member_id=member_id,
            points=points,
            reason=SIGNUP,
            ref=str(member_id),
            validity_months=validity_months,
        ),
    )


@dataclass(frozen=True)
class ReferralPaid:
    """A referral bonus, paid to both sides (or the replay of that payment)."""

    friend_id: uuid.UUID
    referrer_id: uuid.UUID
    points: int
    referrer: BonusResult
    friend: BonusResult


async def pay_referral(
    engine: AsyncEngine, *, friend_id: uuid.UUID, validity_months: int
) -> ReferralPaid | None:
    """Pay the friend's referral bonus to both sides if it is still due; None when there is
    none to pay. The caller knows the friend's first earn is recorded (the earn path after
    its earn committed; the sweep after asking the ledger)."""
    async with engine.begin() as conn:
        due = await referrals.unpaid(conn, friend_id=friend_id)
        if due is None:
            return None
        paid = []
        # The referrer first: it registered before the friend, so its wallet and debt rows
        # have the lower account ids, and two members' rows are locked in ascending id order
        # (the ledger's lock order: a transfer between the two locks them the same way).
        for side, member_id in (("referrer", due.referrer_id), ("friend", friend_id)):
            paid.append(
                await ledger.award_bonus(
                    conn,
                    _operator_bonus(
                        key=f"referral:{friend_id}:{side}",
                        member_id=member_id,
                        points=due.points,
                        reason=REFERRAL,
                        ref=str(friend_id),
                        validity_months=validity_months,
                    ),
                )
            )
        to_referrer, to_friend = paid
        await referrals.mark_paid(
            conn,
            friend_id=friend_id,
            at=utcnow(),
            referrer_tx_id=to_referrer.transaction_id,
            friend_tx_id=to_friend.transaction_id,
        )
    return ReferralPaid(friend_id, due.referrer_id, due.points, to_referrer, to_friend)


async def after_earn(rt: Runtime, *, card_number: str, holder: CardHolder) -> None:
    """After an earn of a member whose referral bonus is due: pay it now. The earn has
    committed, so its answer stands whatever happens here; a payment that fails is left to
    the sweep (`pay_pending_referrals`)."""
    try:
        await pay_referral(
            rt.engine,
            friend_id=holder.member_id,
            validity_months=rt.settings.points_validity_months,
        )
    except Exception:
        log.exception("referral bonus of member %s not paid after its earn", holder.member_id)
        return
    rt.caches.member_by_card.paid(card_number, holder)


async def pay_pending_referrals(
    engine: AsyncEngine, *, validity_months: int, batch_size: int = 500
) -> int:
    """The safety net of the earn path: pay every referral bonus still due whose friend has an
    earn recorded (its payment after the earn failed, or the process ended in between).
    Idempotent and safe beside the earn path (the keys); one sweep at a time (an advisory
    lock: another process's sweep makes this one skip). Returns how many it paid."""
    paid = 0
    async with engine.connect() as lock_conn:
        got = (
            await lock_conn.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": REFERRAL_SWEEP_LOCK}
            )
        ).scalar_one()
        await lock_conn.commit()  # the session lock outlives the transaction
        if not got:
            return 0
        try:
            after: uuid.UUID | None = None
            while True:
                async with engine.connect() as conn:
                    page = await referrals.unpaid_page(conn, after=after, limit=batch_size)
                    earned = await ledger_reads.members_with_earns(
                        conn, member_ids=[r.friend_id for r in page]
                    )
                for due in page:
                    if due.friend_id in earned:
                        done = await pay_referral(
                            engine, friend_id=due.friend_id, validity_months=validity_months
                        )
                        paid += done is not None
                if len(page) < batch_size:
                    return paid
                after = page[-1].friend_id
        finally:
            await lock_conn.execute(
                text("SELECT pg_advisory_unlock(:k)"), {"k": REFERRAL_SWEEP_LOCK}
            )
            await lock_conn.commit()
