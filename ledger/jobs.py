"""The ledger's jobs: hold expiry and points expiry, a batch of members per transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.ids import uuid7
from core.metrics import EXPIRY_SECONDS, timed
from ledger.claims import _at
from ledger.errors import (
    LedgerValidation,
)
from ledger.holds import _release_stale_holds
from ledger.results import ExpiryReport


def _not_in_future(at: datetime | None, now: datetime | None) -> datetime:
    """`at` (default: now), refused when later than `now` (default: the clock)."""
    # A job dated in the future would write postings effective after the present: balances
    # would drop at once while every "as of now" read (the points liability) puts them back.
    now = _at(now)
    at = now if at is None else _at(at)
    if at > now:
        raise LedgerValidation(
            f"cannot expire as of {at.isoformat()}: it is in the future (now is "
            f"{now.isoformat()}); points and holds expire only up to the present"
        )
    return at


async def release_expired_holds(
    engine: AsyncEngine,
    *,
    at: datetime | None = None,
    now: datetime | None = None,
    batch_size: int = 500,
) -> int:
    """Expire every hold whose time ran out by `at` (not after `now`, default the clock);
    re-runnable; returns how many were released."""
    at = _not_in_future(at, now)
    released = 0
    while True:
        async with engine.begin() as conn:
            wallets = (
                (
                    await conn.execute(
                        text(
                            "SELECT DISTINCT wallet_id FROM holds "
                            "WHERE status = 'active' AND expires_at <= :at ORDER BY wallet_id LIMIT :n"
                        ),
                        {"at": at, "n": batch_size},
                    )
                )
                .scalars()
                .all()
            )
            if not wallets:
                return released
            await _lock_wallets(conn, list(wallets))
            n = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM holds WHERE wallet_id = ANY(:w) "
                        "AND status = 'active' AND expires_at <= :at"
                    ),
                    {"w": list(wallets), "at": at},
                )
            ).scalar_one()
            await _release_stale_holds(conn, list(wallets), at)
            released += int(n)


async def _lock_wallets(conn: AsyncConnection, wallet_ids: list[int]) -> None:
    # Ascending id order: the same order every single-member operation uses.
    await conn.execute(
        text("SELECT id FROM accounts WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"),
        {"ids": wallet_ids},
    )


_EXPIRE = text(
    """
    WITH x AS (
        UPDATE lots l SET remaining = 0
        FROM (SELECT id, remaining FROM lots
              WHERE wallet_id = ANY(:wallets) AND expires_at <= :at AND remaining > 0) o
        WHERE l.id = o.id
        RETURNING l.id, l.wallet_id, o.remaining
    ), tot AS (
        SELECT count(*) AS lots, coalesce(sum(remaining), 0) AS points FROM x
    ), t AS (
        INSERT INTO transactions (id, kind, points, effective_at, actor)
        SELECT :tx, 'expiry', tot.points, :at, :actor FROM tot WHERE tot.lots > 0
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        SELECT :tx, wallet_id, -sum(remaining), :at, :actor FROM x GROUP BY wallet_id
        UNION ALL
        SELECT :tx, :breakage, tot.points, :at, :actor FROM tot WHERE tot.lots > 0
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT id, :tx, 'expiry', -remaining, :at, :actor FROM x
    )
    SELECT lots, points FROM tot
    """
)


# Wallets with something to expire: what is left in expired lots, and what holds that ran out
# still reserve from expired lots (released first, so that it expires too).
_EXPIRING_WALLETS = """
    SELECT wallet_id FROM lots WHERE expires_at <= :at AND remaining > 0
    UNION
    SELECT h.wallet_id FROM holds h
    JOIN hold_allocations a ON a.hold_id = h.id
    JOIN lots l ON l.id = a.lot_id
    WHERE h.status = 'active' AND h.expires_at <= :at AND l.expires_at <= :at
"""


@timed(EXPIRY_SECONDS)
async def expire_points(
    engine: AsyncEngine,
    *,
    at: datetime | None = None,
    now: datetime | None = None,
    actor: str = "system:expiry",
    batch_size: int = 500,
    progress: Any = None,
) -> ExpiryReport:
    """Move what is left of every lot expired by `at` to breakage, a batch of members per
    transaction. Safe to re-run: an expired lot is left at zero and is not taken twice.
    `at` later than `now` (default: the clock) is refused: expiry is never dated in the future.
    `progress(done_members, total_members)` is called after each batch."""
    at = _not_in_future(at, now)
    async with engine.connect() as conn:
        total = (
            await conn.execute(
                text(f"SELECT count(*) FROM ({_EXPIRING_WALLETS}) w"),
                {"at": at},
            )
        ).scalar_one()
    members = lots = points = batches = 0
    while True:
        async with engine.begin() as conn:
            wallets = list(
                (
                    await conn.execute(
                        text(
                            f"SELECT wallet_id FROM ({_EXPIRING_WALLETS}) w "
                            "ORDER BY wallet_id LIMIT :n"
                        ),
                        {"at": at, "n": batch_size},
                    )
                ).scalars()
            )
            if not wallets:
                break
            await _lock_wallets(conn, wallets)
            # Holds that ran out give their points back first, so those expire too.
            await _release_stale_holds(conn, wallets, at)
            breakage = (
                await conn.execute(text("SELECT id FROM accounts WHERE kind = 'breakage'"))
            ).scalar_one()
            row = (
                await conn.execute(
                    _EXPIRE,
                    {
                        "wallets": wallets,
                        "at": at,
                        "tx": uuid7(),
                        "actor": actor,
                        "breakage": breakage,
                    },
                )
            ).one()
        members += len(wallets)
        lots += int(row.lots)
        points += int(row.points)
        batches += 1
        if progress is not None:
            progress(members, max(int(total), members))
    return ExpiryReport(members=members, lots=lots, points=points, batches=batches)
