"""ledger_refuse(): lets one set-based statement refuse itself

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 14:30:00.000000

The group-commit earn (`ledger.batch`) is a single autocommit statement. When what it finds
under its row locks (a member's debt) means the batch must not be written as planned, it calls
`ledger_refuse(reason)`: the statement fails whole with SQLSTATE LR001, nothing is written, and the batcher runs
each of its earns on the single path instead.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
CREATE FUNCTION ledger_refuse(reason text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger: %', reason USING ERRCODE = 'LR001';
END $$;
"""
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS ledger_refuse(text)")
