"""Member passwords: argon2id hashes (RFC 9106), never the password itself.

Hashing and verifying are CPU- and memory-bound by design (tens of milliseconds): callers on an
event loop should run them in a worker thread.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# argon2-cffi's default is RFC 9106's second recommended option (t=3, m=64 MiB, p=4).
# Module attribute on purpose: a test suite may swap in a cheaper hasher.
hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id hash to store for `password`."""
    return hasher.hash(password)


@lru_cache(maxsize=4)
def _dummy_hash(params: object) -> str:
    return hasher.hash("not a password: equalizes the time of failed lookups")


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches `password_hash`.

    With no hash (unknown email, or a member without a password) it still spends the time of a
    real check, so response times do not tell which emails are registered.
    """
    try:
        if password_hash is None:
            hasher.verify(_dummy_hash((hasher.time_cost, hasher.memory_cost)), password)
            return False
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    try:
        return hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


async def get_credentials(
    conn: AsyncConnection, *, email: str
) -> tuple[uuid.UUID, str | None] | None:
    """The member id and password hash registered for `email` (case-insensitive), if any."""
    row = (
        await conn.execute(
            text("SELECT id, password_hash FROM members WHERE lower(email) = lower(:e)"),
            {"e": email.strip()},
        )
    ).one_or_none()
    return (row[0], row[1]) if row is not None else None


async def set_password_hash(
    conn: AsyncConnection, *, member_id: uuid.UUID, password_hash: str
) -> None:
    """Store a new password hash for the member (after a reset, or a rehash on login)."""
    await conn.execute(
        text("UPDATE members SET password_hash = :h WHERE id = :id"),
        {"h": password_hash, "id": member_id},
    )
