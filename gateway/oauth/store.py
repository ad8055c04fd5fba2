"""Storage of the authorization server: codes, refresh tokens, revocations, login failures,
server secrets. Plain async functions over a connection; the caller owns the transaction.

Times are passed in (from `core.clock`), never taken from the database's `now()`, so a pinned
clock governs expiry everywhere.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7


def token_hash(value: str) -> str:
    """What is stored for a code or refresh token: its SHA-256 (they carry 280+ random bits)."""
    return hashlib.sha256(value.encode()).hexdigest()


# ---- authorization codes ---------------------------------------------------------------


@dataclass(frozen=True)
class CodeRow:
    id: uuid.UUID
    client_id: str
    member_id: uuid.UUID
    redirect_uri: str | None
    scope: str
    code_challenge: str
    code_challenge_method: str
    expires_at: datetime
    used_at: datetime | None


async def insert_code(
    conn: AsyncConnection,
    *,
    code: str,
    client_id: str,
    member_id: uuid.UUID,
    redirect_uri: str | None,
    scope: str,
    code_challenge: str,
    code_challenge_method: str,
    now: datetime,
    ttl: timedelta,
) -> uuid.UUID:
    code_id = uuid7()
    await conn.execute(
        text(
            "INSERT INTO oauth_authorization_codes (id, code_hash, client_id, member_id, "
            "redirect_uri, scope, code_challenge, code_challenge_method, created_at, expires_at) "
            "VALUES (:id, :h, :cid, :mid, :ru, :scope, :cc, :ccm, :now, :exp)"
        ),
        {
            "id": code_id,
            "h": token_hash(code),
            "cid": client_id,
            "mid": member_id,
            "ru": redirect_uri,
            "scope": scope,
            "cc": code_challenge,
            "ccm": code_challenge_method,
            "now": now,
            "exp": now + ttl,
        },
    )
    return code_id


async def get_code(conn: AsyncConnection, *, code: str) -> CodeRow | None:
    row = (
        await conn.execute(
            text(
                "SELECT id, client_id, member_id, redirect_uri, scope, code_challenge, "
                "code_challenge_method, expires_at, used_at "
                "FROM oauth_authorization_codes WHERE code_hash = :h"
            ),
            {"h": token_hash(code)},
        )
    ).one_or_none()
    return CodeRow(*row) if row is not None else None


async def consume_code(conn: AsyncConnection, *, code_id: uuid.UUID, now: datetime) -> bool:
    """Mark the code used; False if another request used it first (the row lock decides)."""
    result = await conn.execute(
        text(
            "UPDATE oauth_authorization_codes SET used_at = :now WHERE id = :id AND used_at IS NULL"
        ),
        {"id": code_id, "now": now},
    )
    return result.rowcount == 1


# ---- refresh tokens --------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshRow:
    id: uuid.UUID
    family_id: uuid.UUID
    client_id: str
    member_id: uuid.UUID
    scope: str
    issued_at: datetime
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None


async def insert_refresh_token(
    conn: AsyncConnection,
    *,
    token: str,
    family_id: uuid.UUID,
    client_id: str,
    member_id: uuid.UUID,
    scope: str,
    now: datetime,
    ttl: timedelta,
    access_jti: str | None,
    access_expires_at: datetime | None,
) -> uuid.UUID:
    token_id = uuid7()
    await conn.execute(
        text(
            "INSERT INTO oauth_refresh_tokens (id, token_hash, family_id, client_id, member_id, "
            "scope, issued_at, expires_at, access_jti, access_expires_at) "
            "VALUES (:id, :h, :fam, :cid, :mid, :scope, :now, :exp, :jti, :jexp)"
        ),
        {
            "id": token_id,
            "h": token_hash(token),
            "fam": family_id,
            "cid": client_id,
            "mid": member_id,
            "scope": scope,
            "now": now,
            "exp": now + ttl,
            "jti": access_jti,
            "jexp": access_expires_at,
        },
    )
    return token_id


async def get_refresh_token(conn: AsyncConnection, *, token: str) -> RefreshRow | None:
    row = (
        await conn.execute(
            text(
                "SELECT id, family_id, client_id, member_id, scope, issued_at, expires_at, "
                "rotated_at, revoked_at FROM oauth_refresh_tokens WHERE token_hash = :h"
            ),
            {"h": token_hash(token)},
        )
    ).one_or_none()
    return RefreshRow(*row) if row is not None else None


async def rotate_refresh_token(
    conn: AsyncConnection, *, token_id: uuid.UUID, now: datetime
) -> bool:
    """Retire a refresh token on use; False if it was used or revoked meanwhile."""
    result = await conn.execute(
        text(
            "UPDATE oauth_refresh_tokens SET rotated_at = :now "
            "WHERE id = :id AND rotated_at IS NULL AND revoked_at IS NULL"
        ),
        {"id": token_id, "now": now},
    )
    return result.rowcount == 1


async def revoke_family(
    conn: AsyncConnection, *, family_id: uuid.UUID, now: datetime
) -> dict[str, datetime]:
    """Revoke every refresh token of a family and the live access tokens issued with them.

    Returns the access token ids revoked (jti -> expiry), for the in-process revocation cache.
    """
    rows = await conn.execute(
        text(
            "WITH r AS (UPDATE oauth_refresh_tokens SET revoked_at = :now "
            "  WHERE family_id = :fam AND revoked_at IS NULL "
            "  RETURNING access_jti, access_expires_at) "
            "INSERT INTO oauth_revoked_tokens (jti, expires_at, revoked_at) "
            "SELECT access_jti, access_expires_at, :now FROM r "
            "WHERE access_jti IS NOT NULL AND access_expires_at > :now "
            "ON CONFLICT (jti) DO NOTHING RETURNING jti, expires_at"
        ),
        {"fam": family_id, "now": now},
    )
    return {jti: exp for jti, exp in rows}


# ---- revoked access tokens -------------------------------------------------------------


async def revoke_access_token(
    conn: AsyncConnection, *, jti: str, expires_at: datetime, now: datetime
) -> None:
    await conn.execute(
        text(
            "INSERT INTO oauth_revoked_tokens (jti, expires_at, revoked_at) "
            "VALUES (:jti, :exp, :now) ON CONFLICT (jti) DO NOTHING"
        ),
        {"jti": jti, "exp": expires_at, "now": now},
    )


async def is_access_token_revoked(conn: AsyncConnection, *, jti: str) -> bool:
    row = (
        await conn.execute(
            text("SELECT 1 FROM oauth_revoked_tokens WHERE jti = :jti"), {"jti": jti}
        )
    ).one_or_none()
    return row is not None


async def live_revocations(conn: AsyncConnection, *, now: datetime) -> dict[str, datetime]:
    """Revoked access tokens that have not expired yet (the only ones worth remembering)."""
    rows = await conn.execute(
        text("SELECT jti, expires_at FROM oauth_revoked_tokens WHERE expires_at > :now"),
        {"now": now},
    )
    return {jti: exp for jti, exp in rows}


# ---- login throttling ------------------------------------------------------------------


@dataclass(frozen=True)
class Failures:
    failures: int
    window_started_at: datetime


async def login_failures(
    conn: AsyncConnection, *, keys: list[str], now: datetime, window: timedelta
) -> dict[str, Failures]:
    """Failures per key within the current window (keys without any are left out)."""
    rows = await conn.execute(
        text(
            "SELECT key, failures, window_started_at FROM oauth_login_failures "
            "WHERE key = ANY(:keys) AND window_started_at > :since"
        ),
        {"keys": keys, "since": now - window},
    )
    return {k: Failures(n, started) for k, n, started in rows}


async def record_login_failure(
    conn: AsyncConnection, *, keys: list[str], now: datetime, window: timedelta
) -> dict[str, Failures]:
    """Count one failure (or attempt) against each key, atomically per key (a new window starts
    once the old one is over); returns the counts including this one."""
    rows = await conn.execute(
        text(
            "INSERT INTO oauth_login_failures AS f "
            "  (key, failures, window_started_at, last_failure_at) "
            "SELECT k, 1, :now, :now FROM unnest(CAST(:keys AS text[])) AS k "
            "ON CONFLICT (key) DO UPDATE SET "
            "  failures = CASE WHEN f.window_started_at <= :since THEN 1 ELSE f.failures + 1 END, "
            "  window_started_at = CASE WHEN f.window_started_at <= :since THEN :now "
            "                      ELSE f.window_started_at END, "
            "  last_failure_at = :now "
            "RETURNING key, failures, window_started_at"
        ),
        {"keys": sorted(keys), "now": now, "since": now - window},
    )
    return {k: Failures(n, started) for k, n, started in rows}


async def uncount_login_failure(conn: AsyncConnection, *, key: str) -> None:
    """Take one counted attempt back (it succeeded)."""
    await conn.execute(
        text(
            "UPDATE oauth_login_failures SET failures = failures - 1 "
            "WHERE key = :key AND failures > 0"
        ),
        {"key": key},
    )


async def clear_login_failures(conn: AsyncConnection, *, keys: list[str]) -> None:
    await conn.execute(
        text("DELETE FROM oauth_login_failures WHERE key = ANY(:keys)"), {"keys": keys}
    )


# ---- server secrets --------------------------------------------------------------------


async def server_secret(conn: AsyncConnection, *, name: str) -> bytes:
    """The named 32-byte secret, created on first use (every process then reads the same)."""
    await conn.execute(
        text(
            "INSERT INTO oauth_server_secrets (name, secret) VALUES (:name, :secret) "
            "ON CONFLICT (name) DO NOTHING"
        ),
        {"name": name, "secret": secrets.token_bytes(32)},
    )
    row = (
        await conn.execute(
            text("SELECT secret FROM oauth_server_secrets WHERE name = :name"), {"name": name}
        )
    ).one()
    return bytes(row[0])


# ---- housekeeping ----------------------------------------------------------------------


async def purge_expired(
    conn: AsyncConnection, *, now: datetime, keep: timedelta = timedelta(days=1)
) -> dict[str, int]:
    """Delete codes, refresh tokens, revocations and login failures that no longer matter."""
    before = now - keep
    counts = {}
    for table, column in (
        ("oauth_authorization_codes", "expires_at"),
        ("oauth_refresh_tokens", "expires_at"),
        ("oauth_revoked_tokens", "expires_at"),
        ("oauth_login_failures", "last_failure_at"),
    ):
        result = await conn.execute(
            text(f"DELETE FROM {table} WHERE {column} < :before"), {"before": before}
        )
        counts[table] = result.rowcount
    return counts
