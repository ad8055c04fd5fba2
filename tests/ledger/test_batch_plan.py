"""The group-commit statement's plan on a database never analysed (a new deployment, the
benchmark's fresh database): each earn's duplicate-order check is one probe of
`uq_transactions_earn_order`, not a scan of the partner's earns through another index whose
predicate the check also implies (migration 0017; it cost 2.3 ms per earn at 3,400 earns)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ledger.batch import _EARN_BATCH
from tests.db import create_test_database, drop_database


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_batch_plan")
    yield uri
    drop_database(admin, uri)


def scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if node.get("Relation Name") == "transactions" and node["Node Type"] != "ModifyTable":
        yield node
    for child in node.get("Plans", []):
        yield from scans(child)


def test_the_order_check_probes_the_unique_order_index_in_the_generic_plan(db_uri: str) -> None:
    with psycopg.connect(db_uri, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        sql = _EARN_BATCH.replace("%(rows)s", "$1").replace("%(common)s", "$2")
        conn.execute(f"PREPARE earn_batch(jsonb, jsonb, text) AS {sql.replace('%(iso)s', '$3')}")
        row = conn.execute(
            "EXPLAIN (FORMAT JSON) EXECUTE earn_batch('[]', '{}', 'YYYY')"
        ).fetchone()
    assert row is not None
    found = list(scans(row[0][0]["Plan"]))
    assert found, "the statement no longer reads transactions: update this test"
    for node in found:
        assert node.get("Index Name") == "uq_transactions_earn_order", node
        assert "partner_id" in node["Index Cond"] and "ref" in node["Index Cond"], node
