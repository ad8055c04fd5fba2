"""ledger: the entries' and lots' existence checks probe an index per row, whatever the
planner's statistics say

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-22 08:00:00.000000

The statement-level checks of `entries` (0006, 0026) and `lots` (0026) ask, for the rows a
statement wrote, whether the transactions, accounts and lots they name exist:
`NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = n.id)`. The planner turned each into an
anti-join, and chose its shape by the tables' statistics. Until the tables were analyzed
again (autovacuum lags a bulk write; it may be off), it hashed the whole table: every
statement writing earns (a batch file's chunk, a group commit's batch) read every row of
`transactions` twice (`tests/ledger/test_checks_probe.py` counts the scans), a cost that grew
with the ledger, not with the statement. With fresh statistics it probed the primary key
instead, but only while that looked cheaper.

`OFFSET 0` keeps each check a subquery run per row checked: one primary-key probe each, as the
group commit's statement does for its own lookups (`ledger.batch`). Measured with
`python -m bench.imports` on a ledger never analyzed: the database's CPU per line 48-65 us
before, 43-44 after, as with fresh statistics (bench/RESULTS.md).

The functions are edited where they stand (`pg_get_functiondef`): only the probes change.
"""

import re
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each function and how many existence probes it holds.
_FUNCTIONS = {"ledger_entries_after_insert": 2, "ledger_lots_after_insert": 4}
_PROBE = re.compile(r"(NOT EXISTS \(SELECT 1 FROM \w+ \w+ WHERE \w+\.id = n\.\w+)\)")
_PROBED = re.compile(r"(NOT EXISTS \(SELECT 1 FROM \w+ \w+ WHERE \w+\.id = n\.\w+) OFFSET 0\)")


def _edit(pattern: re.Pattern[str], replacement: str) -> None:
    conn = op.get_bind()
    for name, probes in _FUNCTIONS.items():
        source = conn.execute(
            text("SELECT pg_get_functiondef(CAST(:name AS regproc))"), {"name": name}
        ).scalar_one()
        edited, found = pattern.subn(replacement, source)
        if found != probes:
            raise RuntimeError(f"{name}: {found} existence probes found, {probes} expected")
        op.execute(edited)


def upgrade() -> None:
    _edit(_PROBE, r"\1 OFFSET 0)")


def downgrade() -> None:
    _edit(_PROBED, r"\1)")
