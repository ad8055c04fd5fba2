"""settlement: periods, statements, matrix, adjustments, assignments, liability, reconciliation

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00.000000

Closed periods are immutable in the database, not only in the service: the triggers below refuse
any change to a closed period and any insert, update or delete of rows that belong to one;
`settlement_assignments` (which period settles a late event, or a transaction recorded while
the close ran) is insert-only.
Also a BRIN index on `transactions.recorded_at`, so the search for late events reads only
recently recorded ledger rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Integer
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FROZEN_TABLES = (
    "settlement_statements",
    "settlement_matrix",
    "settlement_adjustments",
    "settlement_liability",
    "settlement_assignments",
)

TRIGGERS = """
CREATE FUNCTION settlement_period_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status = 'closed' THEN
    RAISE EXCEPTION 'settlement period % is closed and cannot change', OLD.id
      USING ERRCODE = 'restrict_violation';
  END IF;
  -- An open period holds assignments only for the late events it adjusts.
  IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM settlement_assignments
                                  WHERE period_id = OLD.id AND adjusts_period_id IS NOT NULL) THEN
    RAISE EXCEPTION 'settlement period % settles late events and cannot be deleted', OLD.id
      USING ERRCODE = 'restrict_violation';
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER settlement_periods_frozen BEFORE UPDATE OR DELETE ON settlement_periods
  FOR EACH ROW EXECUTE FUNCTION settlement_period_frozen();

CREATE FUNCTION settlement_row_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM settlement_periods
             WHERE status = 'closed'
               AND (id = OLD.period_id OR (TG_OP = 'UPDATE' AND id = NEW.period_id))) THEN
    RAISE EXCEPTION '% of closed settlement period % cannot change', TG_TABLE_NAME, OLD.period_id
      USING ERRCODE = 'restrict_violation';
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  RETURN NEW;
END $$;

-- Statement-level, over the inserted rows at once (a close inserts a million assignments):
-- the periods exist, and none of them is closed.
CREATE FUNCTION settlement_insert_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad uuid;
BEGIN
  SELECT n.period_id INTO bad FROM (SELECT DISTINCT period_id FROM new_rows) n
   LEFT JOIN settlement_periods p ON p.id = n.period_id
   WHERE p.id IS NULL OR p.status = 'closed' LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'settlement period % is closed or does not exist: no rows can be added to %',
      bad, TG_TABLE_NAME
      USING ERRCODE = 'restrict_violation';
  END IF;
  RETURN NULL;
END $$;

-- Assignments also name, for a late event, the closed period it adjusts.
CREATE FUNCTION settlement_assignments_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad uuid;
BEGIN
  SELECT n.adjusts_period_id INTO bad
    FROM (SELECT DISTINCT adjusts_period_id FROM new_rows WHERE adjusts_period_id IS NOT NULL) n
    LEFT JOIN settlement_periods p ON p.id = n.adjusts_period_id
   WHERE p.id IS NULL OR p.status <> 'closed' LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'an adjustment must adjust a closed settlement period (%)', bad
      USING ERRCODE = 'restrict_violation';
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION settlement_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% cannot be truncated: closed settlement periods are immutable', TG_TABLE_NAME
    USING ERRCODE = 'restrict_violation';
END $$;

CREATE FUNCTION settlement_insert_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is insert-only: a transaction is settled once, in one period', TG_TABLE_NAME
    USING ERRCODE = 'restrict_violation';
END $$;
"""


def _table_triggers(table: str) -> str:
    sql = f"""
    CREATE TRIGGER {table}_insert_frozen AFTER INSERT ON {table}
      REFERENCING NEW TABLE AS new_rows
      FOR EACH STATEMENT EXECUTE FUNCTION settlement_insert_frozen();
    CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
      FOR EACH STATEMENT EXECUTE FUNCTION settlement_no_truncate();
    """
    if table == "settlement_assignments":
        sql += f"""
    CREATE TRIGGER {table}_adjusts_closed AFTER INSERT ON {table}
      REFERENCING NEW TABLE AS new_rows
      FOR EACH STATEMENT EXECUTE FUNCTION settlement_assignments_checked();
    CREATE TRIGGER {table}_insert_only BEFORE UPDATE OR DELETE ON {table}
      FOR EACH STATEMENT EXECUTE FUNCTION settlement_insert_only();
    """
    else:
        sql += f"""
    CREATE TRIGGER {table}_frozen BEFORE UPDATE OR DELETE ON {table}
      FOR EACH ROW EXECUTE FUNCTION settlement_row_frozen();
    """
    return sql


DROP_TRIGGERS = """
DROP FUNCTION IF EXISTS settlement_period_frozen() CASCADE;
DROP FUNCTION IF EXISTS settlement_row_frozen() CASCADE;
DROP FUNCTION IF EXISTS settlement_insert_frozen() CASCADE;
DROP FUNCTION IF EXISTS settlement_assignments_checked() CASCADE;
DROP FUNCTION IF EXISTS settlement_no_truncate() CASCADE;
DROP FUNCTION IF EXISTS settlement_insert_only() CASCADE;
"""


def upgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table(
        "settlement_periods",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_by", sa.Text(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.Text(), nullable=True),
        sa.Column("transaction_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("adjustment_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("unpriced_events", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "operator_margin", sa.Numeric(precision=20, scale=4), server_default="0", nullable=False
        ),
        sa.Column("breakage_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "breakage_value", sa.Numeric(precision=20, scale=4), server_default="0", nullable=False
        ),
        sa.Column("frozen_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("transactions_digest", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.Text(), nullable=True),
        postgresql.ExcludeConstraint(
            (sa.text("tstzrange(period_start, period_end)"), "&&"),
            using="gist",
            name="ex_settlement_periods_overlap",
        ),
        sa.CheckConstraint(
            "(status = 'closed') = (closed_at IS NOT NULL AND content_hash IS NOT NULL "
            "AND frozen_before IS NOT NULL)",
            name="ck_settlement_periods_sealed",
        ),
        sa.CheckConstraint(
            "kind IN ('daily','weekly','monthly','custom')", name="ck_settlement_periods_kind"
        ),
        sa.CheckConstraint("status IN ('open','closed')", name="ck_settlement_periods_status"),
        sa.CheckConstraint("period_end > period_start", name="ck_settlement_periods_range"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_settlement_periods_start", "settlement_periods", ["period_start"], unique=False
    )
    op.create_table(
        "settlement_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("late_watermark", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name="ck_settlement_state_single"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "settlement_adjustments",
        sa.Column("period_id", sa.UUID(), nullable=False),
        sa.Column("transaction_id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=False),
        sa.Column("adjusts_period_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=20, scale=8), nullable=True),
        sa.Column("amount", sa.Numeric(precision=30, scale=8), nullable=False),
        sa.Column("ref", sa.Text(), nullable=True),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["adjusts_period_id"],
            ["settlement_periods.id"],
        ),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["settlement_periods.id"],
        ),
        sa.PrimaryKeyConstraint("period_id", "transaction_id", "partner_id"),
    )
    op.create_table(
        "settlement_assignments",
        sa.Column("transaction_id", sa.UUID(), nullable=False),
        sa.Column("period_id", sa.UUID(), nullable=False),
        sa.Column("adjusts_period_id", sa.UUID(), nullable=True),
        # No foreign keys: a close inserts a million rows, and a row-level check each costs
        # more than the whole insert. settlement_insert_frozen checks the periods at once.
        sa.PrimaryKeyConstraint("transaction_id"),
    )
    op.create_index(
        "ix_settlement_assignments_adjustments",
        "settlement_assignments",
        ["period_id"],
        unique=False,
        postgresql_where=sa.text("adjusts_period_id IS NOT NULL"),
    )
    op.create_table(
        "settlement_liability",
        sa.Column("period_id", sa.UUID(), nullable=False),
        sa.Column("issuer_id", sa.UUID(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Numeric(precision=20, scale=4), nullable=False),
        sa.Column("issue_price", sa.Numeric(precision=20, scale=8), nullable=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["settlement_periods.id"],
        ),
        sa.PrimaryKeyConstraint("period_id", "issuer_id"),
    )
    op.create_table(
        "settlement_matrix",
        sa.Column("period_id", sa.UUID(), nullable=False),
        sa.Column("issuer_id", sa.UUID(), nullable=False),
        sa.Column("redeemer_id", sa.UUID(), nullable=False),
        sa.Column("points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("value", sa.Numeric(precision=20, scale=4), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["settlement_periods.id"],
        ),
        sa.PrimaryKeyConstraint("period_id", "issuer_id", "redeemer_id"),
    )
    op.create_table(
        "settlement_reconciliations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("period_id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("file_sha256", sa.Text(), nullable=False),
        sa.Column("file_lines", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("mismatched", sa.Integer(), nullable=False),
        sa.Column("missing_in_ledger", sa.Integer(), nullable=False),
        sa.Column("missing_in_file", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["settlement_periods.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_settlement_reconciliations_period",
        "settlement_reconciliations",
        ["period_id", "partner_id"],
        unique=False,
    )
    op.create_table(
        "settlement_statements",
        sa.Column("period_id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=False),
        sa.Column("issued_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("reversed_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("redeemed_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("returned_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "issuance_charge", sa.Numeric(precision=20, scale=4), server_default="0", nullable=False
        ),
        sa.Column(
            "reimbursement", sa.Numeric(precision=20, scale=4), server_default="0", nullable=False
        ),
        sa.Column("net", sa.Numeric(precision=20, scale=4), server_default="0", nullable=False),
        sa.Column("breakage_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "breakage_value", sa.Numeric(precision=20, scale=4), server_default="0", nullable=False
        ),
        sa.Column("adjustment_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "adjustment_net", sa.Numeric(precision=20, scale=4), server_default="0", nullable=False
        ),
        sa.Column("unpriced_events", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "net = reimbursement - issuance_charge", name="ck_settlement_statements_net"
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["settlement_periods.id"],
        ),
        sa.PrimaryKeyConstraint("period_id", "partner_id"),
    )
    op.create_index(
        "ix_settlement_statements_partner",
        "settlement_statements",
        ["partner_id", "period_id"],
        unique=False,
    )
    op.create_table(
        "settlement_reconciliation_lines",
        sa.Column("reconciliation_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("order_ref", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("file_points", sa.BigInteger(), nullable=True),
        sa.Column("file_amount", sa.Numeric(precision=20, scale=4), nullable=True),
        sa.Column("ledger_points", sa.BigInteger(), nullable=True),
        sa.Column("ledger_amount", sa.Numeric(precision=20, scale=4), nullable=True),
        sa.Column(
            "file_line_numbers",
            postgresql.ARRAY(Integer()),
            server_default=sa.text("'{}'::int[]"),
            nullable=False,
        ),
        sa.Column(
            "transaction_ids",
            postgresql.ARRAY(UUID()),
            server_default=sa.text("'{}'::uuid[]"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('matched','mismatched','missing_in_ledger','missing_in_file')",
            name="ck_settlement_reconciliation_lines_status",
        ),
        sa.ForeignKeyConstraint(
            ["reconciliation_id"],
            ["settlement_reconciliations.id"],
        ),
        sa.PrimaryKeyConstraint("reconciliation_id", "seq"),
    )
    # ### end Alembic commands ###
    op.create_index(
        "ix_transactions_recorded_at_brin",
        "transactions",
        ["recorded_at"],
        unique=False,
        postgresql_using="brin",
    )
    op.execute("INSERT INTO settlement_state (id) VALUES (1)")
    op.execute(TRIGGERS)
    for table in FROZEN_TABLES:
        op.execute(_table_triggers(table))


def downgrade() -> None:
    op.execute(DROP_TRIGGERS)
    op.drop_index("ix_transactions_recorded_at_brin", table_name="transactions")
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_table("settlement_reconciliation_lines")
    op.drop_index("ix_settlement_statements_partner", table_name="settlement_statements")
    op.drop_table("settlement_statements")
    op.drop_index("ix_settlement_reconciliations_period", table_name="settlement_reconciliations")
    op.drop_table("settlement_reconciliations")
    op.drop_table("settlement_matrix")
    op.drop_table("settlement_liability")
    op.drop_index(
        "ix_settlement_assignments_adjustments",
        table_name="settlement_assignments",
        postgresql_where=sa.text("adjusts_period_id IS NOT NULL"),
    )
    op.drop_table("settlement_assignments")
    op.drop_table("settlement_adjustments")
    op.drop_table("settlement_state")
    op.drop_index("ix_settlement_periods_start", table_name="settlement_periods")
    op.drop_table("settlement_periods")
    # ### end Alembic commands ###
