"""The migrated template of a process that is not a pytest session (a benchmark) is dropped
when that process exits: runs of the benchmarks leave no databases behind."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from tests.db import ROOT, admin_uri

SCRIPT = """
from tests import db
admin, uri = db.create_test_database("coalition_exit")
db.drop_database(admin, uri)
print(db._template[1].rsplit("/", 1)[1])
"""


def test_a_process_drops_its_template_when_it_exits() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    )
    name = out.stdout.strip().split("?")[0]
    assert name.startswith("coalition_tpl_")
    with psycopg.connect(admin_uri(), autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name])
        assert left.fetchone() == (0,)
