"""Settlement: the operator's own points (lots with no issuing partner, migration 0010)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-12 10:00:00.000000

Points the operator issues (sign-up and referral bonuses) name no partner: the settlement shows
them under a NULL issuer (NULL: the operator).

- `settlement_matrix.issuer_id` and `settlement_liability.issuer_id` may be NULL (a cell of
  operator points accepted at a partner; the operator's line of the liability), and
  `settlement_adjustments.partner_id` too (a late expiry of operator points: breakage of the
  operator). A primary key cannot hold a NULL: each table gets a surrogate `id`, and its former
  key becomes a unique constraint with NULLS NOT DISTINCT, so that there is still one cell per
  (period, issuer, redeemer) with the operator counted as one issuer.
- `settlement_periods`: the operator's side of a period, reported, not paid (no partner's
  statement holds it): `operator_issued_points` (its bonuses), `operator_breakage_points` and
  `operator_breakage_value` (its points expired in the period, part of `breakage_*`), and
  `point_value`, the face value of a point that values the operator's points (their breakage
  and liability line; see settlement.liability), set when the period is created like its
  currency. Existing periods get 1.00, the default POINT_VALUE: none of them holds operator
  points valued at another.

The downgrade refuses while any settlement row names the operator (the former keys could not
hold it); otherwise it restores the former schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> (its former primary key columns, the column that may now name the operator)
_KEYED = {
    "settlement_matrix": (("period_id", "issuer_id", "redeemer_id"), "issuer_id"),
    "settlement_liability": (("period_id", "issuer_id"), "issuer_id"),
    "settlement_adjustments": (("period_id", "transaction_id", "partner_id"), "partner_id"),
}


def upgrade() -> None:
    for table, (columns, nullable) in _KEYED.items():
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.execute(f"ALTER TABLE {table} ADD COLUMN id bigserial")
        op.create_primary_key(f"{table}_pkey", table, ["id"])
        op.alter_column(table, nullable, nullable=True)
        op.create_unique_constraint(
            f"uq_{table}_key", table, list(columns), postgresql_nulls_not_distinct=True
        )
    op.add_column(
        "settlement_periods",
        sa.Column("operator_issued_points", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "settlement_periods",
        sa.Column("operator_breakage_points", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "settlement_periods",
        sa.Column(
            "operator_breakage_value",
            sa.Numeric(precision=20, scale=4),
            server_default="0",
            nullable=False,
        ),
    )
    # Every period is created with the point value of its day (settlement.runs): the default
    # only fills the existing rows, then goes.
    op.add_column(
        "settlement_periods",
        sa.Column(
            "point_value", sa.Numeric(precision=20, scale=8), server_default="1.00", nullable=False
        ),
    )
    op.alter_column("settlement_periods", "point_value", server_default=None)


def downgrade() -> None:
    named = " OR ".join(
        f"EXISTS (SELECT 1 FROM {table} WHERE {column} IS NULL)"
        for table, (_, column) in _KEYED.items()
    )
    op.execute(
        f"""
        DO $$
        BEGIN
          IF {named} THEN
            RAISE EXCEPTION 'cannot downgrade below 0013: settlement rows name the operator'
              USING ERRCODE = 'restrict_violation';
          END IF;
        END $$;
        """
    )
    for column in (
        "point_value",
        "operator_breakage_value",
        "operator_breakage_points",
        "operator_issued_points",
    ):
        op.drop_column("settlement_periods", column)
    for table, (columns, nullable) in _KEYED.items():
        op.drop_constraint(f"uq_{table}_key", table, type_="unique")
        op.alter_column(table, nullable, nullable=False)
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.drop_column(table, "id")
        op.create_primary_key(f"{table}_pkey", table, list(columns))
