"""Partner views: what other packages may read of the partners in SQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 21:00:00.000000

Settlement prices a period's ledger events at the agreements in force in set-based SQL (one
join per statement, not a lookup per event). It reads this view, never the `agreements`
table, so that the partners may change their tables behind it (`partners.service` holds the
point lookups). A plain view over one table: PostgreSQL inlines it into the query that reads
it, so plans and indexes are those of the table.

- `partner_agreements`: every agreement (prices per point, currency, effective from, recorded
  at); insert-only like the table.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = {
    "partner_agreements": """
        SELECT id, partner_id, issue_price, redemption_price, currency, effective_from,
               recorded_at
        FROM agreements
    """,
}


def upgrade() -> None:
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
