"""Redeem: a partner takes a member's points as payment with the member's redemption code
(authorize, then capture or void), and the member issues such codes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from core.clock import utcnow
from core.errors import ErrorCode
from core.errors import ValidationError as DomainValidation
from core.ids import uuid7
from core.metrics import REDEEMED_BY_CAPTURE
from core.money import Money
from ledger import service as ledger
from ledger.errors import HoldNotFound
from ledger.service import CaptureResult, HoldRecord
from loyalty.caches import partner_config
from loyalty.checks import text
from loyalty.runtime import Runtime
from members import codes as member_codes
from partners import service as partners

# What each use case may raise (gateway.graphql checks each mutation's result union against it).
AUTHORIZE_ERRORS = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.PARTNER_NOT_FOUND,
        ErrorCode.NO_AGREEMENT,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        ErrorCode.LIMIT_EXCEEDED,
        ErrorCode.INVALID_REDEMPTION_CODE,
        ErrorCode.INSUFFICIENT_POINTS,
        ErrorCode.MEMBER_NOT_FOUND,
    }
)
CAPTURE_ERRORS = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.PARTNER_NOT_FOUND,
        ErrorCode.NO_AGREEMENT,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        ErrorCode.HOLD_NOT_FOUND,
        ErrorCode.HOLD_NOT_ACTIVE,
    }
)
VOID_ERRORS = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        ErrorCode.HOLD_NOT_FOUND,
        ErrorCode.HOLD_NOT_ACTIVE,
    }
)
ISSUE_CODE_ERRORS = frozenset(
    {ErrorCode.VALIDATION, ErrorCode.PARTNER_NOT_FOUND, ErrorCode.LIMIT_EXCEEDED}
)


@dataclass(frozen=True, slots=True)
class Held:
    """An authorization's hold, as first answered (a replay answers the same)."""

    hold_id: str
    points: int
    expires_at: datetime
    status: str
    replayed: bool

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool) -> Held:
        """The hold as stored with the idempotency key."""
        return cls(
            hold_id=data["id"],
            points=int(data["points"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            status=data["status"],
            replayed=replayed,
        )


@dataclass(frozen=True, slots=True)
class Voided:
    """A voided hold."""

    hold: HoldRecord
    hold_id: uuid.UUID
    replayed: bool


def _hold_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise HoldNotFound("hold not found") from None


async def authorize(
    rt: Runtime,
    *,
    actor: str,
    key_space: str,
    partner_id: uuid.UUID,
    redemption_code: str,
    points: int,
    purchase_amount: str,
    currency: str,
    order_ref: str,
    idempotency_key: str,
) -> Held:
    """Code -> member, bill share check, then the ledger hold; the code is used up only if the
    hold is granted (one unit of work), and every presentation is audited."""
    money = Money.parse(purchase_amount, currency, positive=True)
    order_ref = text(order_ref, "orderRef")
    if isinstance(points, bool) or points <= 0 or points > ledger.MAX_POINTS:
        raise DomainValidation(f"points must be between 1 and {ledger.MAX_POINTS}", field="points")
    cfg = await partner_config(rt, partner_id)
    if money.currency != cfg.partner.currency:
        raise DomainValidation(
            f"purchaseAmount must be in {cfg.partner.currency}", field="purchaseAmount"
        )
    at = utcnow()
    # What the partner sent, nothing derived from it (see the earn).
    payload = {
        "code": member_codes.normalise(redemption_code),
        "points": points,
        "amount": money.amount,
        "currency": money.currency,
        "ref": order_ref,
    }
    # Counted (and committed) before the code is looked at: a burst cannot outrun the throttle.
    async with rt.engine.begin() as conn:
        attempt = await member_codes.begin_attempt(conn, actor=actor, partner_id=partner_id)
    valid: bool | None = None  # what the code turned out to be (None: not decided by it)
    try:
        async with rt.engine.begin() as conn:
            claim = await ledger.claim_key(
                conn,
                actor=actor,
                key_space=key_space,
                operation="authorizeRedemption",
                key=idempotency_key,
                payload=payload,
            )
            if isinstance(claim, dict):
                return Held.from_json(claim, replayed=True)
            # The partner's terms in force now; checked after the replay, which answers as the
            # original did whatever they have become since.
            cfg.require_agreement(at)
            share = cfg.rule.max_redeem_share if cfg.rule else Decimal(1)
            # Points are worth POINT_VALUE each in the settlement currency; a partner's bill in
            # another currency is outside this check (single-currency coalitions are the norm).
            max_points = int(
                (money.amount * share / rt.settings.point_value).to_integral_value(ROUND_FLOOR)
            )
            if points > max_points:
                raise member_codes.CodeLimitExceeded(
                    f"at most {max_points} points may pay this bill ({share:%} of it)"
                )
            hold_id = uuid7()
            code = await member_codes.consume(
                conn, code=redemption_code, partner_id=partner_id, points=points, hold_id=hold_id
            )
            h = await ledger.authorize(
                conn,
                actor=actor,
                key_space=key_space,
                at=at,
                idempotency_key=idempotency_key,
                member_id=code.member_id,
                partner_id=partner_id,
                points=points,
                ref=order_ref,
                purchase_amount=money.amount,
                currency=money.currency,
                ttl=timedelta(minutes=rt.settings.hold_timeout_minutes),
                hold_id=hold_id,
            )
            result = {
                "id": str(h.hold_id),
                "points": h.points,
                "expires_at": h.expires_at.isoformat(),
                "status": h.status,
            }
            await ledger.store_key_result(conn, claim_id=claim, result=result)
        valid = True
    except member_codes.InvalidRedemptionCode:
        valid = False
        raise
    finally:
        # Its own transaction: the audit of a refused code must survive the refusal's rollback.
        async with rt.engine.begin() as conn:
            await member_codes.finish_attempt(conn, attempt_id=attempt, success=valid)
    return Held.from_json(result, replayed=False)


async def capture(
    rt: Runtime,
    *,
    actor: str,
    key_space: str,
    partner_id: uuid.UUID,
    hold_id: str,
    points: int,
    idempotency_key: str,
) -> CaptureResult:
    """Take up to the held points; the rest goes back to the member."""
    at = utcnow()
    # Points are accepted only under an agreement in force at the capture.
    (await partner_config(rt, partner_id)).require_agreement(at)
    async with rt.engine.begin() as conn:
        captured = await ledger.capture(
            conn,
            actor=actor,
            key_space=key_space,
            idempotency_key=idempotency_key,
            partner_id=partner_id,
            hold_id=_hold_id(hold_id),
            points=points,
            at=at,
        )
    if not captured.replayed:
        REDEEMED_BY_CAPTURE.inc(captured.points)
    return captured


async def void(
    rt: Runtime,
    *,
    actor: str,
    key_space: str,
    partner_id: uuid.UUID,
    hold_id: str,
    idempotency_key: str,
) -> Voided:
    """Release a hold."""
    async with rt.engine.begin() as conn:
        r = await ledger.void(
            conn,
            actor=actor,
            key_space=key_space,
            idempotency_key=idempotency_key,
            partner_id=partner_id,
            hold_id=_hold_id(hold_id),
        )
        hold = await ledger.get_hold(conn, hold_id=r.hold_id)
    return Voided(hold=hold, hold_id=r.hold_id, replayed=r.replayed)


async def issue_code(
    rt: Runtime,
    *,
    member_id: uuid.UUID,
    max_points: int | None,
    partner_id: str | None,
) -> tuple[member_codes.IssuedCode, uuid.UUID | None]:
    """A single-use code by which the member lets a partner (any, or `partner_id`) take points;
    with the partner it is bound to."""
    pid = None
    if partner_id is not None:
        try:
            pid = uuid.UUID(str(partner_id))
        except ValueError:
            raise DomainValidation("partnerId is not a valid id", field="partnerId") from None
    async with rt.engine.begin() as conn:
        if pid is not None:
            await partners.get(conn, partner_id=pid)
        code = await member_codes.create(
            conn, member_id=member_id, max_points=max_points, partner_id=pid
        )
    return code, pid
