"""Bonuses: points given for a non-purchase event (sign-up, referral, a partner's review bonus).

A bonus is an earn without a purchase: one lot, available at once, expiring `validity_months`
later, issued by the partner that funds it (its issuance account) or by the operator (the
`promotions` account; the lot names no issuer). A member's debt is repaid from it first, as
from an earn.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7
from ledger.claims import _at, _check_key, _check_points, _check_text, _claim_and_lock
from ledger.earn import DEFAULT_VALIDITY_MONTHS, _earn_statement, add_months
from ledger.errors import LedgerValidation
from ledger.models import AccountKind, TransactionKind
from ledger.results import BonusResult

MAX_REASON_LENGTH = 200
MAX_VALIDITY_MONTHS = 1200

_BONUS = {
    (w, d): _earn_statement(w, d, TransactionKind.BONUS)
    for w in (True, False)
    for d in (True, False)
}
_PROMOTIONS = text("SELECT id FROM accounts WHERE kind = :kind AND owner_id IS NULL")


@dataclass(frozen=True, slots=True)
class BonusRequest:
    """A bonus. `digest` is what the client sent (a replay under the same key and digest gets
    the original result; another digest is a conflict). `issuer_id`: the partner that funds it,
    None for the operator. `reason`: "signup", "referral" or the partner's text ("review"),
    stored as the transaction's category."""

    actor: str
    key_space: str
    idempotency_key: str
    digest: str
    member_id: uuid.UUID
    issuer_id: uuid.UUID | None
    points: int
    reason: str
    ref: str | None = None
    at: datetime | None = None
    validity_months: int = DEFAULT_VALIDITY_MONTHS


def check_bonus(request: BonusRequest) -> datetime:
    """Refuse a malformed bonus before anything is written; returns its effective time."""
    _check_points(request.points)
    _check_key(request.idempotency_key)
    if not isinstance(request.reason, str) or not request.reason.strip():
        raise LedgerValidation("a bonus needs a reason")
    if len(request.reason) > MAX_REASON_LENGTH:
        raise LedgerValidation(f"reason must be at most {MAX_REASON_LENGTH} characters")
    _check_text(request.reason, "reason")
    _check_text(request.ref, "ref")
    months = request.validity_months
    if isinstance(months, bool) or not isinstance(months, int):
        raise LedgerValidation("validity_months must be a whole number")
    if not 1 <= months <= MAX_VALIDITY_MONTHS:
        raise LedgerValidation(f"validity_months must be between 1 and {MAX_VALIDITY_MONTHS}")
    return _at(request.at)


async def award_bonus(conn: AsyncConnection, request: BonusRequest) -> BonusResult:
    """Credit a bonus to a member as a new lot, available at once (one statement after the
    claim). Raises MemberNotFound, PartnerNotFound (an unknown issuer), LedgerValidation,
    IdempotencyConflict; a replay returns the original result."""
    at = check_bonus(request)
    claim = await _claim_and_lock(
        conn,
        actor=request.actor,
        space=request.key_space,
        op="bonus",
        key=request.idempotency_key,
        digest=request.digest,
        member_id=request.member_id,
        partner_id=request.issuer_id,
        partner_kind=AccountKind.ISSUANCE,
    )
    if isinstance(claim, dict):
        return BonusResult.from_json(claim, replayed=True)
    funding = claim.partner_account_id
    if request.issuer_id is None:
        funding = (await conn.execute(_PROMOTIONS, {"kind": AccountKind.PROMOTIONS})).scalar_one()

    points = request.points
    repaid = min(points, -claim.debt)  # a member's debt is repaid first, as by an earn
    net = points - repaid
    tx_id = uuid7()
    expires_at = add_months(at, request.validity_months)
    result = BonusResult(
        transaction_id=tx_id,
        member_id=request.member_id,
        points=points,
        issuer_id=request.issuer_id,
        expires_at=expires_at,
        debt_repaid=repaid,
    )
    await conn.execute(
        _BONUS[(net > 0, repaid > 0)],
        {
            "tx": tx_id,
            "points": points,
            "issued": points,
            "issued_left": net,
            "operator_points": 0,
            "operator_left": 0,
            "net": net,
            "repaid": repaid,
            "partner": request.issuer_id,
            "member": request.member_id,
            "ref": request.ref,
            "amount": None,
            "currency": None,
            "category": request.reason,
            "at": at,
            "actor": request.actor,
            "issuance": funding,
            "wallet": claim.wallet_id,
            "debt": claim.debt_id,
            "available_at": at,
            "expires_at": expires_at,
            "result": result.to_json(),
            "claim": claim.claim_id,
        },
    )
    return result
