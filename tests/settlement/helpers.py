"""Small builders for settlement tests: partners with agreements, members, committed requests."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import service as ledger
from members import service as members
from partners import service as partners

_keys = itertools.count()


def key(what: str = "k") -> str:
    return f"{what}-{next(_keys)}"


async def coalition(
    engine: AsyncEngine,
    *,
    prices: list[tuple[str, str]],
    effective_from: datetime,
    n_members: int = 2,
    currency: str = "RUB",
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Partners with one agreement each (issue, redemption prices) and some members."""
    async with engine.begin() as conn:
        ps = []
        for i, (issue, redemption) in enumerate(prices):
            p = await partners.create(
                conn, name=f"Partner {i}", category="retail", currency=currency
            )
            await partners.set_agreement(
                conn,
                partner_id=p.id,
                issue_price=issue,
                redemption_price=redemption,
                effective_from=effective_from,
                currency=currency,
                actor="operator",
            )
            ps.append(p.id)
        ms = [
            (await members.create(conn, email=f"{uuid.uuid4().hex[:8]}@example.com", name="M")).id
            for _ in range(n_members)
        ]
    return ps, ms


async def earn(
    engine: AsyncEngine,
    member: uuid.UUID,
    partner: uuid.UUID,
    points: int,
    at: datetime,
    *,
    ref: str | None = None,
    validity_months: int = 36,
) -> uuid.UUID:
    async with engine.begin() as conn:
        r = await ledger.earn(
            conn,
            actor="partner",
            idempotency_key=key("earn"),
            member_id=member,
            partner_id=partner,
            points=points,
            at=at,
            ref=ref or key("order"),
            validity_months=validity_months,
        )
    return r.transaction_id


async def redeem(
    engine: AsyncEngine,
    member: uuid.UUID,
    partner: uuid.UUID,
    points: int,
    at: datetime,
    *,
    capture: int | None = None,
    ref: str | None = None,
) -> tuple[uuid.UUID, uuid.UUID]:
    """Authorize and capture; returns (hold id, capture transaction id)."""
    async with engine.begin() as conn:
        h = await ledger.authorize(
            conn,
            actor="partner",
            idempotency_key=key("auth"),
            member_id=member,
            partner_id=partner,
            points=points,
            at=at,
            ref=ref or key("order"),
        )
        c = await ledger.capture(
            conn,
            actor="partner",
            idempotency_key=key("cap"),
            partner_id=partner,
            hold_id=h.hold_id,
            points=capture or points,
            at=at,
        )
    return h.hold_id, c.transaction_id


async def reverse(
    engine: AsyncEngine,
    partner: uuid.UUID,
    earn_tx: uuid.UUID,
    points: int,
    at: datetime,
    *,
    ref: str | None = None,
) -> uuid.UUID:
    async with engine.begin() as conn:
        r = await ledger.reverse_earn(
            conn,
            actor="partner",
            idempotency_key=key("rev"),
            partner_id=partner,
            earn_transaction_id=earn_tx,
            points=points,
            at=at,
            ref=ref,
        )
    return r.transaction_id


async def return_points(
    engine: AsyncEngine,
    partner: uuid.UUID,
    hold: uuid.UUID,
    points: int,
    at: datetime,
    *,
    ref: str | None = None,
) -> uuid.UUID:
    async with engine.begin() as conn:
        r = await ledger.return_points(
            conn,
            actor="partner",
            idempotency_key=key("ret"),
            partner_id=partner,
            hold_id=hold,
            points=points,
            at=at,
            ref=ref,
        )
    return r.transaction_id


async def bonus(
    engine: AsyncEngine,
    member: uuid.UUID,
    issuer: uuid.UUID | None,
    points: int,
    at: datetime,
    *,
    reason: str = "review",
    ref: str | None = None,
    validity_months: int = 36,
) -> uuid.UUID:
    """A bonus funded by `issuer`, or by the operator (None: sign-up, referral)."""
    async with engine.begin() as conn:
        r = await ledger.award_bonus(
            conn,
            ledger.BonusRequest(
                actor="operator" if issuer is None else f"partner:{issuer}",
                key_space="operator" if issuer is None else f"partner:{issuer}",
                idempotency_key=key("bonus"),
                digest=key("digest"),
                member_id=member,
                issuer_id=issuer,
                points=points,
                reason=reason,
                ref=ref,
                at=at,
                validity_months=validity_months,
            ),
        )
    return r.transaction_id


async def reward(
    engine: AsyncEngine,
    member: uuid.UUID,
    partner: uuid.UUID,
    points: int,
    at: datetime,
    *,
    ref: str | None = None,
) -> uuid.UUID:
    """A reward of `partner` paid with `points` at once."""
    async with engine.begin() as conn:
        r = await ledger.redeem_reward_points(
            conn,
            ledger.RewardSpendRequest(
                actor=f"member:{member}",
                key_space=f"member:{member}",
                idempotency_key=key("reward"),
                digest=key("digest"),
                member_id=member,
                partner_id=partner,
                points=points,
                ref=ref or key("reward"),
                at=at,
            ),
        )
    return r.transaction_id


async def transfer(
    engine: AsyncEngine, sender: uuid.UUID, receiver: uuid.UUID, points: int, at: datetime
) -> uuid.UUID:
    async with engine.begin() as conn:
        r = await ledger.transfer_points(
            conn,
            ledger.TransferRequest(
                actor=f"member:{sender}",
                key_space=f"member:{sender}",
                idempotency_key=key("transfer"),
                digest=key("digest"),
                from_member_id=sender,
                to_member_id=receiver,
                points=points,
                daily_limit=None,
                at=at,
            ),
        )
    return r.transaction_id
