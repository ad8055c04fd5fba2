"""ledger: the lines of an earn's breakdown (BASE, TIER, OFFER)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-14 10:00:00.000000

An earn's points are the sum of its lines (DOMAIN.md "Offers and the earn breakdown"). Lines
are written with the earn, in the same statement, and only for an earn with more than its BASE
line: an earn without rows reads back as one BASE line of its points. Insert-only, as the
transactions they describe. `offer_id` names a catalog offer without a foreign key: the ledger
sits below the catalog and never reads its tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
        "CREATE TRIGGER earn_lines_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON earn_lines "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_insert_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS earn_lines_insert_only ON earn_lines")
    op.drop_table("earn_lines")
