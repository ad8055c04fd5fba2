"""ledger: an earn's breakdown in one row (`earn_breakdowns`) in place of a row per line

Revision ID: 0024
Revises: 0020
Create Date: 2026-12-17 08:00:00.000000

`earn_lines` (0016) stored a row per line: an earn with offers and a tier wrote 8 to 10, each
with its index entry, foreign-key check and constraints, in the group commit's statement. The
lines are only ever read whole, per earn (`ledger.reads.earn_lines`), so `earn_breakdowns`
keeps them as one JSON array per earn, in order: `[source, points, offer id or null, funded
by]` per line, as the earn statements receive them (no element is taken apart on the way in).
Still only for an earn with more than its BASE line, insert-only, and the lines still sum to
the earn's points (checked by the ledger before writing: `ledger.earn.check_earn`). The rows
of `earn_lines` move over unchanged.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0024"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "earn_breakdowns",
        sa.Column("transaction_id", sa.UUID(), nullable=False),
        sa.Column("lines", JSONB(), nullable=False),
        sa.CheckConstraint(
            "jsonb_typeof(lines) = 'array' AND jsonb_array_length(lines) > 1",
            name="ck_earn_breakdowns_lines",
        ),
        sa.ForeignKeyConstraint(["transaction_id"], ["transactions.id"]),
        sa.PrimaryKeyConstraint("transaction_id"),
    )
    op.execute(
        "INSERT INTO earn_breakdowns (transaction_id, lines) "
        "SELECT transaction_id, jsonb_agg(jsonb_build_array(source, points, offer_id, funded_by) "
        "ORDER BY position) FROM earn_lines GROUP BY transaction_id"
    )
    op.execute(
        "CREATE TRIGGER earn_breakdowns_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE "
        "ON earn_breakdowns FOR EACH STATEMENT EXECUTE FUNCTION ledger_insert_only()"
    )
    op.execute("DROP TRIGGER IF EXISTS earn_lines_insert_only ON earn_lines")
    op.drop_table("earn_lines")


def downgrade() -> None:
    op.create_table(
        "earn_lines",
        sa.Column("transaction_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("offer_id", sa.UUID(), nullable=True),
        sa.Column("funded_by", sa.Text(), nullable=False),
        sa.CheckConstraint("source IN ('BASE','TIER','OFFER')", name="ck_earn_lines_source"),
        sa.CheckConstraint("funded_by IN ('PARTNER','OPERATOR')", name="ck_earn_lines_funded_by"),
        sa.CheckConstraint("points >= 0", name="ck_earn_lines_points"),
        sa.CheckConstraint(
            "(source = 'OFFER') = (offer_id IS NOT NULL)", name="ck_earn_lines_offer"
        ),
        sa.ForeignKeyConstraint(["transaction_id"], ["transactions.id"]),
        sa.PrimaryKeyConstraint("transaction_id", "position"),
    )
    op.execute(
        "INSERT INTO earn_lines (transaction_id, position, source, points, offer_id, funded_by) "
        "SELECT b.transaction_id, x.n - 1, x.v->>0, CAST(x.v->>1 AS bigint), "
        "CAST(x.v->>2 AS uuid), x.v->>3 "
        "FROM earn_breakdowns b CROSS JOIN LATERAL jsonb_array_elements(b.lines) "
        "WITH ORDINALITY AS x(v, n)"
    )
    op.execute(
        "CREATE TRIGGER earn_lines_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON earn_lines "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_insert_only()"
    )
    op.execute("DROP TRIGGER IF EXISTS earn_breakdowns_insert_only ON earn_breakdowns")
    op.drop_table("earn_breakdowns")
