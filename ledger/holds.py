"""Authorize, capture, void: reserving a member's points for a purchase."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7
from ledger import outbox
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
    HoldNotFound,
    InsufficientPoints,
    LedgerValidation,
)
from ledger.models import AccountKind, HoldStatus
from ledger.results import CaptureResult, HoldResult, VoidResult

DEFAULT_HOLD_TTL = timedelta(minutes=30)


# Release this member's holds whose time ran out: their reserved points go back to their lots.
_RELEASE_STALE_HOLDS = text(
    """
    WITH h AS (
        UPDATE holds SET status = 'expired', resolved_at = expires_at
        WHERE wallet_id = ANY(:wallets) AND status = 'active' AND expires_at <= :at
        RETURNING id
    ), back AS (
        SELECT a.lot_id, sum(a.points) AS pts
        FROM hold_allocations a JOIN h ON h.id = a.hold_id
        GROUP BY a.lot_id
    )
    UPDATE lots l SET remaining = l.remaining + back.pts FROM back WHERE l.id = back.lot_id
    """
)


async def _release_stale_holds(conn: AsyncConnection, wallet_ids: list[int], at: datetime) -> None:
    await conn.execute(_RELEASE_STALE_HOLDS, {"wallets": wallet_ids, "at": at})


# FIFO over spendable lots: earliest expiry first, ties by earning order. Reserves only if the
# whole amount is there (ok = false writes nothing).
_AUTHORIZE = text(
    f"""
    WITH c AS (
        SELECT id, remaining,
               sum(remaining) OVER (ORDER BY expires_at, earned_at, id) AS cum
        FROM lots
        WHERE member_id = :member AND remaining > 0 AND available_at <= :at AND expires_at > :at
    ), ok AS (
        SELECT coalesce(max(cum), 0) AS available, coalesce(max(cum), 0) >= :points AS ok FROM c
    ), take AS (
        SELECT c.id, LEAST(c.remaining, :points - (c.cum - c.remaining)) AS take,
               row_number() OVER (ORDER BY c.cum) AS seq
        FROM c, ok WHERE ok.ok AND c.cum - c.remaining < :points
    ), h AS (
        INSERT INTO holds (id, member_id, wallet_id, partner_id, points, status, order_ref,
                           purchase_amount, currency, created_at, expires_at, actor)
        SELECT :hold, :member, :wallet, :partner, :points, 'active', :ref, :amount, :currency,
               :at, :expires_at, :actor
        FROM ok WHERE ok.ok
        RETURNING id
    ), u AS (
        UPDATE lots l SET remaining = l.remaining - take.take FROM take WHERE l.id = take.id
    ), a AS (
        INSERT INTO hold_allocations (hold_id, seq, lot_id, points)
        SELECT h.id, take.seq, take.id, take.take FROM take, h
    ){outbox.AUTHORIZED_EVENT_CTE}, r AS (
        {_STORE_RESULT} AND (SELECT ok FROM ok)
    )
    SELECT available, ok FROM ok
    """
)


async def authorize(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    member_id: uuid.UUID,
    partner_id: uuid.UUID,
    points: int,
    ref: str | None = None,
    purchase_amount: Decimal | None = None,
    currency: str | None = None,
    ttl: timedelta = DEFAULT_HOLD_TTL,
    hold_id: uuid.UUID | None = None,
    at: datetime | None = None,
    key_space: str | None = None,
) -> HoldResult:
    """Reserve `points` of a member's available points for `partner_id` until `at + ttl`."""
    _check_points(points)
    _check_key(idempotency_key)
    at = _at(at)
    digest = request_hash(
        "authorize",
        {
            "member": member_id,
            "partner": partner_id,
            "points": points,
            "ref": ref,
            "amount": purchase_amount,
            "currency": currency,
            "ttl": ttl,
        },
    )
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="authorize",
        key=idempotency_key,
        digest=digest,
        member_id=member_id,
        partner_id=partner_id,
        partner_kind=AccountKind.REDEMPTION,
    )
    if isinstance(claim, dict):
        return HoldResult.from_json(claim, replayed=True)
    await _release_stale_holds(conn, [claim.wallet_id], at)
    hold_id = hold_id or uuid7()
    result = HoldResult(hold_id=hold_id, points=points, expires_at=at + ttl)
    row = (
        await conn.execute(
            _AUTHORIZE,
            {
                "member": member_id,
                "partner": partner_id,
                "wallet": claim.wallet_id,
                "points": points,
                "ref": ref,
                "at": at,
                "expires_at": at + ttl,
                "actor": actor,
                "amount": purchase_amount,
                "currency": currency,
                "hold": hold_id,
                "result": result.to_json(),
                "claim": claim.claim_id,
            },
        )
    ).one()
    if not row.ok:
        raise InsufficientPoints(
            f"{points} points requested, {int(row.available)} available",
            available=int(row.available),
        )
    return result


_HOLD_OWNER = text("SELECT member_id, partner_id FROM holds WHERE id = :hold")
_LOCK_HOLD = text(
    "SELECT status, points, captured, returned, expires_at, capture_tx_id, order_ref "
    "FROM holds WHERE id = :hold FOR UPDATE"
)


async def _hold_member(
    conn: AsyncConnection, hold_id: uuid.UUID, partner_id: uuid.UUID
) -> uuid.UUID:
    row = (await conn.execute(_HOLD_OWNER, {"hold": hold_id})).one_or_none()
    # Another partner's hold is indistinguishable from a missing one.
    if row is None or row.partner_id != partner_id:
        raise HoldNotFound(f"hold {hold_id} not found")
    return row.member_id


_CAPTURE = text(
    f"""
    WITH al AS (
        SELECT seq, lot_id, points, sum(points) OVER (ORDER BY seq) AS cum
        FROM hold_allocations WHERE hold_id = :hold
    ), cap AS (
        SELECT seq, lot_id, points, GREATEST(0, LEAST(points, :points - (cum - points))) AS cap
        FROM al
    ), ua AS (
        UPDATE hold_allocations a SET captured = cap.cap
        FROM cap WHERE a.hold_id = :hold AND a.seq = cap.seq AND cap.cap > 0
    ), ul AS (
        UPDATE lots l SET remaining = l.remaining + cap.points - cap.cap
        FROM cap WHERE l.id = cap.lot_id AND cap.points > cap.cap
    ), t AS (
        INSERT INTO transactions (id, kind, points, partner_id, member_id, hold_id, ref,
                                  effective_at, actor)
        VALUES (:tx, 'capture', :points, :partner, :member, :hold, :ref, :at, :actor)
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        VALUES (:tx, :wallet, -CAST(:points AS bigint), :at, :actor),
               (:tx, :redemption, CAST(:points AS bigint), :at, :actor)
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT lot_id, :tx, 'capture', -cap, :at, :actor FROM cap WHERE cap > 0
    ), uh AS (
        UPDATE holds SET status = 'captured', captured = :points, capture_tx_id = :tx,
                         resolved_at = :at
        WHERE id = :hold
    ){outbox.CAPTURED_EVENT_CTE}
    {_STORE_RESULT}
    """
)


def capture_digest(hold_id: uuid.UUID, points: int) -> str:
    """A capture request as the partner sent it."""
    return request_hash("capture", {"hold": hold_id, "points": points})


async def capture(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    partner_id: uuid.UUID,
    hold_id: uuid.UUID,
    points: int,
    at: datetime | None = None,
    key_space: str | None = None,
) -> CaptureResult:
    """Post up to the held points to the partner's redemption account; release the rest."""
    _check_points(points)
    _check_key(idempotency_key)
    at = _at(at)
    member_id = await _hold_member(conn, hold_id, partner_id)
    digest = capture_digest(hold_id, points)
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="capture",
        key=idempotency_key,
        digest=digest,
        member_id=member_id,
        partner_id=partner_id,
        partner_kind=AccountKind.REDEMPTION,
    )
    if isinstance(claim, dict):
        return CaptureResult.from_json(claim, replayed=True)
    hold = await _lock_live_hold(conn, hold_id, at)
    if points > hold.points:
        raise LedgerValidation(f"cannot capture {points} points: the hold is for {hold.points}")
    tx_id = uuid7()
    result = CaptureResult(
        transaction_id=tx_id, hold_id=hold_id, points=points, released=hold.points - points
    )
    await conn.execute(
        _CAPTURE,
        {
            "hold": hold_id,
            "points": points,
            "tx": tx_id,
            "partner": partner_id,
            "member": member_id,
            "ref": hold.order_ref,
            "at": at,
            "actor": actor,
            "wallet": claim.wallet_id,
            "redemption": claim.partner_account_id,
            "released": hold.points - points,
            "result": result.to_json(),
            "claim": claim.claim_id,
        },
    )
    return result


def _hold_state(hold: Any, at: datetime) -> str:
    if hold.status == HoldStatus.ACTIVE and hold.expires_at <= at:
        return HoldStatus.EXPIRED
    return str(hold.status)


async def _lock_live_hold(conn: AsyncConnection, hold_id: uuid.UUID, at: datetime) -> Any:
    """The hold, locked (after the claim's wallet lock: the lock order of ledger.service);
    refused unless it is active and unexpired at `at`."""
    hold = (await conn.execute(_LOCK_HOLD, {"hold": hold_id})).one()
    if hold.status != HoldStatus.ACTIVE or hold.expires_at <= at:
        raise HoldNotActive(f"hold {hold_id} is {_hold_state(hold, at)}")
    return hold


_VOID = text(
    f"""
    WITH back AS (
        SELECT lot_id, sum(points) AS pts FROM hold_allocations WHERE hold_id = :hold GROUP BY lot_id
    ), ul AS (
        UPDATE lots l SET remaining = l.remaining + back.pts FROM back WHERE l.id = back.lot_id
    ), uh AS (
        UPDATE holds SET status = 'voided', resolved_at = :at WHERE id = :hold
    ){outbox.VOIDED_EVENT_CTE}
    {_STORE_RESULT}
    """
)


async def void(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    partner_id: uuid.UUID,
    hold_id: uuid.UUID,
    at: datetime | None = None,
    key_space: str | None = None,
) -> VoidResult:
    """Release a live hold: its points are spendable again, in their original lots."""
    _check_key(idempotency_key)
    at = _at(at)
    member_id = await _hold_member(conn, hold_id, partner_id)
    digest = request_hash("void", {"hold": hold_id})
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="void",
        key=idempotency_key,
        digest=digest,
        member_id=member_id,
    )
    if isinstance(claim, dict):
        return VoidResult.from_json(claim, replayed=True)
    hold = await _lock_live_hold(conn, hold_id, at)
    result = VoidResult(hold_id=hold_id, released=hold.points)
    await conn.execute(
        _VOID,
        {
            "hold": hold_id,
            "at": at,
            "partner": partner_id,
            "member": member_id,
            "ref": hold.order_ref,
            "released": hold.points,
            "result": result.to_json(),
            "claim": claim.claim_id,
        },
    )
    return result
