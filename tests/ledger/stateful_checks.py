"""The stateful test's check of the database after every step (test_stateful.py): the ledger's
invariants over everything, and the model's view of this run's members and partners."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import service as ledger
from tests.ledger.model import MBalance, MFunding, Model

# One statement. Global, over every run so far: offenders as arrays, NULL when there are none.
# This run's members: their lots and holds as the model sees them (a hold whose time ran out is
# expired and its points are back in their lots, whether or not the database released it yet),
# with the offenders among them to the per-lot and per-hold bookkeeping; this run's partners'
# accounts and the operator's promotions account.
CHECKS = text(
    """
    WITH legs AS (
        SELECT transaction_id, sum(amount) AS total, count(*) AS n FROM entries GROUP BY 1
    ), per_account AS (
        SELECT account_id, sum(amount) AS total FROM entries GROUP BY 1
    ), lot_sum AS (
        SELECT wallet_id, sum(remaining) AS total FROM lots GROUP BY 1
    ), reserved AS (
        SELECT h.wallet_id, sum(a.points) AS total
        FROM holds h JOIN hold_allocations a ON a.hold_id = h.id
        WHERE h.status = 'active' GROUP BY 1
    ), run_lots AS (
        SELECT l.*,
               (SELECT coalesce(sum(e.amount), 0) FROM entries e
                 WHERE e.transaction_id = l.earn_tx_id AND e.account_id = l.wallet_id
                   AND l.transfer_tx_id IS NULL) AS credited,
               (SELECT coalesce(sum(p.points), 0) FROM lot_postings p WHERE p.lot_id = l.id)
                   AS posted,
               (SELECT coalesce(sum(a.points), 0) FROM hold_allocations a
                  JOIN holds h ON h.id = a.hold_id
                 WHERE a.lot_id = l.id AND h.status = 'active') AS reserved,
               (SELECT coalesce(sum(a.points), 0) FROM hold_allocations a
                  JOIN holds h ON h.id = a.hold_id
                 WHERE a.lot_id = l.id AND h.status = 'active' AND h.expires_at <= :at)
                   AS stale
        FROM lots l WHERE l.member_id = ANY(:members)
    ), run_holds AS (
        SELECT h.*,
               (SELECT json_agg(json_build_array(a.lot_id, a.points, a.captured, a.returned)
                                ORDER BY a.seq)
                  FROM hold_allocations a WHERE a.hold_id = h.id) AS allocs,
               (SELECT CAST(array[sum(a.points), sum(a.captured), sum(a.returned)] AS bigint[])
                  FROM hold_allocations a WHERE a.hold_id = h.id) AS sums
        FROM holds h WHERE h.member_id = ANY(:members)
    )
    SELECT
        (SELECT array_agg(t.id) FROM transactions t LEFT JOIN legs ON legs.transaction_id = t.id
          WHERE coalesce(legs.total, 0) <> 0 OR coalesce(legs.n, 0) < 2) AS unbalanced,
        (SELECT coalesce(sum(amount), 0) FROM entries) AS grand_total,
        (SELECT array_agg(a.id) FROM accounts a LEFT JOIN per_account p ON p.account_id = a.id
          WHERE a.kind IN ('wallet', 'debt')
            AND a.balance IS DISTINCT FROM coalesce(p.total, 0)) AS stored_differs,
        (SELECT array_agg(a.id) FROM accounts a
          WHERE (a.kind = 'wallet' AND a.balance < 0)
             OR (a.kind = 'debt' AND a.balance > 0)) AS wrong_sign,
        (SELECT array_agg(a.id) FROM accounts a
           LEFT JOIN lot_sum l ON l.wallet_id = a.id
           LEFT JOIN reserved r ON r.wallet_id = a.id
          WHERE a.kind = 'wallet'
            AND a.balance <> coalesce(l.total, 0) + coalesce(r.total, 0)) AS wallet_vs_lots,
        (SELECT array_agg(id) FROM run_lots
          WHERE remaining + reserved <> credited + posted) AS untraced_lots,
        (SELECT array_agg(id) FROM run_holds
          WHERE sums <> array[points, captured, returned]) AS holds_vs_allocations,
        (SELECT json_agg(json_build_array(
                    id, origin_lot_id, earn_tx_id, transfer_tx_id, member_id, issuer_id, points,
                    remaining + stale, reversed, earned_at, available_at, expires_at))
           FROM run_lots) AS lots,
        (SELECT json_object_agg(coalesce(CAST(issuer_id AS text), 'operator'), points)
           FROM (SELECT issuer_id, sum(remaining + stale) AS points FROM run_lots
                 GROUP BY issuer_id HAVING sum(remaining + stale) <> 0) o) AS outstanding,
        (SELECT json_agg(json_build_array(
                    id, member_id, partner_id, points,
                    CASE WHEN status = 'active' AND expires_at <= :at THEN 'expired'
                         ELSE status END,
                    captured, returned, expires_at, allocs))
           FROM run_holds) AS holds,
        (SELECT json_object_agg(a.kind || ':' || coalesce(CAST(a.owner_id AS text), ''),
                                coalesce(p.total, 0))
           FROM accounts a LEFT JOIN per_account p ON p.account_id = a.id
          WHERE a.owner_id = ANY(:partners) OR a.kind = 'promotions') AS funding
    """
)


async def promotions_balance(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return await ledger.account_balance(conn, kind="promotions", owner_id=None)


async def _read_checks(
    engine: AsyncEngine, members: list[uuid.UUID], partners: list[uuid.UUID], at: datetime
) -> Any:
    async with engine.connect() as conn:
        params = {"members": members, "partners": partners, "at": at}
        return (await conn.execute(CHECKS, params)).one()


async def _balance(engine: AsyncEngine, member_id: uuid.UUID, at: datetime) -> MBalance:
    async with engine.connect() as conn:
        b = await ledger.balance(conn, member_id=member_id, at=at)
    return MBalance(b.wallet, b.available, b.pending, b.on_hold, b.expiring, b.debt)


async def check_database(
    engine: AsyncEngine,
    model: Model,
    members: list[uuid.UUID],
    partners: list[uuid.UUID],
    promotions_before: int,
) -> None:
    """Fail unless the ledger's invariants hold and the database is what the model says."""
    now = model.now
    # Nothing writes meanwhile: the reads run side by side, each on its own connection.
    reads = await asyncio.gather(
        _read_checks(engine, members, partners, now),
        *(_balance(engine, member_id, now) for member_id in members),
        return_exceptions=True,  # let every read finish before failing
    )
    for read in reads:
        if isinstance(read, BaseException):
            raise read
    row, *balances = reads
    assert row.unbalanced is None, f"transactions not summing to zero: {row.unbalanced}"
    assert row.grand_total == 0, f"all entries sum to {row.grand_total}"
    assert row.stored_differs is None, f"stored balance != entries: {row.stored_differs}"
    assert row.wrong_sign is None, f"negative wallet / positive debt: {row.wrong_sign}"
    assert row.wallet_vs_lots is None, f"wallet != lots + active holds: {row.wallet_vs_lots}"
    assert row.untraced_lots is None, f"lot != earn + postings: {row.untraced_lots}"
    assert row.holds_vs_allocations is None, f"hold != allocs: {row.holds_vs_allocations}"

    for m, got in enumerate(balances):
        assert got == model.balance(m), f"member {m} at {now}: {got} != {model.balance(m)}"

    member = {str(mid): i for i, mid in enumerate(members)}
    partner: dict[str | None, int | None] = {str(pid): i for i, pid in enumerate(partners)}
    partner[None] = None
    ts = datetime.fromisoformat
    by_id = {r[0]: r for r in row.lots or []}

    def key(lot_id: int) -> tuple[Any, ...]:
        _, origin, tx, transfer, *_ = by_id[lot_id]
        return (uuid.UUID(tx), transfer and uuid.UUID(transfer), origin and key(origin))

    db_lots = {
        key(i): (member[m], partner[p], pts, rem, rev, ts(e), ts(a), ts(x))
        for i, _, _, _, m, p, pts, rem, rev, e, a, x in row.lots or []
    }
    model_lots = {
        lot.key(): (
            lot.member,
            lot.issuer,
            lot.points,
            lot.remaining,
            lot.reversed,
            lot.earned_at,
            lot.available_at,
            lot.expires_at,
        )
        for lot in model.lots
    }
    assert db_lots == model_lots, f"lots at {now}"
    outstanding = {
        partner[None if k == "operator" else k]: v for k, v in (row.outstanding or {}).items()
    }
    assert outstanding == model.outstanding(), f"outstanding by issuer at {now}"

    db_holds = {
        uuid.UUID(h): (
            member[m],
            partner[p],
            pts,
            status,
            cap,
            ret,
            ts(x),
            [(key(lot_id), *amounts) for lot_id, *amounts in allocs],
        )
        for h, m, p, pts, status, cap, ret, x, allocs in row.holds or []
    }
    model_holds = {
        h.id: (
            h.member,
            h.partner,
            h.points,
            h.status,
            h.captured,
            h.returned,
            h.expires_at,
            [(a.lot.key(), a.points, a.captured, a.returned) for a in h.allocs],
        )
        for h in model.holds
    }
    assert db_holds == model_holds, f"holds at {now}"

    funding = row.funding
    got = MFunding(
        issuance=[funding[f"issuance:{p}"] for p in partners],
        redemption=[funding[f"redemption:{p}"] for p in partners],
        promotions=funding["promotions:"] - promotions_before,
    )
    assert got == model.funding, f"issuance, redemption, promotions at {now}"
