"""partners: an import's file stored uncompressed

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-21 08:00:00.000000

A file of 200,000 lines (12.6 MB) took 0.2 s to store and 0.1 s to read back compressed
(pglz, the default for `bytea`), on the upload's request and at the start of its import, while
the database had nothing else to do; stored as it comes (`EXTERNAL`: out of line, not
compressed) 0.065 s and 0.03 s (read in binary: `partners.imports.body`). It is kept only until
the import is done. Rows stored before keep their compression.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE imports ALTER COLUMN body SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE imports ALTER COLUMN lane_map SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("ALTER TABLE imports ALTER COLUMN lane_map SET STORAGE EXTENDED")
    op.execute("ALTER TABLE imports ALTER COLUMN body SET STORAGE EXTENDED")
