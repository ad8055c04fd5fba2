"""Refunds in the ledger: the reversal of an earn, the return of captured points."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7
from ledger.claims import (
    _STORE_RESULT,
    _at,
    _check_key,
    _check_points,
    _claim_and_lock,
    request_hash,
)
from ledger.errors import (
    HoldNotActive,
    LedgerValidation,
    TransactionNotFound,
)
from ledger.holds import _LOCK_HOLD, _hold_member, _hold_state, _release_stale_holds
from ledger.models import AccountKind, HoldStatus
from ledger.results import ReturnResult, ReversalResult

# The lot an earn created (not a bonus's, nor the lots transfers made of it: they name the
# same earn, `ledger.models.Lot`).
_LOT_OF_EARN = text(
    "SELECT l.id, l.member_id, l.issuer_id, l.points, l.reversed FROM lots l "
    "JOIN transactions t ON t.id = l.earn_tx_id AND t.kind = 'earn' "
    "WHERE l.earn_tx_id = :tx AND l.transfer_tx_id IS NULL"
)

# Take the reversed points from the earn's own lot first, then the member's other pending
# lots, then available ones (FIFO); what is missing becomes the member's debt.
_REVERSE = text(
    """
    WITH c AS (
        SELECT id, remaining,
               sum(remaining) OVER (ORDER BY (id = :lot) DESC, (available_at > :at) DESC,
                                             expires_at, earned_at, id) AS cum
        FROM lots
        WHERE member_id = :member AND remaining > 0 AND expires_at > :at
    ), take AS (
        SELECT id, LEAST(remaining, :points - (cum - remaining)) AS take
        FROM c WHERE cum - remaining < :points
    ), chg AS (
        SELECT coalesce(take.id, o.id) AS id, coalesce(take.take, 0) AS take,
               CASE WHEN coalesce(take.id, o.id) = :lot THEN :points ELSE 0 END AS rev
        FROM take FULL JOIN (SELECT CAST(:lot AS bigint) AS id) o ON o.id = take.id
    ), ul AS (
        UPDATE lots l SET remaining = l.remaining - chg.take, reversed = l.reversed + chg.rev
        FROM chg WHERE l.id = chg.id
    ), tot AS (
        SELECT coalesce(sum(take), 0) AS y FROM take
    ), t AS (
        INSERT INTO transactions (id, kind, points, partner_id, member_id, reverses_id, ref,
                                  effective_at, actor)
        VALUES (:tx, 'reversal', :points, :partner, :member, :earn_tx, :ref, :at, :actor)
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        SELECT :tx, v.account_id, v.amount, :at, :actor
        FROM tot, LATERAL (VALUES (CAST(:issuance AS bigint), CAST(:points AS bigint)),
                                  (:wallet, -tot.y),
                                  (:debt, tot.y - :points)) v(account_id, amount)
        WHERE v.amount <> 0
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT id, :tx, 'reversal', -take, :at, :actor FROM take WHERE take > 0
    ), r AS (
        UPDATE idempotency_keys SET result = jsonb_build_object(
            'transaction_id', CAST(:tx AS text), 'points', CAST(:points AS bigint),
            'from_wallet', tot.y, 'to_debt', :points - tot.y)
        FROM tot WHERE id = :claim
    )
    SELECT y FROM tot
    """
)


async def reverse_earn(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    partner_id: uuid.UUID,
    earn_transaction_id: uuid.UUID,
    points: int,
    ref: str | None = None,
    at: datetime | None = None,
    key_space: str | None = None,
) -> ReversalResult:
    """Take back `points` of an earn (a refund): the wallet never goes negative; the
    shortfall becomes the member's debt, repaid by later earnings."""
    _check_points(points)
    _check_key(idempotency_key)
    at = _at(at)
    lot = (await conn.execute(_LOT_OF_EARN, {"tx": earn_transaction_id})).one_or_none()
    if lot is None or lot.issuer_id != partner_id:
        raise TransactionNotFound(f"earn {earn_transaction_id} not found")
    digest = request_hash("reverse", {"earn": earn_transaction_id, "points": points, "ref": ref})
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="reverse",
        key=idempotency_key,
        digest=digest,
        member_id=lot.member_id,
        partner_id=partner_id,
    )
    if isinstance(claim, dict):
        return ReversalResult.from_json(claim, replayed=True)
    # Read again under the member's lock: a concurrent reversal may have moved it.
    lot = (await conn.execute(_LOT_OF_EARN, {"tx": earn_transaction_id})).one()
    if lot.reversed + points > lot.points:
        raise LedgerValidation(
            f"cannot reverse {points} points: {lot.points - lot.reversed} of this earn remain"
        )
    await _release_stale_holds(conn, [claim.wallet_id], at)
    tx_id = uuid7()
    y = (
        await conn.execute(
            _REVERSE,
            {
                "lot": lot.id,
                "member": lot.member_id,
                "points": points,
                "at": at,
                "tx": tx_id,
                "partner": partner_id,
                "earn_tx": earn_transaction_id,
                "ref": ref,
                "actor": actor,
                "issuance": claim.partner_account_id,
                "wallet": claim.wallet_id,
                "debt": claim.debt_id,
                "claim": claim.claim_id,
            },
        )
    ).scalar_one()
    return ReversalResult(
        transaction_id=tx_id, points=points, from_wallet=int(y), to_debt=points - int(y)
    )


# Return captured points into the lots they came from, last captured first.
_RETURN = text(
    f"""
    WITH al AS (
        SELECT seq, lot_id, captured - returned AS open,
               sum(captured - returned) OVER (ORDER BY seq DESC) AS cum
        FROM hold_allocations WHERE hold_id = :hold AND captured > returned
    ), back AS (
        SELECT seq, lot_id, LEAST(open, :points - (cum - open)) AS back
        FROM al WHERE cum - open < :points
    ), ua AS (
        UPDATE hold_allocations a SET returned = a.returned + back.back
        FROM back WHERE a.hold_id = :hold AND a.seq = back.seq
    ), ul AS (
        UPDATE lots l SET remaining = l.remaining + back.back FROM back WHERE l.id = back.lot_id
    ), t AS (
        INSERT INTO transactions (id, kind, points, partner_id, member_id, hold_id, reverses_id,
                                  ref, effective_at, actor)
        VALUES (:tx, 'return', :points, :partner, :member, :hold, :capture_tx, :ref, :at, :actor)
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        VALUES (:tx, :redemption, -CAST(:points AS bigint), :at, :actor),
               (:tx, :wallet, CAST(:points AS bigint), :at, :actor)
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT lot_id, :tx, 'return', back, :at, :actor FROM back
    ), uh AS (
        UPDATE holds SET returned = returned + :points WHERE id = :hold
    )
    {_STORE_RESULT}
    """
)


async def return_points(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    partner_id: uuid.UUID,
    hold_id: uuid.UUID,
    points: int,
    ref: str | None = None,
    at: datetime | None = None,
    key_space: str | None = None,
) -> ReturnResult:
    """Give captured points back to the member (a refund of a purchase paid with points),
    into the lots they came from, with their original expiry."""
    _check_points(points)
    _check_key(idempotency_key)
    at = _at(at)
    member_id = await _hold_member(conn, hold_id, partner_id)
    digest = request_hash("return", {"hold": hold_id, "points": points, "ref": ref})
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="return",
        key=idempotency_key,
        digest=digest,
        member_id=member_id,
        partner_id=partner_id,
        partner_kind=AccountKind.REDEMPTION,
    )
    if isinstance(claim, dict):
        return ReturnResult.from_json(claim, replayed=True)
    hold = (await conn.execute(_LOCK_HOLD, {"hold": hold_id})).one()
    if hold.status != HoldStatus.CAPTURED:
        raise HoldNotActive(f"hold {hold_id} was not captured (it is {_hold_state(hold, at)})")
    if hold.returned + points > hold.captured:
        raise LedgerValidation(
            f"cannot return {points} points: {hold.captured - hold.returned} captured remain"
        )
    tx_id = uuid7()
    result = ReturnResult(transaction_id=tx_id, hold_id=hold_id, points=points)
    await conn.execute(
        _RETURN,
        {
            "hold": hold_id,
            "points": points,
            "tx": tx_id,
            "partner": partner_id,
            "member": member_id,
            "capture_tx": hold.capture_tx_id,
            "ref": ref,
            "at": at,
            "actor": actor,
            "redemption": claim.partner_account_id,
            "wallet": claim.wallet_id,
            "result": result.to_json(),
            "claim": claim.claim_id,
        },
    )
    return result
