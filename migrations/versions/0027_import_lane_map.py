"""partners: an import's lane map, stored when it starts

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-20 08:00:00.000000

An import in lanes (`loyalty.imports`) splits its lines by member when it starts. A resumed
import used to split them again, from the cards' holders at the resume: a card that had got a
holder meanwhile (a member registered with it) moved its lines to another lane, and each lane's
stored position then counted a different list of lines, so that a line could be skipped (never
applied, the import saying done) or run twice. `lane_map` keeps the split itself: one byte per
data line, its lane, written with `lanes` when the import starts in more than one lane; a
resume deals the lines from it. NULL: one lane, or started before this revision (such an import
is split again at its resume, as before). Dropped with the body when the import is done.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("imports", sa.Column("lane_map", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("imports", "lane_map")
