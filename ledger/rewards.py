"""Reward spends: a catalog reward's price in points taken at once (no hold).

The points come from the member's available lots earliest-expiry first (the FIFO of
`authorize`) and go to the redemption account of the partner that delivers the reward; the lot
postings are `capture`s, so that the points count as redeemed at that partner like any capture.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7
from ledger.claims import (
    _STORE_RESULT,
    _at,
    _check_key,
    _check_points,
    _check_text,
    _claim_and_lock,
)
from ledger.errors import InsufficientPoints
from ledger.holds import _release_stale_holds
from ledger.models import AccountKind
from ledger.results import RewardSpendResult

# FIFO over the spendable lots (as authorize's); writes only if the whole amount is there.
_REWARD = text(
    f"""
    WITH c AS (
        SELECT id, remaining,
               sum(remaining) OVER (ORDER BY expires_at, earned_at, id) AS cum
        FROM lots
        WHERE member_id = :member AND remaining > 0 AND available_at <= :at AND expires_at > :at
    ), ok AS (
        SELECT coalesce(max(cum), 0) AS available, coalesce(max(cum), 0) >= :points AS ok FROM c
    ), take AS (
        SELECT c.id, LEAST(c.remaining, :points - (c.cum - c.remaining)) AS take
        FROM c, ok WHERE ok.ok AND c.cum - c.remaining < :points
    ), u AS (
        UPDATE lots l SET remaining = l.remaining - take.take FROM take WHERE l.id = take.id
    ), t AS (
        INSERT INTO transactions (id, kind, points, partner_id, member_id, ref, effective_at,
                                  actor)
        SELECT :tx, 'reward', :points, :partner, :member, :ref, :at, :actor FROM ok WHERE ok.ok
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        SELECT :tx, v.account_id, v.amount, :at, :actor
        FROM ok, (VALUES (CAST(:wallet AS bigint), -CAST(:points AS bigint)),
                         (CAST(:redemption AS bigint), CAST(:points AS bigint)))
                 v(account_id, amount)
        WHERE ok.ok
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT id, :tx, 'capture', -take, :at, :actor FROM take
    ), r AS (
        {_STORE_RESULT} AND (SELECT ok FROM ok)
    )
    SELECT available, ok FROM ok
    """
)


@dataclass(frozen=True, slots=True)
class RewardSpendRequest:
    """Points taken for a reward delivered by `partner_id`. `digest` is what the client sent;
    `ref` names the reward (e.g. "reward:<reward id>")."""

    actor: str
    key_space: str
    idempotency_key: str
    digest: str
    member_id: uuid.UUID
    partner_id: uuid.UUID
    points: int
    ref: str
    at: datetime | None = None


async def redeem_reward_points(
    conn: AsyncConnection, request: RewardSpendRequest
) -> RewardSpendResult:
    """Take a reward's points from the member's available points at once (one statement after
    the claim). Raises InsufficientPoints (nothing taken) when the available points are short;
    MemberNotFound, PartnerNotFound, LedgerValidation, IdempotencyConflict; a replay returns the
    original result."""
    _check_points(request.points)
    _check_key(request.idempotency_key)
    _check_text(request.ref, "ref")
    at = _at(request.at)
    claim = await _claim_and_lock(
        conn,
        actor=request.actor,
        space=request.key_space,
        op="reward",
        key=request.idempotency_key,
        digest=request.digest,
        member_id=request.member_id,
        partner_id=request.partner_id,
        partner_kind=AccountKind.REDEMPTION,
    )
    if isinstance(claim, dict):
        return RewardSpendResult.from_json(claim, replayed=True)
    await _release_stale_holds(conn, [claim.wallet_id], at)
    tx_id = uuid7()
    result = RewardSpendResult(
        transaction_id=tx_id,
        member_id=request.member_id,
        partner_id=request.partner_id,
        points=request.points,
    )
    row = (
        await conn.execute(
            _REWARD,
            {
                "member": request.member_id,
                "partner": request.partner_id,
                "wallet": claim.wallet_id,
                "redemption": claim.partner_account_id,
                "points": request.points,
                "ref": request.ref,
                "at": at,
                "actor": request.actor,
                "tx": tx_id,
                "result": result.to_json(),
                "claim": claim.claim_id,
            },
        )
    ).one()
    if not row.ok:
        raise InsufficientPoints(
            f"{request.points} points requested, {int(row.available)} available",
            available=int(row.available),
        )
    return result
