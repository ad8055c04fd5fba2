"""Ledger invariants, checked in SQL over everything committed in the test database.

Each query returns the offending rows; an empty result means the invariant holds.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

INVARIANTS: dict[str, str] = {
    # Double entry: the entries of every transaction sum to zero, and there are at least two.
    "transaction does not sum to zero": """
        SELECT t.id, coalesce(sum(e.amount), 0) AS total, count(e.id) AS legs
        FROM transactions t LEFT JOIN entries e ON e.transaction_id = t.id
        GROUP BY t.id HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.id) < 2
    """,
    # An earn's breakdown (stored only beyond its BASE line) belongs to an earn and its lines
    # sum to the earn's points.
    "earn breakdown of no earn": """
        SELECT b.transaction_id FROM earn_breakdowns b
        LEFT JOIN transactions t ON t.id = b.transaction_id AND t.kind = 'earn'
        WHERE t.id IS NULL
    """,
    "earn breakdown does not sum to the earn's points": """
        SELECT t.id, t.points, s.total
        FROM transactions t JOIN earn_breakdowns b ON b.transaction_id = t.id
        CROSS JOIN LATERAL (SELECT sum(CAST(v->>1 AS bigint)) AS total
                            FROM jsonb_array_elements(b.lines) v) s
        WHERE s.total IS DISTINCT FROM t.points
    """,
    "entry without a transaction": """
        SELECT e.id FROM entries e LEFT JOIN transactions t ON t.id = e.transaction_id
        WHERE t.id IS NULL
    """,
    # Member accounts keep a stored balance: it is the sum of their entries.
    "stored balance differs from the sum of entries": """
        SELECT a.id, a.kind, a.balance, coalesce(sum(e.amount), 0) AS entries
        FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
        WHERE a.kind IN ('wallet', 'debt')
        GROUP BY a.id HAVING a.balance IS DISTINCT FROM coalesce(sum(e.amount), 0)
    """,
    "balance stored on a partner or operator account": """
        SELECT id, kind, balance FROM accounts
        WHERE kind NOT IN ('wallet', 'debt') AND balance IS NOT NULL
    """,
    "negative wallet or positive debt": """
        SELECT id, kind, balance FROM accounts
        WHERE (kind = 'wallet' AND balance < 0) OR (kind = 'debt' AND balance > 0)
    """,
    # wallet = what is left in its lots + what live holds reserved from them.
    "wallet differs from lots + active holds": """
        SELECT a.id, a.balance,
               (SELECT coalesce(sum(l.remaining), 0) FROM lots l WHERE l.wallet_id = a.id) AS lots,
               (SELECT coalesce(sum(ha.points), 0) FROM holds h
                  JOIN hold_allocations ha ON ha.hold_id = h.id
                 WHERE h.wallet_id = a.id AND h.status = 'active') AS held
        FROM accounts a WHERE a.kind = 'wallet'
          AND a.balance <> (SELECT coalesce(sum(l.remaining), 0) FROM lots l
                             WHERE l.wallet_id = a.id)
                         + (SELECT coalesce(sum(ha.points), 0) FROM holds h
                              JOIN hold_allocations ha ON ha.hold_id = h.id
                             WHERE h.wallet_id = a.id AND h.status = 'active')
    """,
    # Every lot: what it was credited with, plus its postings, is what is left in it plus what
    # live holds reserved from it. The lots an earn or bonus created (one per funder: an earn's
    # coalition-wide offer points are the operator's lot) were credited together with what its
    # wallet leg gave, each at most its points.
    "lot remaining differs from its history": """
        WITH lot AS (
            SELECT l.id, l.earn_tx_id, l.transfer_tx_id, l.wallet_id, l.points,
                   l.remaining + res.total - post.total AS credited
            FROM lots l
            CROSS JOIN LATERAL (
                SELECT coalesce(sum(p.points), 0) AS total FROM lot_postings p
                WHERE p.lot_id = l.id) post
            CROSS JOIN LATERAL (
                SELECT coalesce(sum(ha.points), 0) AS total FROM hold_allocations ha
                JOIN holds h ON h.id = ha.hold_id
                WHERE ha.lot_id = l.id AND h.status = 'active') res
        )
        SELECT lot.earn_tx_id, lot.transfer_tx_id, sum(lot.credited) AS credited,
               min(init.amount) AS wallet_leg
        FROM lot
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(e.amount), 0) AS amount FROM entries e
            WHERE e.transaction_id = lot.earn_tx_id AND e.account_id = lot.wallet_id
              AND lot.transfer_tx_id IS NULL) init
        GROUP BY lot.earn_tx_id, lot.transfer_tx_id, lot.id * (lot.transfer_tx_id IS NOT NULL)::int
        HAVING sum(lot.credited) <> min(init.amount) OR bool_or(lot.credited < 0)
            OR bool_or(lot.credited > lot.points AND lot.transfer_tx_id IS NULL)
    """,
    # Every lot names its earn or bonus (a transferred lot the original one) and its issuer:
    # the transaction's partner, or no one for the operator's points (its bonus, an earn's
    # coalition-wide offer points); an earn's or bonus's own lots hold its points, one lot per
    # funder.
    "lot of an earn that is not an earn": """
        SELECT CAST(l.id AS text) FROM lots l JOIN transactions t ON t.id = l.earn_tx_id
        WHERE t.kind NOT IN ('earn', 'bonus')
           OR (t.partner_id IS DISTINCT FROM l.issuer_id
               AND NOT (l.issuer_id IS NULL AND t.operator_points > 0))
           OR (l.transfer_tx_id IS NULL AND (
                 t.member_id <> l.member_id
                 OR l.points <> CASE WHEN l.issuer_id IS NULL AND t.operator_points > 0
                                     THEN t.operator_points
                                     ELSE t.points - t.operator_points END))
        UNION ALL
        SELECT CAST(t.id AS text) FROM transactions t
        WHERE t.kind IN ('earn', 'bonus')
          AND (SELECT coalesce(sum(l.points), 0) FROM lots l
               WHERE l.earn_tx_id = t.id AND l.transfer_tx_id IS NULL) <> t.points
    """,
    # An earn's or bonus's funding legs: its issuer's points from its issuance account (an
    # operator's bonus: `promotions`), an earn's operator points from `promotions`.
    "earn whose issuance leg is not its points": """
        SELECT t.id FROM transactions t
        LEFT JOIN (entries e JOIN accounts a ON a.id = e.account_id
                                            AND a.kind IN ('issuance', 'promotions'))
               ON e.transaction_id = t.id
        WHERE t.kind IN ('earn', 'bonus')
        GROUP BY t.id
        HAVING coalesce(sum(-e.amount) FILTER (WHERE a.kind = 'issuance'), 0)
                 <> CASE WHEN min(t.partner_id::text) IS NULL THEN 0
                         ELSE min(t.points) - min(t.operator_points) END
            OR coalesce(sum(-e.amount) FILTER (WHERE a.kind = 'promotions'), 0)
                 <> CASE WHEN min(t.partner_id::text) IS NULL THEN min(t.points)
                         ELSE min(t.operator_points) END
            OR count(e.id) FILTER (WHERE a.kind = 'issuance'
                                     AND a.owner_id IS DISTINCT FROM t.partner_id) > 0
            OR (min(t.kind) = 'bonus' AND min(t.operator_points) <> 0)
    """,
    # A reversal returns each funder's share: the partner's to its issuance account, the
    # operator's (of an earn's coalition-wide offer points) to `promotions`.
    "reversal whose funding legs differ from its shares": """
        SELECT t.id FROM transactions t
        LEFT JOIN (entries e JOIN accounts a ON a.id = e.account_id
                                            AND a.kind IN ('issuance', 'promotions'))
               ON e.transaction_id = t.id
        WHERE t.kind = 'reversal'
        GROUP BY t.id
        HAVING coalesce(sum(e.amount) FILTER (WHERE a.kind = 'issuance'
                                                AND a.owner_id = t.partner_id), 0)
                 <> min(t.points) - min(t.operator_points)
            OR coalesce(sum(e.amount) FILTER (WHERE a.kind = 'promotions'), 0)
                 <> min(t.operator_points)
    """,
    # A reversal's operator share is the earn's pro rata part of everything reversed so far
    # (`ledger.reversals.operator_share`), whatever the parts it came in.
    "earn reversed off its pro rata split": """
        SELECT t.id FROM transactions t
        JOIN LATERAL (
            SELECT coalesce(sum(r.points), 0) AS pts, coalesce(sum(r.operator_points), 0) AS op
            FROM transactions r WHERE r.kind = 'reversal' AND r.reverses_id = t.id) r ON true
        WHERE t.kind = 'earn' AND r.op <> t.operator_points * r.pts / t.points
    """,
    # A transferred lot carries its origin's issuer, earn and dates, and lives in its
    # transfer's receiving wallet.
    "transferred lot differs from its origin": """
        SELECT l.id FROM lots l
        JOIN lots o ON o.id = l.origin_lot_id
        JOIN transactions t ON t.id = l.transfer_tx_id
        WHERE t.kind <> 'transfer' OR o.member_id <> t.member_id OR l.member_id = t.member_id
           OR l.issuer_id IS DISTINCT FROM o.issuer_id OR l.earn_tx_id <> o.earn_tx_id
           OR l.earned_at <> o.earned_at OR l.available_at <> o.available_at
           OR l.expires_at <> o.expires_at
           OR NOT EXISTS (SELECT 1 FROM entries e WHERE e.transaction_id = t.id
                                                    AND e.account_id = l.wallet_id)
    """,
    # A transfer takes its points from the sender's lots; the receiver's lots get what its
    # wallet got (the rest repaid the receiver's debt).
    "transfer's lot postings differ from its entries": """
        SELECT t.id FROM transactions t
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(-p.points) FILTER (WHERE l.member_id = t.member_id), 0) AS out,
                   coalesce(sum(p.points) FILTER (WHERE l.member_id <> t.member_id), 0) AS inn
            FROM lot_postings p JOIN lots l ON l.id = p.lot_id
            WHERE p.transaction_id = t.id) p
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(e.amount) FILTER (WHERE a.owner_id <> t.member_id
                                                    AND a.kind = 'wallet'), 0) AS credited
            FROM entries e JOIN accounts a ON a.id = e.account_id
            WHERE e.transaction_id = t.id) e
        WHERE t.kind = 'transfer' AND (p.out <> t.points OR p.inn <> e.credited)
    """,
    # Holds: an active hold reserves exactly its points; a captured one was captured once.
    "active hold whose allocations differ from its points": """
        SELECT h.id FROM holds h LEFT JOIN hold_allocations ha ON ha.hold_id = h.id
        WHERE h.status = 'active'
        GROUP BY h.id HAVING h.points <> coalesce(sum(ha.points), 0)
    """,
    "hold captured/returned differs from its allocations": """
        SELECT h.id FROM holds h LEFT JOIN hold_allocations ha ON ha.hold_id = h.id
        GROUP BY h.id
        HAVING h.captured <> coalesce(sum(ha.captured), 0)
            OR h.returned <> coalesce(sum(ha.returned), 0)
    """,
    "hold not captured exactly once": """
        SELECT h.id, h.status, count(t.id) AS captures
        FROM holds h LEFT JOIN transactions t ON t.hold_id = h.id AND t.kind = 'capture'
        GROUP BY h.id
        HAVING count(t.id) <> CASE WHEN h.status = 'captured' THEN 1 ELSE 0 END
            OR (h.status = 'captured' AND (h.capture_tx_id IS NULL
                                           OR h.captured <> max(t.points)
                                           OR h.capture_tx_id <> max(t.id::text)::uuid))
            OR (h.status <> 'captured' AND h.captured <> 0)
    """,
    "idempotency key claimed without a result": """
        SELECT id, actor, operation, key FROM idempotency_keys WHERE result IS NULL
    """,
}


async def violations(conn: AsyncConnection) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    """Every invariant that fails, with (up to 5 of) its offending rows."""
    found: dict[str, list[tuple]] = {}  # type: ignore[type-arg]
    for name, sql in INVARIANTS.items():
        rows = [tuple(r) for r in (await conn.execute(text(sql))).fetchmany(5)]
        if rows:
            found[name] = rows
    return found


async def assert_invariants(engine: AsyncEngine) -> None:
    """Fail with the broken invariants, looking at committed data only."""
    async with engine.connect() as conn:
        found = await violations(conn)
    assert not found, f"ledger invariants broken: {found}"


TABLES = (
    "accounts",
    "transactions",
    "entries",
    "lots",
    "lot_postings",
    "holds",
    "hold_allocations",
    "idempotency_keys",
    "members",
    "partners",
)


async def row_counts(conn: AsyncConnection) -> dict[str, int]:
    """Rows per ledger table (as `conn` sees them)."""
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TABLES)
    return {name: int(n) for name, n in (await conn.execute(text(sql))).all()}


async def table_digest(conn: AsyncConnection) -> dict[str, str]:
    """A digest of every ledger table's full content (detects updates, not only inserts)."""
    sql = " UNION ALL ".join(
        f"SELECT '{t}', coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"
        for t in TABLES
    )
    return {name: d for name, d in (await conn.execute(text(sql))).all()}
