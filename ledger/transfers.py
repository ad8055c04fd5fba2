"""Transfers: a member gives available points to another member (family).

The points keep their issuer, earn date, availability and expiry: the sender's lots give them
earliest-expiry first (the FIFO of `authorize`), and the receiver gets one new lot per lot
given, carrying those (`ledger.models.Lot`). A transfer is not a settlement event: no partner
account moves, only the two wallets (and the receiver's debt).

The receiver's debt is repaid first from what it receives, as an earn repays it: otherwise a
member in debt could have family members collect and pass on the points the debt is owed
from. The repaid points are the first taken (earliest expiry); they leave the lots (a `transfer`
posting of -N on the sender's lot with no +N) for the debt account, as the repaid part of an
earn never enters its lot.

Daily limit: the sender's transfers in the 24 hours before `at` (and any dated after it), plus
this one, may not exceed `daily_limit`. It is read under the sender's wallet lock, which every
transfer of the sender takes: two transfers by one sender run one after the other, and the
second reads the first, whichever read the clock first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7
from ledger.claims import MAX_POINTS, _at, _check_key, _check_points, _replay
from ledger.errors import (
    InsufficientPoints,
    LedgerValidation,
    MemberNotFound,
    TransferLimitExceeded,
)
from ledger.holds import _release_stale_holds
from ledger.results import TransferResult

TRANSFER_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """Points given by `from_member_id` to `to_member_id`. `digest` is what the client sent;
    `daily_limit`: the most points one sender may give per rolling 24 h (None: no limit)."""

    actor: str
    key_space: str
    idempotency_key: str
    digest: str
    from_member_id: uuid.UUID
    to_member_id: uuid.UUID
    points: int
    daily_limit: int | None
    at: datetime | None = None


# Claim the key, then (only if claimed) lock the wallet and debt rows of both members in
# ascending account id: the order every operation locks member accounts in (ledger.service), so
# that transfers A->B and B->A, or a transfer and the expiry job, wait for each other instead
# of deadlocking. Zero rows: the key exists already -> replay.
_CLAIM_AND_LOCK_TWO = text(
    """
    WITH claim AS (
        INSERT INTO idempotency_keys (key_space, actor, operation, key, request_hash)
        VALUES (:space, :actor, 'transfer', :key, :hash)
        ON CONFLICT (key_space, operation, key) DO NOTHING
        RETURNING id
    )
    SELECT claim.id AS claim_id, a.owner_id,
           max(a.id) FILTER (WHERE a.kind = 'wallet') AS wallet_id,
           max(a.id) FILTER (WHERE a.kind = 'debt') AS debt_id,
           max(a.balance) FILTER (WHERE a.kind = 'debt') AS debt_balance
    FROM claim
    LEFT JOIN LATERAL (
        SELECT id, kind, balance, owner_id FROM accounts
        WHERE owner_id IN (:sender, :receiver) AND kind IN ('wallet', 'debt')
        ORDER BY id
        FOR UPDATE
    ) a ON true
    GROUP BY claim.id, a.owner_id
    """
)

# Also the sender's transfers dated after `at`: a concurrent transfer that read the clock after
# this one but took the sender's lock first. So every 24-hour window holds at most the limit:
# the last transfer written into a window, dated in it, counted everything written before it
# from the window's start on.
_SENT_SINCE = text(
    "SELECT coalesce(sum(points), 0) FROM transactions "
    "WHERE kind = 'transfer' AND member_id = :sender AND effective_at > :since"
)

# The sender's spendable lots FIFO; the first :repaid points taken repay the receiver's debt,
# the rest become the receiver's lots. Writes only if the whole amount is there.
_TRANSFER = text(
    """
    WITH c AS (
        SELECT id, remaining, issuer_id, earn_tx_id, earned_at, available_at, expires_at,
               sum(remaining) OVER (ORDER BY expires_at, earned_at, id) AS cum
        FROM lots
        WHERE member_id = :sender AND remaining > 0 AND available_at <= :at AND expires_at > :at
    ), ok AS (
        SELECT coalesce(max(cum), 0) AS available, coalesce(max(cum), 0) >= :points AS ok FROM c
    ), take AS (
        SELECT c.*, c.cum - c.remaining AS prior,
               LEAST(c.remaining, :points - (c.cum - c.remaining)) AS take
        FROM c, ok WHERE ok.ok AND c.cum - c.remaining < :points
    ), give AS (
        SELECT take.*, take.take - GREATEST(0, LEAST(take.take, :repaid - take.prior)) AS given
        FROM take
    ), u AS (
        UPDATE lots l SET remaining = l.remaining - take.take FROM take WHERE l.id = take.id
    ), nl AS (
        INSERT INTO lots (member_id, wallet_id, issuer_id, earn_tx_id, points, remaining,
                          earned_at, available_at, expires_at, actor, origin_lot_id,
                          transfer_tx_id)
        SELECT :receiver, :to_wallet, issuer_id, earn_tx_id, given, given, earned_at,
               available_at, expires_at, :actor, id, :tx
        FROM give WHERE given > 0
        ORDER BY cum  -- ids in the order given: ties in FIFO are broken by id
        RETURNING id, points
    ), t AS (
        INSERT INTO transactions (id, kind, points, member_id, effective_at, actor)
        SELECT :tx, 'transfer', :points, :sender, :at, :actor FROM ok WHERE ok.ok
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        SELECT :tx, v.account_id, v.amount, :at, :actor
        FROM ok, (VALUES (CAST(:from_wallet AS bigint), -CAST(:points AS bigint)),
                         (CAST(:to_wallet AS bigint), CAST(:points AS bigint) - :repaid),
                         (CAST(:to_debt AS bigint), CAST(:repaid AS bigint)))
                 v(account_id, amount)
        WHERE ok.ok AND v.amount <> 0
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT id, :tx, 'transfer', -take, :at, :actor FROM take
        UNION ALL
        SELECT id, :tx, 'transfer', points, :at, :actor FROM nl
    ), r AS (
        UPDATE idempotency_keys SET result = CAST(:result AS jsonb)
        WHERE id = :claim AND (SELECT ok FROM ok)
    )
    SELECT available, ok FROM ok
    """
)


def _check_transfer(request: TransferRequest) -> datetime:
    _check_points(request.points)
    _check_key(request.idempotency_key)
    if request.from_member_id == request.to_member_id:
        raise LedgerValidation("a member cannot transfer points to themselves")
    limit = request.daily_limit
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_POINTS
    ):
        raise LedgerValidation(f"daily_limit must be a whole number in 0..{MAX_POINTS} or none")
    return _at(request.at)


async def transfer_points(conn: AsyncConnection, request: TransferRequest) -> TransferResult:
    """Move available points from one member to another, keeping their issuer and dates (one
    statement after the claim, the limit check and the release of stale holds).

    Raises LedgerValidation (to oneself, bad points or limit), MemberNotFound,
    TransferLimitExceeded, InsufficientPoints (the sender's available points are short),
    IdempotencyConflict; nothing is written then. A replay returns the original result."""
    at = _check_transfer(request)
    sender, receiver = request.from_member_id, request.to_member_id
    space = request.key_space or request.actor
    rows = (
        await conn.execute(
            _CLAIM_AND_LOCK_TWO,
            {
                "space": space,
                "actor": request.actor,
                "key": request.idempotency_key,
                "hash": request.digest,
                "sender": sender,
                "receiver": receiver,
            },
        )
    ).all()
    if not rows:
        stored = await _replay(conn, space, "transfer", request.idempotency_key, request.digest)
        return TransferResult.from_json(stored, replayed=True)
    accounts: dict[uuid.UUID, Any] = {r.owner_id: r for r in rows if r.owner_id is not None}
    for member in (sender, receiver):
        if member not in accounts:
            raise MemberNotFound(f"member {member} not found")
    claim_id = rows[0].claim_id
    points = request.points

    if request.daily_limit is not None:
        sent = (
            await conn.execute(_SENT_SINCE, {"sender": sender, "since": at - TRANSFER_WINDOW})
        ).scalar_one()
        if int(sent) + points > request.daily_limit:
            raise TransferLimitExceeded(
                f"transferring {points} points would exceed the daily limit of "
                f"{request.daily_limit} ({int(sent)} transferred in the last 24 hours)",
                limit=request.daily_limit,
                used=int(sent),
            )

    await _release_stale_holds(conn, [accounts[sender].wallet_id], at)
    repaid = min(points, -int(accounts[receiver].debt_balance))
    tx_id = uuid7()
    result = TransferResult(
        transaction_id=tx_id,
        from_member_id=sender,
        to_member_id=receiver,
        points=points,
        debt_repaid=repaid,
    )
    row = (
        await conn.execute(
            _TRANSFER,
            {
                "sender": sender,
                "receiver": receiver,
                "from_wallet": accounts[sender].wallet_id,
                "to_wallet": accounts[receiver].wallet_id,
                "to_debt": accounts[receiver].debt_id,
                "points": points,
                "repaid": repaid,
                "at": at,
                "actor": request.actor,
                "tx": tx_id,
                "result": result.to_json(),
                "claim": claim_id,
            },
        )
    ).one()
    if not row.ok:
        raise InsufficientPoints(
            f"{points} points requested, {int(row.available)} available",
            available=int(row.available),
        )
    return result
