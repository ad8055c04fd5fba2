"""ledger: coalition-wide (operator-funded) offer points in the earn

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-16 10:00:00.000000

A coalition-wide offer's points are issued and paid for by the operator (DOMAIN.md "Offers and
the earn breakdown"): they live in a lot of their own with no issuer, funded from the
operator's `promotions` account, as the operator's bonuses already are. The shape chosen: ONE
earn transaction, whose entries take the partner's points from its `issuance` account and the
operator's from `promotions`, and which makes one lot per funder (the partner's, the operator's
with `issuer_id` NULL); `transactions.operator_points` says how many of its points the operator
funded (0 for every other transaction; a reversal of such an earn carries the operator's share
of what it reversed).

Why one transaction and not an earn plus a linked operator bonus: everything that sees the
member's side of the earn stays as it is (the earn's result and its idempotent replay, the
breakdown lines stored with it and summing to its points, the member's activity showing it
once, the qualifying spend of tiers, a refund's pro rata over the whole earn, webhooks), and an
earn whose partner lines come to 0 points (a small purchase with a coalition-wide bonus) needs
no transaction of 0 points. What prices or traces points already reads lots and their issuer
(the matrix, the liability, breakage, transfers, captures): two lots are all it needs. The one
reader that charges a transaction's partner for its points, settlement, reads them through the
`ledger_events` view, which now publishes `operator_points`: a partner is charged for the rest.

- `transactions.operator_points` (NOT NULL, default 0: existing rows are partner-funded), at
  most the transaction's points.
- `ix_lots_earn_tx`: one lot per (earn, issuer) among the lots an earn or bonus created (NULLS
  NOT DISTINCT: one operator lot), where it was one per earn.
- `ledger_events` gains `operator_points` (last, as CREATE OR REPLACE VIEW requires).

The downgrade refuses while any transaction has operator points.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EVENTS = """
    SELECT id, kind, points, partner_id, member_id, hold_id, reverses_id, ref, amount,
           currency, category, effective_at, recorded_at
    FROM transactions
"""
_EVENTS_NEW = """
    SELECT id, kind, points, partner_id, member_id, hold_id, reverses_id, ref, amount,
           currency, category, effective_at, recorded_at, operator_points
    FROM transactions
"""


def upgrade() -> None:
    op.add_column(
        "transactions",
        sa.Column("operator_points", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_check_constraint(
        "ck_transactions_operator_points",
        "transactions",
        "operator_points >= 0 AND operator_points <= points",
    )
    op.drop_index(
        "ix_lots_earn_tx", table_name="lots", postgresql_where=sa.text("transfer_tx_id IS NULL")
    )
    op.create_index(
        "ix_lots_earn_tx",
        "lots",
        ["earn_tx_id", "issuer_id"],
        unique=True,
        postgresql_where=sa.text("transfer_tx_id IS NULL"),
        postgresql_nulls_not_distinct=True,
    )
    op.execute(f"CREATE OR REPLACE VIEW ledger_events AS {_EVENTS_NEW}")


def downgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
          IF EXISTS (SELECT 1 FROM transactions WHERE operator_points <> 0) THEN
            RAISE EXCEPTION 'cannot downgrade below 0019: earns with operator points exist'
              USING ERRCODE = 'restrict_violation';
          END IF;
        END $$;
        """
    )
    op.execute("DROP VIEW ledger_events")
    op.execute(f"CREATE VIEW ledger_events AS {_EVENTS}")
    op.drop_index(
        "ix_lots_earn_tx", table_name="lots", postgresql_where=sa.text("transfer_tx_id IS NULL")
    )
    op.create_index(
        "ix_lots_earn_tx",
        "lots",
        ["earn_tx_id"],
        unique=True,
        postgresql_where=sa.text("transfer_tx_id IS NULL"),
    )
    op.drop_constraint("ck_transactions_operator_points", "transactions", type_="check")
    op.drop_column("transactions", "operator_points")
