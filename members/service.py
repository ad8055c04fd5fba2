"""Members: registration, lookup by card number."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7
from core.tables import table
from ledger import service as ledger
from members.cards import is_valid_card_number, new_card_number
from members.errors import EmailTaken, InvalidCardNumber, MemberNotFound
from members.models import Member
from members.referrals import new_code

_members = table(Member)


@dataclass(frozen=True)
class MemberRecord:
    id: uuid.UUID
    card_number: str
    email: str | None
    name: str | None
    referral_code: str


# The columns of a MemberRecord, in its order.
_MEMBER = select(
    _members.c.id,
    _members.c.card_number,
    _members.c.email,
    _members.c.name,
    _members.c.referral_code,
)


async def create(
    conn: AsyncConnection,
    *,
    email: str | None = None,
    name: str | None = None,
    password_hash: str | None = None,
    card_number: str | None = None,
) -> MemberRecord:
    """Register a member with a new card number and open their wallet."""
    if card_number is not None and not is_valid_card_number(card_number):
        raise InvalidCardNumber("card number must be 16 digits with a valid Luhn check digit")
    member_id = uuid7()
    for _ in range(10):
        card = card_number or new_card_number()
        referral_code = new_code()
        # One statement for the uniqueness rules: the email (case-insensitive) is checked in
        # its WHERE; a taken card number or referral code skips the row (ON CONFLICT without a
        # target covers both), and a new pair is drawn. Kept in SQL, where it reads plainly.
        row = (
            await conn.execute(
                text(
                    "INSERT INTO members (id, card_number, email, name, password_hash, "
                    "referral_code) "
                    "SELECT :id, :card, :email, :name, :pw, :code "
                    "WHERE NOT EXISTS (SELECT 1 FROM members WHERE lower(email) = lower(:email)) "
                    "ON CONFLICT DO NOTHING RETURNING id"
                ),
                {
                    "id": member_id,
                    "card": card,
                    "email": email,
                    "name": name,
                    "pw": password_hash,
                    "code": referral_code,
                },
            )
        ).one_or_none()
        if row is not None:
            break
        if email is not None and await get_by_email(conn, email=email) is not None:
            raise EmailTaken("a member with this email already exists")
        if card_number is not None and await _card_taken(conn, card_number):
            raise InvalidCardNumber("card number already in use")
    else:  # pragma: no cover - 10 collisions in a 10^14 space
        raise RuntimeError("could not allocate a card number")
    await ledger.open_member_accounts(conn, member_id=member_id)
    return MemberRecord(member_id, card, email, name, referral_code)


async def _card_taken(conn: AsyncConnection, card_number: str) -> bool:
    found = await conn.execute(
        text("SELECT 1 FROM members WHERE card_number = :c"), {"c": card_number}
    )
    return found.one_or_none() is not None


async def get_by_card(conn: AsyncConnection, *, card_number: str) -> MemberRecord:
    """The member holding `card_number`."""
    if not is_valid_card_number(card_number):
        raise InvalidCardNumber("card number must be 16 digits with a valid Luhn check digit")
    row = (await conn.execute(_MEMBER.where(_members.c.card_number == card_number))).one_or_none()
    if row is None:
        raise MemberNotFound("no member has this card number")
    return MemberRecord(*row)


@dataclass(frozen=True, slots=True)
class CardHolder:
    """Who holds a card, as the earn path needs it: the member, whether a referral bonus
    waits for their first earn (`members.referrals`), and the tier it holds (None: untiered;
    `members.tiers`), read with it so that an earn costs no query of its own for it."""

    member_id: uuid.UUID
    referral_pending: bool
    tier: str | None = None


async def holders_by_cards(conn: Any, *, card_numbers: list[str]) -> dict[str, CardHolder]:
    """The holders of many cards in one statement (unknown cards are absent).

    `conn` is a SQLAlchemy connection or a `core.db.DriverConnection` (hence plain SQL)."""
    rows = await conn.execute(
        text(
            "SELECT m.card_number, m.id, EXISTS ("
            " SELECT 1 FROM referrals r"
            " WHERE r.friend_id = m.id AND r.paid_at IS NULL AND r.points > 0"
            "), t.tier_name FROM members m LEFT JOIN member_tiers t ON t.member_id = m.id"
            " WHERE m.card_number = ANY(:cards)"
        ),
        {"cards": list(card_numbers)},
    )
    return {row[0]: CardHolder(row[1], row[2], row[3]) for row in rows}


async def get_by_email(conn: AsyncConnection, *, email: str) -> MemberRecord | None:
    """The member registered with `email` (case-insensitive), if any."""
    # lower(email) on both sides: the unique index uq_members_email_lower serves it.
    row = (
        await conn.execute(_MEMBER.where(func.lower(_members.c.email) == func.lower(email)))
    ).one_or_none()
    return MemberRecord(*row) if row else None


async def get(conn: AsyncConnection, *, member_id: uuid.UUID) -> MemberRecord | None:
    """One member by id."""
    row = (await conn.execute(_MEMBER.where(_members.c.id == member_id))).one_or_none()
    return MemberRecord(*row) if row else None


async def cards_by_ids(conn: AsyncConnection, *, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Card numbers of many members by id, in one statement (unknown ids are absent)."""
    if not ids:
        return {}
    rows = await conn.execute(
        text("SELECT id, card_number FROM members WHERE id = ANY(:ids)"), {"ids": list(ids)}
    )
    return {row[0]: row[1] for row in rows}
