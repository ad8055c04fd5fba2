"""Referral codes and referrals.

Every member has a referral code to give to friends: 8 symbols of Crockford's base 32 (no I,
L, O, U: nothing to misread), random, so about 10^12 codes of which the members hold a tiny
share (and registrations are rate-limited per IP). A friend who joins with it is recorded as
a referral; the referral bonus promised to both then is paid, once, after the friend's first
earn (`loyalty.bonuses`).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
# What people type for the symbols the alphabet leaves out, and separators.
_TYPED = str.maketrans({"I": "1", "L": "1", "O": "0", " ": None, "-": None})


def new_code() -> str:
    """A fresh random referral code."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalise(code: str) -> str | None:
    """The code as stored (case, separators and misread symbols forgiven), or None when it
    cannot be a referral code at all."""
    if len(code) > 4 * CODE_LENGTH:
        return None
    value = code.upper().translate(_TYPED)
    if len(value) != CODE_LENGTH or any(ch not in ALPHABET for ch in value):
        return None
    return value


async def referrer_by_code(conn: AsyncConnection, *, code: str) -> uuid.UUID | None:
    """The member whose referral code this is (as `normalise` returns it), if any."""
    row = (
        await conn.execute(text("SELECT id FROM members WHERE referral_code = :c"), {"c": code})
    ).one_or_none()
    return None if row is None else row[0]


async def record(
    conn: AsyncConnection,
    *,
    friend_id: uuid.UUID,
    referrer_id: uuid.UUID,
    points: int,
    at: datetime,
) -> None:
    """Record that `friend_id` joined with `referrer_id`'s code, each promised `points`."""
    await conn.execute(
        text(
            "INSERT INTO referrals (friend_id, referrer_id, points, created_at) "
            "VALUES (:f, :r, :p, :at)"
        ),
        {"f": friend_id, "r": referrer_id, "p": points, "at": at},
    )


@dataclass(frozen=True)
class Unpaid:
    """A referral whose bonus is still to pay."""

    friend_id: uuid.UUID
    referrer_id: uuid.UUID
    points: int


_UNPAID = (
    "SELECT friend_id, referrer_id, points FROM referrals WHERE paid_at IS NULL AND points > 0"
)


async def unpaid(conn: AsyncConnection, *, friend_id: uuid.UUID) -> Unpaid | None:
    """The friend's referral, if its bonus is still to pay."""
    row = (
        await conn.execute(text(_UNPAID + " AND friend_id = :f"), {"f": friend_id})
    ).one_or_none()
    return None if row is None else Unpaid(*row)


async def unpaid_page(
    conn: AsyncConnection, *, after: uuid.UUID | None, limit: int
) -> list[Unpaid]:
    """Referrals still to pay, by friend id after `after` (the sweep's pages)."""
    rows = await conn.execute(
        text(
            _UNPAID + " AND (CAST(:after AS uuid) IS NULL OR friend_id > :after) "
            "ORDER BY friend_id LIMIT :limit"
        ),
        {"after": after, "limit": limit},
    )
    return [Unpaid(*r) for r in rows]


async def mark_paid(
    conn: AsyncConnection,
    *,
    friend_id: uuid.UUID,
    at: datetime,
    referrer_tx_id: uuid.UUID,
    friend_tx_id: uuid.UUID,
) -> None:
    """Record that the friend's referral bonus was paid by these two ledger transactions."""
    await conn.execute(
        text(
            "UPDATE referrals SET paid_at = :at, referrer_tx_id = :rt, friend_tx_id = :ft "
            "WHERE friend_id = :f AND paid_at IS NULL"
        ),
        {"f": friend_id, "at": at, "rt": referrer_tx_id, "ft": friend_tx_id},
    )
