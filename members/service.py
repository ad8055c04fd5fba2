"""Members: registration, lookup by card number."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7
from ledger import service as ledger
from members.cards import is_valid_card_number, new_card_number
from members.errors import EmailTaken, InvalidCardNumber, MemberNotFound


@dataclass(frozen=True)
class MemberRecord:
    id: uuid.UUID
    card_number: str
    email: str | None
    name: str | None


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
        row = (
            await conn.execute(
                text(
                    "INSERT INTO members (id, card_number, email, name, password_hash) "
                    "SELECT :id, :card, :email, :name, :pw "
                    "WHERE NOT EXISTS (SELECT 1 FROM members WHERE lower(email) = lower(:email)) "
                    "ON CONFLICT (card_number) DO NOTHING RETURNING id"
                ),
                {"id": member_id, "card": card, "email": email, "name": name, "pw": password_hash},
            )
        ).one_or_none()
        if row is not None:
            break
        if email is not None and await get_by_email(conn, email=email) is not None:
            raise EmailTaken("a member with this email already exists")
        if card_number is not None:
            raise InvalidCardNumber("card number already in use")
    else:  # pragma: no cover - 10 collisions in a 10^14 space
        raise RuntimeError("could not allocate a card number")
    await ledger.open_member_accounts(conn, member_id=member_id)
    return MemberRecord(member_id, card, email, name)


async def get_by_card(conn: AsyncConnection, *, card_number: str) -> MemberRecord:
    """The member holding `card_number`."""
    if not is_valid_card_number(card_number):
        raise InvalidCardNumber("card number must be 16 digits with a valid Luhn check digit")
    row = (
        await conn.execute(
            text("SELECT id, card_number, email, name FROM members WHERE card_number = :c"),
            {"c": card_number},
        )
    ).one_or_none()
    if row is None:
        raise MemberNotFound("no member has this card number")
    return MemberRecord(*row)


async def ids_by_cards(conn: Any, *, card_numbers: list[str]) -> dict[str, uuid.UUID]:
    """Member ids by card number, for many cards in one statement (unknown cards are absent).

    `conn` is a SQLAlchemy connection or a `core.db.DriverConnection`."""
    rows = await conn.execute(
        text("SELECT card_number, id FROM members WHERE card_number = ANY(:cards)"),
        {"cards": list(card_numbers)},
    )
    return {row[0]: row[1] for row in rows}


async def get_by_email(conn: AsyncConnection, *, email: str) -> MemberRecord | None:
    """The member registered with `email` (case-insensitive), if any."""
    row = (
        await conn.execute(
            text("SELECT id, card_number, email, name FROM members WHERE lower(email) = lower(:e)"),
            {"e": email},
        )
    ).one_or_none()
    return MemberRecord(*row) if row else None


async def get(conn: AsyncConnection, *, member_id: uuid.UUID) -> MemberRecord | None:
    """One member by id."""
    row = (
        await conn.execute(
            text("SELECT id, card_number, email, name FROM members WHERE id = :id"),
            {"id": member_id},
        )
    ).one_or_none()
    return MemberRecord(*row) if row else None
