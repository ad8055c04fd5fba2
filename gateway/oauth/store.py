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
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, any_, delete, insert, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7
from core.tables import table
from gateway.oauth.models import (
    AuthorizationCode,
    LoginFailures,
    RefreshToken,
    RevokedToken,
    ServerSecret,
)

_codes = table(AuthorizationCode)
_refresh = table(RefreshToken)
_revoked = table(RevokedToken)
_failures = table(LoginFailures)
_secrets = table(ServerSecret)


def _in(column: ColumnElement[Any], values: list[Any]) -> ColumnElement[bool]:
    """`column = ANY(array)`: one statement text for any number of values (IN renders one per
    count, each prepared anew)."""
    return column == any_(literal(values, ARRAY(column.type)))


def token_hash(value: str) -> str:
    """What is stored for a code or refresh token: its SHA-256 (they carry 280+ random bits)."""
    return hashlib.sha256(value.encode()).hexdigest()


# ---- authorization codes ---------------------------------------------------------------


@dataclass(frozen=True)
class CodeRow:
    id: uuid.UUID
    client_id: str
    member_id: uuid.UUID | None
    operator_user_id: uuid.UUID | None
    redirect_uri: str | None
    scope: str
    code_challenge: str
    code_challenge_method: str
    expires_at: datetime
    used_at: datetime | None


_CODE = select(
    _codes.c.id,
    _codes.c.client_id,
    _codes.c.member_id,
    _codes.c.operator_user_id,
    _codes.c.redirect_uri,
    _codes.c.scope,
    _codes.c.code_challenge,
    _codes.c.code_challenge_method,
    _codes.c.expires_at,
    _codes.c.used_at,
)


async def insert_code(
    conn: AsyncConnection,
    *,
    code: str,
    client_id: str,
    member_id: uuid.UUID | None,
    operator_user_id: uuid.UUID | None = None,
    redirect_uri: str | None,
    scope: str,
    code_challenge: str,
    code_challenge_method: str,
    now: datetime,
    ttl: timedelta,
) -> uuid.UUID:
    code_id = uuid7()
    await conn.execute(
        insert(_codes).values(
            id=code_id,
            code_hash=token_hash(code),
            client_id=client_id,
            member_id=member_id,
            operator_user_id=operator_user_id,
            redirect_uri=redirect_uri,
            scope=scope,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return code_id


async def get_code(conn: AsyncConnection, *, code: str) -> CodeRow | None:
    row = (await conn.execute(_CODE.where(_codes.c.code_hash == token_hash(code)))).one_or_none()
    return CodeRow(**row._mapping) if row is not None else None


async def consume_code(conn: AsyncConnection, *, code_id: uuid.UUID, now: datetime) -> bool:
    """Mark the code used; False if another request used it first (the row lock decides)."""
    result = await conn.execute(
        update(_codes).where(_codes.c.id == code_id, _codes.c.used_at.is_(None)).values(used_at=now)
    )
    return result.rowcount == 1


# ---- refresh tokens --------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshRow:
    id: uuid.UUID
    family_id: uuid.UUID
    client_id: str
    member_id: uuid.UUID | None
    operator_user_id: uuid.UUID | None
    scope: str
    issued_at: datetime
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None


_REFRESH = select(
    _refresh.c.id,
    _refresh.c.family_id,
    _refresh.c.client_id,
    _refresh.c.member_id,
    _refresh.c.operator_user_id,
    _refresh.c.scope,
    _refresh.c.issued_at,
    _refresh.c.expires_at,
    _refresh.c.rotated_at,
    _refresh.c.revoked_at,
)


async def insert_refresh_token(
    conn: AsyncConnection,
    *,
    token: str,
    family_id: uuid.UUID,
    client_id: str,
    member_id: uuid.UUID | None,
    operator_user_id: uuid.UUID | None = None,
    scope: str,
    now: datetime,
    ttl: timedelta,
    access_jti: str | None,
    access_expires_at: datetime | None,
) -> uuid.UUID:
    token_id = uuid7()
    await conn.execute(
        insert(_refresh).values(
            id=token_id,
            token_hash=token_hash(token),
            family_id=family_id,
            client_id=client_id,
            member_id=member_id,
            operator_user_id=operator_user_id,
            scope=scope,
            issued_at=now,
            expires_at=now + ttl,
            access_jti=access_jti,
            access_expires_at=access_expires_at,
        )
    )
    return token_id


async def get_refresh_token(conn: AsyncConnection, *, token: str) -> RefreshRow | None:
    row = (
        await conn.execute(_REFRESH.where(_refresh.c.token_hash == token_hash(token)))
    ).one_or_none()
    return RefreshRow(**row._mapping) if row is not None else None


async def rotate_refresh_token(
    conn: AsyncConnection, *, token_id: uuid.UUID, now: datetime
) -> bool:
    """Retire a refresh token on use; False if it was used or revoked meanwhile."""
    result = await conn.execute(
        update(_refresh)
        .where(
            _refresh.c.id == token_id,
            _refresh.c.rotated_at.is_(None),
            _refresh.c.revoked_at.is_(None),
        )
        .values(rotated_at=now)
    )
    return result.rowcount == 1


async def revoke_family(
    conn: AsyncConnection, *, family_id: uuid.UUID, now: datetime
) -> dict[str, datetime]:
    """Revoke every refresh token of a family and the live access tokens issued with them.

    Returns the access token ids revoked (jti -> expiry), for the in-process revocation cache.
    One statement (an UPDATE feeding an INSERT), kept in SQL, where it reads plainly.
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
        pg_insert(_revoked)
        .values(jti=jti, expires_at=expires_at, revoked_at=now)
        .on_conflict_do_nothing(index_elements=[_revoked.c.jti])
    )


async def is_access_token_revoked(conn: AsyncConnection, *, jti: str) -> bool:
    row = (await conn.execute(select(_revoked.c.jti).where(_revoked.c.jti == jti))).one_or_none()
    return row is not None


async def live_revocations(conn: AsyncConnection, *, now: datetime) -> dict[str, datetime]:
    """Revoked access tokens that have not expired yet (the only ones worth remembering)."""
    rows = await conn.execute(
        select(_revoked.c.jti, _revoked.c.expires_at).where(_revoked.c.expires_at > now)
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
        select(_failures.c.key, _failures.c.failures, _failures.c.window_started_at).where(
            _in(_failures.c.key, keys), _failures.c.window_started_at > now - window
        )
    )
    return {k: Failures(n, started) for k, n, started in rows}


async def record_login_failure(
    conn: AsyncConnection, *, keys: list[str], now: datetime, window: timedelta
) -> dict[str, Failures]:
    """Count one failure (or attempt) against each key, atomically per key (a new window starts
    once the old one is over); returns the counts including this one. An upsert over many keys
    whose update depends on the row: kept in SQL, where it reads plainly."""
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
        update(_failures)
        .where(_failures.c.key == key, _failures.c.failures > 0)
        .values(failures=_failures.c.failures - 1)
    )


async def clear_login_failures(conn: AsyncConnection, *, keys: list[str]) -> None:
    await conn.execute(delete(_failures).where(_in(_failures.c.key, keys)))


# ---- server secrets --------------------------------------------------------------------


async def server_secret(conn: AsyncConnection, *, name: str) -> bytes:
    """The named 32-byte secret, created on first use (every process then reads the same)."""
    await conn.execute(
        pg_insert(_secrets)
        .values(name=name, secret=secrets.token_bytes(32))
        .on_conflict_do_nothing(index_elements=[_secrets.c.name])
    )
    row = (await conn.execute(select(_secrets.c.secret).where(_secrets.c.name == name))).one()
    return bytes(row[0])


# ---- housekeeping ----------------------------------------------------------------------


async def purge_expired(
    conn: AsyncConnection, *, now: datetime, keep: timedelta = timedelta(days=1)
) -> dict[str, int]:
    """Delete codes, refresh tokens, revocations and login failures that no longer matter."""
    before = now - keep
    counts = {}
    for expired, column in (
        (_codes, _codes.c.expires_at),
        (_refresh, _refresh.c.expires_at),
        (_revoked, _revoked.c.expires_at),
        (_failures, _failures.c.last_failure_at),
    ):
        result = await conn.execute(delete(expired).where(column < before))
        counts[expired.name] = result.rowcount
    return counts
