"""Redemption codes: the member's consent to pay with points.

A code is 12 digits (typed at a till or shown as a QR), single-use, short-lived, optionally
capped and bound to one partner. Only its SHA-256 is stored. Presentations are audited and a
partner client that keeps presenting bad codes is throttled (see `begin_attempt`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.errors import DomainError, ErrorCode, ValidationError
from core.ids import uuid7

log = logging.getLogger(__name__)

CODE_TTL = timedelta(minutes=10)
CODE_DIGITS = 12
MAX_LIVE_CODES = 20
THROTTLE_WINDOW = timedelta(minutes=10)
THROTTLE_FAILURES = 20


class InvalidRedemptionCode(DomainError):
    code = ErrorCode.INVALID_REDEMPTION_CODE


class CodeLimitExceeded(DomainError):
    code = ErrorCode.LIMIT_EXCEEDED


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: datetime
    max_points: int | None
    partner_id: uuid.UUID | None


@dataclass(frozen=True)
class ConsumedCode:
    id: uuid.UUID
    member_id: uuid.UUID
    max_points: int | None


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def normalise(code: str) -> str:
    """Codes may be typed with spaces or dashes."""
    return "".join(ch for ch in code if ch not in " -")


async def create(
    conn: AsyncConnection,
    *,
    member_id: uuid.UUID,
    max_points: int | None = None,
    partner_id: uuid.UUID | None = None,
    ttl: timedelta = CODE_TTL,
) -> IssuedCode:
    """Issue a new single-use code for the member (several may be live at once)."""
    if max_points is not None and not 0 < max_points <= 1_000_000_000:
        raise ValidationError("maxPoints must be between 1 and 1000000000")
    now = utcnow()
    live = (
        await conn.execute(
            text(
                "SELECT count(*) FROM redemption_codes "
                "WHERE member_id = :m AND used_at IS NULL AND expires_at > :now"
            ),
            {"m": member_id, "now": now},
        )
    ).scalar_one()
    if live >= MAX_LIVE_CODES:
        raise CodeLimitExceeded(f"at most {MAX_LIVE_CODES} live codes per member")
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    await conn.execute(
        text(
            "INSERT INTO redemption_codes (id, member_id, code_hash, max_points, partner_id, "
            "created_at, expires_at) VALUES (:id, :m, :h, :mp, :p, :now, :exp)"
        ),
        {
            "id": uuid7(),
            "m": member_id,
            "h": _digest(code),
            "mp": max_points,
            "p": partner_id,
            "now": now,
            "exp": now + ttl,
        },
    )
    return IssuedCode(code, now + ttl, max_points, partner_id)


async def consume(
    conn: AsyncConnection, *, code: str, partner_id: uuid.UUID, points: int, hold_id: uuid.UUID
) -> ConsumedCode:
    """Use a code up for a hold; refused codes stay usable (the caller's rollback undoes this)."""
    code = normalise(code)
    if not code.isdigit() or len(code) != CODE_DIGITS:
        raise InvalidRedemptionCode("redemption code is not valid")
    row = (
        await conn.execute(
            text(
                "SELECT id, member_id, max_points, partner_id, expires_at, used_at "
                "FROM redemption_codes WHERE code_hash = :h FOR UPDATE"
            ),
            {"h": _digest(code)},
        )
    ).one_or_none()
    now = utcnow()
    # One error for unknown, used, expired or bound elsewhere: a guesser learns nothing.
    if (
        row is None
        or row.used_at is not None
        or row.expires_at <= now
        or (row.partner_id is not None and row.partner_id != partner_id)
    ):
        raise InvalidRedemptionCode(
            "redemption code is unknown, used, expired or not for this partner"
        )
    if row.max_points is not None and points > row.max_points:
        raise CodeLimitExceeded(f"this code allows at most {row.max_points} points")
    await conn.execute(
        text("UPDATE redemption_codes SET used_at = :now, used_by_hold = :hold WHERE id = :id"),
        {"now": now, "hold": hold_id, "id": row.id},
    )
    return ConsumedCode(row.id, row.member_id, row.max_points)


async def record_attempt(
    conn: AsyncConnection,
    *,
    actor: str,
    partner_id: uuid.UUID | None,
    success: bool,
    reason: str | None,
) -> None:
    """Audit one presentation of a code (write it on a connection of its own: it must outlive
    the caller's rollback)."""
    await conn.execute(
        text(
            "INSERT INTO code_attempts (actor, partner_id, at, success, reason) "
            "VALUES (:a, :p, :at, :s, :r)"
        ),
        {"a": actor, "p": partner_id, "at": utcnow(), "s": success, "r": reason},
    )


async def begin_attempt(conn: AsyncConnection, *, actor: str, partner_id: uuid.UUID | None) -> int:
    """Count a presentation of a code as a failure before the code is looked at, or refuse it
    if the client presented too many bad codes recently (guessing). Commit `conn` at once.

    The count and the insert run under a transaction-scoped advisory lock per client, so a
    burst of concurrent presentations is counted one by one: at most THROTTLE_FAILURES are
    checked. `finish_attempt` then records the outcome (a valid code stops counting).
    """
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
        {"k": f"code-throttle:{actor}"},
    )
    now = utcnow()
    failures = (
        await conn.execute(
            text(
                "SELECT count(*) FROM code_attempts WHERE actor = :a AND NOT success AND at > :since"
            ),
            {"a": actor, "since": now - THROTTLE_WINDOW},
        )
    ).scalar_one()
    if failures >= THROTTLE_FAILURES:
        log.warning("redemption-code throttle: %r refused after %d bad codes", actor, failures)
        raise CodeLimitExceeded("too many invalid redemption codes: try again later")
    return int(
        (
            await conn.execute(
                text(
                    "INSERT INTO code_attempts (actor, partner_id, at, success, reason) "
                    "VALUES (:a, :p, :at, false, 'pending') RETURNING id"
                ),
                {"a": actor, "p": partner_id, "at": now},
            )
        ).scalar_one()
    )


async def finish_attempt(conn: AsyncConnection, *, attempt_id: int, success: bool | None) -> None:
    """Record an attempt's outcome: the code was valid (True), invalid (False), or the request
    ended before the code decided anything (None: the attempt is forgotten)."""
    if success is None:
        await conn.execute(text("DELETE FROM code_attempts WHERE id = :id"), {"id": attempt_id})
        return
    await conn.execute(
        text("UPDATE code_attempts SET success = :s, reason = :r WHERE id = :id"),
        {"s": success, "r": None if success else "invalid code", "id": attempt_id},
    )
