"""The state the workers of `serve --workers N` share, one process at a time: the rate-limit
windows in PostgreSQL (leased in slices), revocations pushed by NOTIFY. Two `RateLimits` or
two `RevocationList`s in this process stand for two workers (tests/gateway/test_workers.py
runs the real processes)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import utcnow
from core.settings import Settings
from gateway.oauth import revocation
from gateway.oauth.revocation import RevocationList
from gateway.ratelimit import GRAPHQL, RateLimits, SharedWindows


@contextlib.asynccontextmanager
async def workers(db_uri: str, n: int, **settings: float) -> AsyncIterator[list[RateLimits]]:
    limits = [RateLimits(Settings(**settings)) for _ in range(n)]  # type: ignore[arg-type]
    for lim in limits:
        await lim.start(db_uri)
    try:
        yield limits
    finally:
        for lim in limits:
            await lim.stop()


async def test_leased_windows_admit_exactly_the_limit_across_workers(db_uri: str) -> None:
    """A burst of 400 is leased 20 at a time: alternating between two workers, exactly 400 of
    500 are admitted, for 20 claims (one per slice), not 400 statements."""
    caller = f"member:{secrets.token_hex(4)}"
    async with workers(db_uri, 2, rate_limit_per_second=0.1, rate_limit_burst=400) as (a, b):
        claims = 0
        real = SharedWindows._claim

        async def counted(self: SharedWindows, *args: object) -> None:
            nonlocal claims
            claims += 1
            await real(self, *args)  # type: ignore[arg-type]

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(SharedWindows, "_claim", counted)
            verdicts = [await (a, b)[n % 2].hit(GRAPHQL, caller) for n in range(500)]
    assert verdicts.count(None) == 400
    assert all(v is not None and 0 < v <= 4000 for v in verdicts[400:])
    # One per slice, and the other worker's one that found the window spent (the worker whose
    # claim reached the limit knows it is spent).
    assert claims == 400 // 20 + 1


async def test_concurrent_requests_of_one_caller_share_one_claim(db_uri: str) -> None:
    caller = f"member:{secrets.token_hex(4)}"
    async with workers(db_uri, 1, rate_limit_per_second=0.1, rate_limit_burst=3) as (a,):
        verdicts = await asyncio.gather(*(a.hit(GRAPHQL, caller) for _ in range(10)))
    assert verdicts.count(None) == 3


async def test_a_spent_window_refuses_without_asking_the_database(
    db_uri: str, engine: AsyncEngine
) -> None:
    caller = f"member:{secrets.token_hex(4)}"
    async with workers(db_uri, 1, rate_limit_per_second=0.1, rate_limit_burst=2) as (a,):
        assert [await a.hit(GRAPHQL, caller) is None for _ in range(3)] == [True, True, False]
        before = await _hits(engine, caller)
        for _ in range(50):
            assert await a.hit(GRAPHQL, caller) is not None
        assert await _hits(engine, caller) == before == 2  # the claim that reached 2 said so


async def _hits(engine: AsyncEngine, caller: str) -> int:
    async with engine.connect() as conn:
        row = await conn.execute(
            text("SELECT hits FROM rate_limit_windows WHERE key LIKE :k"), {"k": f"%{caller}%"}
        )
        return int(row.scalar_one())


async def test_without_the_database_each_worker_counts_on_its_own() -> None:
    """The database unreachable: the limit holds per process (no 500, no unlimited caller)."""
    limits = RateLimits(Settings(rate_limit_per_second=0.1, rate_limit_burst=2))
    await limits.start("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    original = SharedWindows.CLAIM_TIMEOUT
    SharedWindows.CLAIM_TIMEOUT = 0.2
    try:
        assert [await limits.hit(GRAPHQL, "member:x") is None for _ in range(3)] == [
            True,
            True,
            False,
        ]
    finally:
        SharedWindows.CLAIM_TIMEOUT = original
        await limits.stop()


async def test_a_revocation_reaches_another_worker_without_a_reload(
    db_uri: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker's revocation arrives by NOTIFY: with the reload clock stopped, only the
    listener can tell this process."""
    jti = secrets.token_hex(8)
    other = RevocationList()
    listener = asyncio.create_task(other.listen(db_uri))
    try:
        now = time.monotonic()
        monkeypatch.setattr(revocation, "monotonic", lambda: now)  # no reload ever falls due
        deadline = time.monotonic() + 30  # time.monotonic itself: the module's is stopped
        while other._loaded_at is None or not await _listening(engine):
            assert time.monotonic() < deadline, "the listener never listened"
            assert not await other.is_revoked(engine, jti)  # loads once LISTEN is in place
            await other.wait_for_change(0.05)
        assert not await other.is_revoked(engine, jti)
        async with engine.begin() as conn:  # what /oauth/revoke commits, in any worker
            await conn.execute(
                text(
                    "INSERT INTO oauth_revoked_tokens (jti, expires_at, revoked_at) "
                    "VALUES (:j, :exp, now())"
                ),
                {"j": jti, "exp": utcnow() + timedelta(minutes=10)},
            )
        deadline = time.monotonic() + 30  # time.monotonic itself: the module's is stopped
        while not await other.is_revoked(engine, jti):
            assert time.monotonic() < deadline, "the revocation never arrived"
            await other.wait_for_change(1.0)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def _listening(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        n = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'coalition-revocations' AND datname = current_database() "
                "AND query LIKE 'LISTEN%'"
            )
        )
        return int(n.scalar_one()) > 0
