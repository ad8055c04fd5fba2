"""Status tiers: the operator's ladder, a member's status and the yearly review (the upgrade
is committed with the earn: `members.tiers.upgrade_follow_up`) (`members.tiers` holds the rules).

The ladder's thresholds are in the settlement currency (setting `SETTLEMENT_CURRENCY`); only
purchases in that currency qualify (`members.tiers`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import utcnow
from core.errors import DomainError, ErrorCode, ValidationError
from core.money import Money
from core.text import instant_problem
from loyalty.runtime import Runtime
from members import tiers
from members.tiers import Ladder, ProgressFn, ReviewReport, TierRecord, TierSpec

log = logging.getLogger(__name__)

# What each use case may raise (gateway.graphql checks each mutation's result union against it).
SET_TIERS_ERRORS = frozenset({ErrorCode.VALIDATION})
REVIEW_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.LIMIT_EXCEEDED})

TIER_REVIEW_LOCK = (
    727_277  # pg advisory lock: one review at a time (the referral sweep's is 727_276)
)


class ReviewRunning(DomainError):
    code = ErrorCode.LIMIT_EXCEEDED


@dataclass(frozen=True)
class TierInput:
    """A rung as a caller sends it."""

    name: str
    amount: str
    currency: str
    multiplier: str


@dataclass(frozen=True)
class TierStatus:
    """A member's standing: the tier held (None: untiered), the qualifying spend now, and the
    tier above (None: at the top, or no ladder)."""

    ladder: Ladder
    tier: TierRecord | None
    qualifying_spend: Money
    next: TierRecord | None


async def set_tiers(rt: Runtime, *, actor: str, tiers_in: Sequence[TierInput]) -> Ladder:
    """Replace the ladder (an empty list: no tiers from now on)."""
    if len(tiers_in) > tiers.MAX_TIERS:
        raise ValidationError(f"at most {tiers.MAX_TIERS} tiers", field="tiers")
    specs = [TierSpec(t.name, Money.parse(t.amount, t.currency), t.multiplier) for t in tiers_in]
    async with rt.engine.begin() as conn:
        new = await tiers.set_tiers(
            conn, tiers=specs, currency=rt.settings.settlement_currency, actor=actor
        )
    # The earn path prices with the cached ladder and the card cache's tiers (names that may
    # have left the ladder): seen at once in this process, within their TTLs elsewhere.
    rt.caches.tier_ladder.invalidate()
    rt.caches.member_by_card.forget_tiers()
    return new


async def ladder(rt: Runtime) -> Ladder:
    """The ladder in force."""
    async with rt.engine.connect() as conn:
        return await tiers.ladder(conn)


async def status(rt: Runtime, *, member_id: uuid.UUID) -> TierStatus:
    """The member's tier, its qualifying spend now and the next tier."""
    async with rt.engine.connect() as conn:
        current = await tiers.ladder(conn)
        held = current.by_name((await tiers.member_tier(conn, member_id=member_id)).tier)
        spend = await tiers.qualifying_spend(
            conn, member_id=member_id, at=utcnow(), currency=rt.settings.settlement_currency
        )
    return TierStatus(current, held, spend, tiers.next_tier(current, held))


def check_as_of(as_of: datetime) -> datetime:
    """A review instant: a valid one, not in the future (its window must be complete)."""
    problem = instant_problem(as_of)
    if problem is not None:
        raise ValidationError(f"asOf {problem}", field="asOf")
    if as_of > utcnow():
        raise ValidationError("asOf must not be in the future", field="asOf")
    return as_of


async def review(
    engine: AsyncEngine,
    *,
    as_of: datetime,
    currency: str,
    chunk: int = tiers.REVIEW_CHUNK,
    progress: ProgressFn | None = None,
) -> ReviewReport:
    """The yearly review as of `as_of`: every member set to the tier its 12 months before
    qualify for, up or down, `chunk` members per transaction (a crash leaves a prefix done;
    re-running for the same `as_of` finishes it and changes nothing already done). One review
    at a time across processes (an advisory lock); another one running: ReviewRunning."""
    as_of = check_as_of(as_of)
    async with engine.connect() as lock_conn:
        got = (
            await lock_conn.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": TIER_REVIEW_LOCK}
            )
        ).scalar_one()
        await lock_conn.commit()  # the session lock outlives the transaction
        if not got:
            raise ReviewRunning("a tier review is running already")
        try:
            async with engine.connect() as conn:
                current = await tiers.ladder(conn)
            total = ReviewReport(0, 0, 0)
            if current.id is None:
                return total
            after = uuid.UUID(int=0)
            while True:
                async with engine.begin() as conn:
                    done, last = await tiers.review_chunk(
                        conn,
                        ladder_id=current.id,
                        as_of=as_of,
                        currency=currency,
                        after=after,
                        limit=chunk,
                    )
                total = ReviewReport(
                    total.reviewed + done.reviewed,
                    total.upgraded + done.upgraded,
                    total.downgraded + done.downgraded,
                )
                if progress is not None:
                    progress(total)
                if last is None or done.reviewed < chunk:
                    return total
                after = last
        finally:
            await lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": TIER_REVIEW_LOCK})
            await lock_conn.commit()


async def run_review(rt: Runtime, *, as_of: datetime) -> ReviewReport:
    """The review as the operator asks for it (GraphQL)."""
    try:
        return await review(rt.engine, as_of=as_of, currency=rt.settings.settlement_currency)
    finally:
        rt.caches.member_by_card.forget_tiers()  # the earn path's remembered tiers are stale
