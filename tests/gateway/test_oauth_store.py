"""The authorization server's storage functions that no HTTP flow in the suite reaches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.oauth import store

NOW = datetime(2031, 1, 10, 12, tzinfo=UTC)


async def test_purge_expired_deletes_only_what_no_longer_matters(conn: AsyncConnection) -> None:
    """Revocations and login failures older than a day go; recent ones stay."""
    old, recent = NOW - timedelta(days=2), NOW - timedelta(hours=1)
    await store.revoke_access_token(conn, jti="purge-old", expires_at=old, now=old)
    await store.revoke_access_token(conn, jti="purge-recent", expires_at=recent, now=old)
    await store.record_login_failure(conn, keys=["purge:old"], now=old, window=timedelta(hours=1))
    await store.record_login_failure(
        conn, keys=["purge:recent"], now=recent, window=timedelta(hours=1)
    )

    counts = await store.purge_expired(conn, now=NOW)

    assert counts["oauth_revoked_tokens"] >= 1 and counts["oauth_login_failures"] >= 1
    assert set(counts) == {
        "oauth_authorization_codes",
        "oauth_refresh_tokens",
        "oauth_revoked_tokens",
        "oauth_login_failures",
    }
    left = await conn.execute(
        text(
            "SELECT jti FROM oauth_revoked_tokens WHERE jti LIKE 'purge-%' "
            "UNION ALL SELECT key FROM oauth_login_failures WHERE key LIKE 'purge:%'"
        )
    )
    assert sorted(r[0] for r in left) == ["purge-recent", "purge:recent"]
