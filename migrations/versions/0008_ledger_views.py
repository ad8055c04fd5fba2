"""Ledger views: what other packages may read of the ledger in SQL

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:00:00.000000

Settlement prices and aggregates a period's ledger events in set-based SQL, which no per-row
function call could do. It reads these views, never the ledger's tables, so that the ledger may
change its tables behind them (`ledger.reads` holds the point lookups). Each is a plain view
over one table (or one aggregate): PostgreSQL inlines it into the query that reads it, so plans
and indexes are those of the tables.

- `ledger_events`: every ledger transaction (earn, reversal, capture, return, expiry).
- `ledger_lots`: the lots (points earned, what is left of them, when they expire).
- `ledger_lot_postings`: every change to a lot (capture, return, reversal, expiry).
- `ledger_lot_holds`: per lot, the points live authorizations reserve from it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = {
    "ledger_events": """
        SELECT id, kind, points, partner_id, member_id, hold_id, reverses_id, ref, amount,
               currency, category, effective_at, recorded_at
        FROM transactions
    """,
    "ledger_lots": """
        SELECT id, member_id, issuer_id, earn_tx_id, points, remaining, reversed, earned_at,
               available_at, expires_at
        FROM lots
    """,
    "ledger_lot_postings": """
        SELECT id, lot_id, transaction_id, kind, points, effective_at FROM lot_postings
    """,
    "ledger_lot_holds": """
        SELECT ha.lot_id, sum(ha.points - ha.captured) AS points
        FROM holds h JOIN hold_allocations ha ON ha.hold_id = h.id
        WHERE h.status = 'active'
        GROUP BY ha.lot_id
    """,
}


def upgrade() -> None:
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
