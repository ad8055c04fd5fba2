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
from ledger.earn import PROMOTIONS_ACCOUNT
from ledger.errors import (
    HoldNotActive,
    LedgerValidation,
    TransactionNotFound,
)
from ledger.holds import _LOCK_HOLD, _hold_member, _hold_state, _release_stale_holds
from ledger.models import AccountKind, HoldStatus
from ledger.results import ReturnResult, ReversalResult

# An earn and the lots it created (not a bonus's, nor the lots transfers made of it: they name
# the same earn, `ledger.models.Lot`): the partner's lot first, then the operator's (its
# coalition-wide offer points), either absent when the earn had no points of that funder.
_EARN_AND_LOTS = text(
    "SELECT t.partner_id, t.member_id, t.points, t.operator_points, l.id AS lot_id, "
    "l.issuer_id, coalesce(l.reversed, 0) AS reversed "
    "FROM transactions t "
    "LEFT JOIN lots l ON l.earn_tx_id = t.id AND l.transfer_tx_id IS NULL "
    "WHERE t.id = :tx AND t.kind = 'earn' "
    "ORDER BY l.issuer_id NULLS LAST"
)

# Take the reversed points back: each funder's share first from its own lot of the earn (the
# partner's `:issued` from `:issuer_lot`, the operator's `:operator` from `:operator_lot`),
# what is still missing from what remains of the earn's lots, then from the member's other
# pending lots, then available ones (FIFO); what is missing after that becomes the member's
# debt. The partner's share goes back to its issuance account, the operator's to `promotions`.
_REVERSE = text(
    f"""
    WITH own AS (
        SELECT id, rev, n FROM (VALUES (CAST(:issuer_lot AS bigint), CAST(:issued AS bigint), 0),
                                       (CAST(:operator_lot AS bigint), CAST(:operator AS bigint), 1))
                               v(id, rev, n)
        WHERE id IS NOT NULL
    ), c0 AS (
        SELECT l.id, l.remaining, o.n, LEAST(l.remaining, coalesce(o.rev, 0)) AS first,
               l.available_at, l.expires_at, l.earned_at
        FROM lots l LEFT JOIN own o ON o.id = l.id
        WHERE l.member_id = :member AND l.remaining > 0 AND l.expires_at > :at
    ), short AS (
        SELECT :points - coalesce(sum(first), 0) AS pts FROM c0
    ), c AS (
        SELECT id, first, remaining - first AS rest,
               sum(remaining - first) OVER (ORDER BY (n IS NOT NULL) DESC, n,
                                                     (available_at > :at) DESC, expires_at,
                                                     earned_at, id) AS cum
        FROM c0
    ), take AS (
        SELECT c.id, c.first + LEAST(c.rest, GREATEST(short.pts - (c.cum - c.rest), 0)) AS take
        FROM c, short WHERE c.first > 0 OR c.cum - c.rest < short.pts
    ), chg AS (
        SELECT coalesce(take.id, own.id) AS id, coalesce(take.take, 0) AS take,
               coalesce(own.rev, 0) AS rev
        FROM take FULL JOIN own ON own.id = take.id
    ), ul AS (
        UPDATE lots l SET remaining = l.remaining - chg.take, reversed = l.reversed + chg.rev
        FROM chg WHERE l.id = chg.id
    ), tot AS (
        SELECT coalesce(sum(take), 0) AS y FROM take
    ), t AS (
        INSERT INTO transactions (id, kind, points, operator_points, partner_id, member_id,
                                  reverses_id, ref, effective_at, actor)
        VALUES (:tx, 'reversal', :points, :operator, :partner, :member, :earn_tx, :ref, :at,
                :actor)
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        SELECT :tx, v.account_id, v.amount, :at, :actor
        FROM tot, LATERAL (VALUES (CAST(:issuance AS bigint), CAST(:issued AS bigint)),
                                  ({PROMOTIONS_ACCOUNT}, CAST(:operator AS bigint)),
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


def operator_share(points: int, operator_points: int, reversed_after: int) -> int:
    """Of an earn of `points`, `operator_points` of them the operator's, the operator's part of
    the first `reversed_after` points reversed: floor(operator_points x reversed_after /
    points). A function of the total reversed alone, so that refunds in parts add up to a
    whole refund's split exactly; both parts only grow with it (the partner's is the rest)."""
    return operator_points * reversed_after // points


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
    """Take back `points` of an earn (a refund), split pro rata between the partner's points
    and the operator's (`operator_share`), each returned to its funder: the wallet never goes
    negative; the shortfall becomes the member's debt, repaid by later earnings."""
    _check_points(points)
    _check_key(idempotency_key)
    at = _at(at)
    rows = (await conn.execute(_EARN_AND_LOTS, {"tx": earn_transaction_id})).all()
    if not rows or rows[0].partner_id != partner_id:
        raise TransactionNotFound(f"earn {earn_transaction_id} not found")
    digest = request_hash("reverse", {"earn": earn_transaction_id, "points": points, "ref": ref})
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="reverse",
        key=idempotency_key,
        digest=digest,
        member_id=rows[0].member_id,
        partner_id=partner_id,
    )
    if isinstance(claim, dict):
        return ReversalResult.from_json(claim, replayed=True)
    # Read again under the member's lock: a concurrent reversal may have moved them.
    rows = (await conn.execute(_EARN_AND_LOTS, {"tx": earn_transaction_id})).all()
    earn = rows[0]
    issuer_lot = next((r for r in rows if r.lot_id is not None and r.issuer_id is not None), None)
    operator_lot = next((r for r in rows if r.lot_id is not None and r.issuer_id is None), None)
    reversed_before = sum(r.reversed for r in rows)
    if reversed_before + points > earn.points:
        raise LedgerValidation(
            f"cannot reverse {points} points: {earn.points - reversed_before} of this earn remain"
        )
    operator = operator_share(earn.points, earn.operator_points, reversed_before + points) - (
        0 if operator_lot is None else operator_lot.reversed
    )
    await _release_stale_holds(conn, [claim.wallet_id], at)
    tx_id = uuid7()
    y = (
        await conn.execute(
            _REVERSE,
            {
                "issuer_lot": None if issuer_lot is None else issuer_lot.lot_id,
                "operator_lot": None if operator_lot is None else operator_lot.lot_id,
                "issued": points - operator,
                "operator": operator,
                "member": earn.member_id,
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
