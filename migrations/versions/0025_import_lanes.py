"""partners: an import's lanes (its lines split by member, applied side by side); ledger: the
unused (partner_id, ref) index of every transaction dropped

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-18 08:00:00.000000

A large import is applied in lanes (`loyalty.imports`): its lines split by member, each lane
its own chunks on its own connection, so that two backends write at once. `lanes` holds each
lane's position (lines of that lane done), set when the import starts; `position` stays the
number of lines done in all. NULL: not started, or started before lanes existed (one lane,
at `position`).

`ix_transactions_partner_ref` (0001) served no query: every lookup of an order is of its earn
(`kind = 'earn'`), which `uq_transactions_earn_order` (partial, unique) serves; it cost an index
entry per transaction written.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("imports", sa.Column("lanes", ARRAY(sa.Integer()), nullable=True))
    op.drop_index("ix_transactions_partner_ref", table_name="transactions")


def downgrade() -> None:
    op.create_index("ix_transactions_partner_ref", "transactions", ["partner_id", "ref"])
    op.drop_column("imports", "lanes")
