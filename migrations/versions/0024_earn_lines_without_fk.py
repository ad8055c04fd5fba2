"""ledger: an earn's breakdown lines without a foreign key to their transaction

Revision ID: 0024
Revises: 0020
Create Date: 2026-12-17 08:00:00.000000

`earn_lines` are written only by the statement that writes their earn (`ledger.earn`,
`ledger.batch`), from the same `tx`, and neither table accepts an update or a delete (their
insert-only triggers): the foreign key could never fail, and its check per line (an earn with
offers and a tier has 8 to 10) was a third of what the lines cost an earn in the group commit's
statement (bench/RESULTS.md, "with 20 live offers and 3 tiers"). The tests' ledger invariants
check that every line has its earn and that an earn's lines sum to its points
(tests/ledger/invariants.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("earn_lines_transaction_id_fkey", "earn_lines", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        "earn_lines_transaction_id_fkey",
        "earn_lines",
        "transactions",
        ["transaction_id"],
        ["id"],
    )
