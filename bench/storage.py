"""Storage per ledger transaction, as the gateway writes it (for docs/SCALING.md).

    python -m bench.storage [--seconds 20] [--connections 32] [--offers 0] [--tiers]

Creates a fresh database (DATABASE_URL's server, or the embedded one), seeds a partner and
2,000 members (`bench.graphql_earn.seed`), records earns through GraphQL under wrk for
`--seconds` (each with its idempotency key, order, lot, entries and breakdown lines), then
VACUUM ANALYZE and measures every table with its indexes and TOAST
(`pg_total_relation_size`). Prints bytes per earn transaction by table and in all; writes
bench/out/storage.json. The seed's own rows (members, cards, wallets) are measured before the
load and taken out. WAL per earn is the server's WAL position before and after the load:
other databases' writes on the same server count too, so run it on a quiet server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import psycopg

from bench.graphql_earn import EARN_LUA, client_token, free_port, seed, start_server, wrk
from tests.db import create_test_database, drop_database

OUT = Path(__file__).resolve().parent / "out"
SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
"""


def sizes(uri: str) -> dict[str, int]:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        return {name: int(size) for name, size in conn.execute(SIZES).fetchall()}


def wal_lsn(uri: str) -> int:
    """The server's current WAL position, in bytes."""
    with psycopg.connect(uri, autocommit=True) as conn:
        return int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--offers", type=int, default=0)
    ap.add_argument("--tiers", action="store_true")
    args = ap.parse_args()

    admin, uri = create_test_database("coalition_bench_storage")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = None
    try:
        client_id, secret, cards = asyncio.run(seed(uri, args.members, args.offers, args.tiers))
        before = sizes(uri)
        wal_before = wal_lsn(uri)
        server = start_server(uri, port, WEBHOOK_WORKERS="0", IMPORT_WORKERS="0")
        token = client_token(base, client_id, secret)
        cards_lua = ",".join(f'"{c}"' for c in cards)
        wrk(
            f"{base}/graphql",
            EARN_LUA.format(token=token, cards=cards_lua, seed=3, run="storage"),
            args.seconds,
            args.connections,
            1,
        )
        server.terminate()
        server.wait(timeout=30)
        server = None
        wal_bytes = wal_lsn(uri) - wal_before  # the whole server's WAL: run it alone
        after = sizes(uri)
        with psycopg.connect(uri) as conn:
            earns = int(
                conn.execute("SELECT count(*) FROM transactions WHERE kind = 'earn'").fetchone()[0]
            )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_database(admin, uri)

    grown = {t: after[t] - before.get(t, 0) for t in after}
    per_earn = {t: round(b / earns) for t, b in sorted(grown.items(), key=lambda kv: -kv[1]) if b}
    result = {
        "earns": earns,
        "bytes_per_earn": round(sum(grown.values()) / earns),
        "bytes_per_earn_by_table": per_earn,
        "wal_bytes_per_earn": round(wal_bytes / earns),
        "offers": args.offers,
        "tiers": args.tiers,
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded",
        "command": " ".join(["python -m bench.storage", *sys.argv[1:]]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "storage.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
