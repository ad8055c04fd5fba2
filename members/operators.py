"""Operator users: the operator's staff, who sign in to the console with an email and password.

They share the members' login page and password hashing (`members.passwords`), not their
table: an operator user is never a member, and a member is never an operator user. Which of
the two a sign-in looks up is decided by the OAuth client that asks (the member app or the
console), so one email may be both without either reaching the other's account.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import ValidationError
from core.ids import uuid7
from core.tables import table
from members import passwords
from members.errors import EmailTaken
from members.models import OperatorUser

_users = table(OperatorUser)

MAX_EMAIL = 320


@dataclass(frozen=True)
class OperatorUserRecord:
    id: uuid.UUID
    email: str
    disabled_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Credentials:
    """What a sign-in checks: the user's id, password hash and whether it is disabled."""

    id: uuid.UUID
    password_hash: str
    disabled: bool


def new_password() -> str:
    """A generated password: 128 bits, URL-safe (shown once to whoever adds the user)."""
    return secrets.token_urlsafe(16)


def normalize_email(email: str) -> str:
    """`email` trimmed; refused unless it looks like one address."""
    value = email.strip()
    local, at, domain = value.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain
        or len(value) > MAX_EMAIL
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        raise ValidationError("email must be an email address", field="email")
    return value


async def create(conn: AsyncConnection, *, email: str, password_hash: str) -> OperatorUserRecord:
    """Add an operator user; EmailTaken if one with this email (any case) exists."""
    row = (
        await conn.execute(
            insert(_users)
            .values(id=uuid7(), email=normalize_email(email), password_hash=password_hash)
            .on_conflict_do_nothing()
            .returning(_users.c.id, _users.c.email, _users.c.disabled_at, _users.c.created_at)
        )
    ).one_or_none()
    if row is None:
        raise EmailTaken("an operator user with this email already exists")
    return OperatorUserRecord(*row)


async def add(
    conn: AsyncConnection, *, email: str, password: str | None = None
) -> tuple[OperatorUserRecord, str]:
    """Add an operator user with `password`, or a generated one; returns it with the user (the
    only time it is seen: only its argon2 hash is stored)."""
    normalize_email(email)  # refuse a bad address before spending a hash on it
    password = password or new_password()
    if len(password) < 12 or len(password) > 1024:
        raise ValidationError("password must be 12 to 1024 characters", field="password")
    password_hash = await asyncio.to_thread(passwords.hash_password, password)
    return await create(conn, email=email, password_hash=password_hash), password


async def get_credentials(conn: AsyncConnection, *, email: str) -> Credentials | None:
    """The operator user registered for `email` (case-insensitive), if any."""
    row = (
        await conn.execute(
            select(_users.c.id, _users.c.password_hash, _users.c.disabled_at).where(
                func.lower(_users.c.email) == email.strip().lower()
            )
        )
    ).one_or_none()
    return Credentials(row[0], row[1], row[2] is not None) if row is not None else None


async def is_active(conn: AsyncConnection, *, user_id: uuid.UUID) -> bool:
    """True if the operator user exists and is not disabled (a refresh checks it)."""
    row = (
        await conn.execute(select(_users.c.disabled_at).where(_users.c.id == user_id))
    ).one_or_none()
    return row is not None and row[0] is None


async def set_disabled(
    conn: AsyncConnection, *, email: str, disabled: bool, at: datetime
) -> OperatorUserRecord | None:
    """Disable (or enable again) the operator user with `email`; None if there is none. A
    disabled user cannot sign in or refresh; access tokens already issued live out their
    minutes."""
    row = (
        await conn.execute(
            update(_users)
            .where(func.lower(_users.c.email) == email.strip().lower())
            .values(disabled_at=func.coalesce(_users.c.disabled_at, at) if disabled else None)
            .returning(_users.c.id, _users.c.email, _users.c.disabled_at, _users.c.created_at)
        )
    ).one_or_none()
    return OperatorUserRecord(*row) if row is not None else None


async def set_password_hash(
    conn: AsyncConnection, *, user_id: uuid.UUID, password_hash: str
) -> None:
    """Store a new password hash (a rehash on sign-in)."""
    await conn.execute(
        update(_users).where(_users.c.id == user_id).values(password_hash=password_hash)
    )
