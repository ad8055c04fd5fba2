"""Settlement at scale: run, close and verify a month holding N ledger transactions.

    python -m bench.settlement [--sizes 100000,300000,1000000] [--partners 50] [--database-url URL]

For each size a fresh, migrated database (`DATABASE_URL` / `--database-url`: on that server;
else the embedded PostgreSQL) is filled by set-based SQL written straight into the ledger's
tables, respecting their constraints and triggers: every statement inserts whole transactions
(the entries of one transaction are always written by the same INSERT, so the trigger checks
that each sums to zero and moves the member balances; wallets never go below zero); nothing is
updated or deleted (transactions, entries and lot postings are insert-only).

The month [2024-03-01, 2024-04-01) holds N transactions: 60% earns spread over the month by
50 partners (every partner's agreement changes on March 16, so half the events use each
price), 30% captures at another partner (half of the earn's points), 5% returns of half a
capture, 5% reversals of a quarter of an earn, and a daily expiry run sweeping lots earned in
February. Members: N / 20.

Then, timed, through the service functions the operator's API uses:
  run     settlement.run for the month (open: priced, aggregated, stored)
  rerun   the same again (idempotent; the same work)
  close   settlement.expire_and_close (expiry up to the end, last run, assignment of the N
          transactions, liability snapshot, seal)
  verify  settlement.verify (recomputes the seal and the statements from the assignments)
and checks the statements against plain SQL sums over the generated rows.

Prints a table, writes bench/out/settlement.json; the figures and commands go in
bench/RESULTS.md. Not a test: nothing here asserts beyond the sanity check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 4, 1, tzinfo=UTC)
GOAL_SECONDS_1M = 30.0

# The generator. :n is the target number of transactions in the month, :p partners, :m members.
GENERATE = [
    # Partners, their accounts, and two agreements each (recorded before any event).
    """
    CREATE TEMP TABLE g_partner AS
    SELECT i, gen_random_uuid() AS id FROM generate_series(0, :p - 1) i;
    INSERT INTO partners (id, name, category, currency)
    SELECT id, 'Partner ' || i, 'retail', 'RUB' FROM g_partner;
    INSERT INTO accounts (kind, owner_id) SELECT k, id FROM g_partner, (VALUES ('issuance'), ('redemption')) v(k);
    INSERT INTO agreements (id, partner_id, issue_price, redemption_price, currency, effective_from, recorded_at, actor)
    SELECT gen_random_uuid(), id, 0.01 + i * 0.0001234, 0.008 + i * 0.0000987, 'RUB',
           '2024-01-01'::timestamptz, '2024-01-01'::timestamptz, 'bench' FROM g_partner
    UNION ALL
    SELECT gen_random_uuid(), id, 0.012 + i * 0.0001111, 0.009 + i * 0.0000777, 'RUB',
           '2024-03-16'::timestamptz, '2024-01-02'::timestamptz, 'bench' FROM g_partner;
    CREATE TEMP TABLE g_pacc AS
    SELECT g.i, g.id, (SELECT a.id FROM accounts a WHERE a.owner_id = g.id AND a.kind = 'issuance') AS iss,
           (SELECT a.id FROM accounts a WHERE a.owner_id = g.id AND a.kind = 'redemption') AS red
    FROM g_partner g;
    """,
    # Members with wallet and debt accounts.
    """
    CREATE TEMP TABLE g_member AS
    SELECT i, gen_random_uuid() AS id FROM generate_series(0, :m - 1) i;
    INSERT INTO members (id, card_number) SELECT id, lpad((1000000000000000 + i)::text, 16, '0') FROM g_member;
    INSERT INTO accounts (kind, owner_id, balance)
    SELECT k, id, 0 FROM g_member, (VALUES ('wallet'), ('debt')) v(k);
    CREATE TEMP TABLE g_macc AS
    SELECT g.i, g.id, a.id AS wallet FROM g_member g JOIN accounts a ON a.owner_id = g.id AND a.kind = 'wallet';
    CREATE INDEX ON g_macc (i);
    """,
    # Earns: 60% of the month's transactions, plus 1% in February whose lots expire in March.
    # Transaction ids are UUIDv7 like the ledger's (core.ids): time-ordered by creation.
    """
    CREATE FUNCTION pg_temp.uuid7(at timestamptz, tag text) RETURNS uuid
    LANGUAGE sql IMMUTABLE AS $$
      SELECT CAST(lpad(to_hex(CAST(extract(epoch FROM at) * 1000 AS bigint)), 12, '0') || '7'
                  || substr(md5(tag), 1, 3) || '8' || substr(md5(tag), 4, 15) AS uuid)
    $$;
    CREATE TEMP TABLE g_earn AS
    SELECT i, pg_temp.uuid7(at, 'e' || i) AS tx, p, m, pts, at, feb FROM (
        SELECT i, (i * 7) % :p AS p, (i * 7919) % :m AS m, 100 + (i * 37) % 900 AS pts,
               CASE WHEN i < :feb THEN '2024-02-01'::timestamptz + (i * interval '1 second' * 2419200 / :feb)
                    ELSE '2024-03-01'::timestamptz + ((i - :feb) * interval '1 second' * 2588400 / :earns) END AS at,
               i < :feb AS feb
        FROM generate_series(CAST(0 AS bigint), :feb + :earns - 1) i) g;
    CREATE TEMP TABLE g_cap AS  -- captures: every other March earn, half its points, 60 s later
    SELECT e.i, pg_temp.uuid7(e.at + interval '60 seconds', 'c' || e.i) AS tx,
           (e.p + 1 + e.i % (:p - 1)) % :p AS r, e.pts / 2 AS pts, e.at + interval '60 seconds' AS at
    FROM g_earn e WHERE NOT e.feb AND e.i % 2 = 0 LIMIT :caps;
    CREATE TEMP TABLE g_ret AS  -- returns: half of a capture, a minute later
    SELECT c.i, pg_temp.uuid7(c.at + interval '60 seconds', 'r' || c.i) AS tx, c.tx AS cap_tx, c.r,
           c.pts / 2 AS pts, c.at + interval '60 seconds' AS at
    FROM g_cap c WHERE c.i % 12 = 0 LIMIT :rets;
    CREATE TEMP TABLE g_rev AS  -- reversals: a quarter of an earn (odd earns: not captured)
    SELECT e.i, pg_temp.uuid7(e.at + interval '120 seconds', 'v' || e.i) AS tx, e.tx AS earn_tx, e.p,
           e.pts / 4 AS pts, e.at + interval '120 seconds' AS at
    FROM g_earn e WHERE NOT e.feb AND e.i % 2 = 1 LIMIT :revs;
    CREATE TEMP TABLE g_exp AS  -- one expiry run a day, sweeping the February lots due that day
    SELECT d, pg_temp.uuid7(at, 'x' || d) AS tx, at FROM (
        SELECT d, '2024-03-01'::timestamptz + d * interval '1 day' + interval '23 hours' AS at
        FROM generate_series(0, 30) d) x;
    """,
    # Transactions: one INSERT for all of them.
    """
    INSERT INTO transactions (id, kind, points, partner_id, member_id, reverses_id, ref,
                              effective_at, recorded_at, actor)
    SELECT e.tx, 'earn', e.pts, gp.id, gm.id, NULL::uuid, 'o' || e.i, e.at, e.at + interval '1 second', 'bench'
    FROM g_earn e JOIN g_partner gp ON gp.i = e.p JOIN g_member gm ON gm.i = e.m
    UNION ALL
    SELECT c.tx, 'capture', c.pts, gp.id, gm.id, NULL, 'c' || c.i, c.at, c.at + interval '1 second', 'bench'
    FROM g_cap c JOIN g_earn e ON e.i = c.i JOIN g_partner gp ON gp.i = c.r JOIN g_member gm ON gm.i = e.m
    UNION ALL
    SELECT r.tx, 'return', r.pts, gp.id, gm.id, r.cap_tx, 'c' || r.i, r.at, r.at + interval '1 second', 'bench'
    FROM g_ret r JOIN g_earn e ON e.i = r.i JOIN g_partner gp ON gp.i = r.r JOIN g_member gm ON gm.i = e.m
    UNION ALL
    SELECT v.tx, 'reversal', v.pts, gp.id, gm.id, v.earn_tx, 'o' || v.i, v.at, v.at + interval '1 second', 'bench'
    FROM g_rev v JOIN g_earn e ON e.i = v.i JOIN g_partner gp ON gp.i = v.p JOIN g_member gm ON gm.i = e.m
    UNION ALL
    SELECT x.tx, 'expiry', (SELECT sum(pts) FROM g_earn e WHERE e.feb AND e.i % 31 = x.d), NULL, NULL, NULL,
           NULL, x.at, x.at + interval '1 second', 'bench'
    FROM g_exp x WHERE EXISTS (SELECT 1 FROM g_earn e WHERE e.feb AND e.i % 31 = x.d);
    """,
    # Entries: one INSERT; each transaction's legs sum to zero, wallets end >= 0.
    """
    INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
    SELECT e.tx, pa.iss, -e.pts, e.at, 'bench' FROM g_earn e JOIN g_pacc pa ON pa.i = e.p
    UNION ALL SELECT e.tx, ma.wallet, e.pts, e.at, 'bench' FROM g_earn e JOIN g_macc ma ON ma.i = e.m
    UNION ALL SELECT c.tx, ma.wallet, -c.pts, c.at, 'bench' FROM g_cap c JOIN g_earn e ON e.i = c.i JOIN g_macc ma ON ma.i = e.m
    UNION ALL SELECT c.tx, pa.red, c.pts, c.at, 'bench' FROM g_cap c JOIN g_pacc pa ON pa.i = c.r
    UNION ALL SELECT r.tx, pa.red, -r.pts, r.at, 'bench' FROM g_ret r JOIN g_pacc pa ON pa.i = r.r
    UNION ALL SELECT r.tx, ma.wallet, r.pts, r.at, 'bench' FROM g_ret r JOIN g_earn e ON e.i = r.i JOIN g_macc ma ON ma.i = e.m
    UNION ALL SELECT v.tx, pa.iss, v.pts, v.at, 'bench' FROM g_rev v JOIN g_pacc pa ON pa.i = v.p
    UNION ALL SELECT v.tx, ma.wallet, -v.pts, v.at, 'bench' FROM g_rev v JOIN g_earn e ON e.i = v.i JOIN g_macc ma ON ma.i = e.m
    UNION ALL SELECT x.tx, ma.wallet, -e.pts, x.at, 'bench'
        FROM g_exp x JOIN g_earn e ON e.feb AND e.i % 31 = x.d JOIN g_macc ma ON ma.i = e.m
    UNION ALL SELECT x.tx, (SELECT id FROM accounts WHERE kind = 'breakage'), sum(e.pts), x.at, 'bench'
        FROM g_exp x JOIN g_earn e ON e.feb AND e.i % 31 = x.d GROUP BY x.tx, x.at;
    """,
    # Lots with what is left in them after all of the above; then their postings.
    """
    INSERT INTO lots (member_id, wallet_id, issuer_id, earn_tx_id, points, remaining, reversed,
                      earned_at, available_at, expires_at, actor)
    SELECT gm.id, ma.wallet, gp.id, e.tx, e.pts,
           CASE WHEN e.feb THEN 0
                ELSE e.pts - coalesce(c.pts, 0) + coalesce(r.pts, 0) - coalesce(v.pts, 0) END,
           coalesce(v.pts, 0), e.at, e.at,
           CASE WHEN e.feb THEN '2024-03-01'::timestamptz + (e.i % 31) * interval '1 day' + interval '1 hour'
                ELSE e.at + interval '36 months' END,
           'bench'
    FROM g_earn e JOIN g_partner gp ON gp.i = e.p JOIN g_member gm ON gm.i = e.m
    JOIN g_macc ma ON ma.i = e.m
    LEFT JOIN g_cap c ON c.i = e.i LEFT JOIN g_ret r ON r.i = e.i LEFT JOIN g_rev v ON v.i = e.i;
    CREATE TEMP TABLE g_lot AS SELECT l.id, l.earn_tx_id FROM lots l;
    CREATE INDEX ON g_lot (earn_tx_id);
    INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
    SELECT l.id, c.tx, 'capture', -c.pts, c.at, 'bench' FROM g_cap c JOIN g_earn e ON e.i = c.i JOIN g_lot l ON l.earn_tx_id = e.tx
    UNION ALL SELECT l.id, r.tx, 'return', r.pts, r.at, 'bench' FROM g_ret r JOIN g_earn e ON e.i = r.i JOIN g_lot l ON l.earn_tx_id = e.tx
    UNION ALL SELECT l.id, v.tx, 'reversal', -v.pts, v.at, 'bench' FROM g_rev v JOIN g_lot l ON l.earn_tx_id = v.earn_tx
    UNION ALL SELECT l.id, x.tx, 'expiry', -e.pts, x.at, 'bench'
        FROM g_exp x JOIN g_earn e ON e.feb AND e.i % 31 = x.d JOIN g_lot l ON l.earn_tx_id = e.tx;
    """,
]

CHECK = """
SELECT p.id AS partner_id,
       coalesce((SELECT sum(points) FROM transactions t WHERE t.partner_id = p.id AND kind = 'earn'
                 AND effective_at >= :s AND effective_at < :e), 0) AS issued,
       coalesce((SELECT sum(points) FROM transactions t WHERE t.partner_id = p.id AND kind = 'capture'
                 AND effective_at >= :s AND effective_at < :e), 0) AS redeemed
FROM partners p
"""


def _admin_uri(url: str | None) -> str:
    from core.db import libpq_uri, start_embedded

    if url:
        return libpq_uri(url)
    return start_embedded(ROOT / ".data").get_uri("postgres")


def _with_db(uri: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(uri).set(database=name).render_as_string(hide_password=False)


def generate(uri: str, n: int, partners: int) -> dict[str, Any]:
    earns, caps, rets = round(n * 0.6), round(n * 0.3), round(n * 0.05)
    revs = n - earns - caps - rets - 31
    params = {
        "n": n,
        "p": partners,
        "m": max(1000, n // 20),
        "earns": earns,
        "caps": caps,
        "rets": rets,
        "revs": revs,
        "feb": max(31, n // 100),
    }
    t0 = time.perf_counter()
    with psycopg.connect(uri) as conn:
        names = "|".join(sorted(params, key=len, reverse=True))
        for block in GENERATE:
            # Literal values in place of :name (a psycopg script without parameters).
            sql = re.sub(rf"(?<![:\w]):({names})\b", lambda mt: str(params[mt.group(1)]), block)
            conn.execute(sql)
        conn.commit()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        in_month = conn.execute(
            "SELECT count(*) FROM transactions WHERE effective_at >= %s AND effective_at < %s",
            (START, END),
        ).fetchone()[0]
        total = conn.execute("SELECT count(*) FROM transactions").fetchone()[0]
    return {
        "generate_s": round(time.perf_counter() - t0, 1),
        "transactions_in_period": in_month,
        "transactions_total": total,
        **params,
    }


async def measure(uri: str, *, profile: bool = False) -> dict[str, Any]:
    from sqlalchemy import text

    from core.db import create_engine
    from settlement import service as settlement

    engine = create_engine(uri, pool_size=2, max_overflow=2)
    out: dict[str, Any] = {}
    if profile:
        from sqlalchemy import event

        timings: list[tuple[float, str]] = []

        def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            conn.info["t0"] = time.perf_counter()

        def after(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            timings.append(
                (time.perf_counter() - conn.info["t0"], " ".join(statement.split())[:110])
            )

        event.listen(engine.sync_engine, "before_cursor_execute", before)
        event.listen(engine.sync_engine, "after_cursor_execute", after)
    try:
        t = time.perf_counter()
        async with engine.begin() as conn:
            period = await settlement.run(
                conn, currency="RUB", period_start=START, period_end=END, actor="bench"
            )
        out["run_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        async with engine.begin() as conn:
            again = await settlement.run(
                conn, currency="RUB", period_start=START, period_end=END, actor="bench"
            )
        out["rerun_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        closed = await settlement.expire_and_close(engine, period_id=period.id, actor="bench")
        out["close_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        async with engine.connect() as conn:
            check = await settlement.verify(conn, period_id=period.id)
        out["verify_s"] = round(time.perf_counter() - t, 2)
        async with engine.connect() as conn:
            stmts = {
                s.partner_id: s for s in await settlement.statements(conn, period_id=period.id)
            }
            cells = await settlement.matrix(conn, period_id=period.id)
            sums = (await conn.execute(text(CHECK), {"s": START, "e": END})).all()
        ok = (
            check.ok
            and again.operator_margin == period.operator_margin
            and all(
                stmts[r.partner_id].issued_points == r.issued
                and stmts[r.partner_id].redeemed_points == r.redeemed
                for r in sums
            )
            and sum(s.net.amount for s in stmts.values()) + closed.operator_margin.amount == 0
            and sum(c.points for c in cells)
            == sum(s.redeemed_points - s.returned_points for s in stmts.values())
        )
        out.update(
            settled_transactions=closed.transaction_count,
            statements=len(stmts),
            matrix_cells=len(cells),
            breakage_points=closed.breakage_points,
            operator_margin=str(closed.operator_margin.amount),
            seal=closed.content_hash,
            sanity_check=ok,
        )
    finally:
        await engine.dispose()
    if profile:
        for secs, stmt in sorted(timings, reverse=True)[:25]:
            print(f"  {secs:8.3f} s  {stmt}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--partners", type=int, default=50)
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    ap.add_argument("--keep", action="store_true", help="Keep the databases (default: drop them).")
    ap.add_argument("--profile", action="store_true", help="Print the slowest SQL statements.")
    ap.add_argument("--out", default=str(OUT / "settlement.json"), help="Where to write the JSON.")
    args = ap.parse_args()

    from migrations.runner import upgrade

    admin = _admin_uri(args.database_url)
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        name = f"coalition_bench_settle_{n}_{secrets.token_hex(3)}"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
            server = c.execute("SHOW server_version").fetchone()[0]
            conf = {
                k: c.execute(f"SHOW {k}").fetchone()[0]
                for k in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather")
            }
        uri = _with_db(admin, name)
        try:
            upgrade(uri)
            gen = generate(uri, n, args.partners)
            print(
                f"generated {gen['transactions_in_period']:,} transactions in the month "
                f"({gen['transactions_total']:,} in all) in {gen['generate_s']} s",
                flush=True,
            )
            res = {
                "size": n,
                "server": server,
                **conf,
                **gen,
                **asyncio.run(measure(uri, profile=args.profile)),
            }
            results.append(res)
            print(json.dumps(res), flush=True)
        finally:
            if not args.keep:
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print()
    print(
        f"{'transactions':>13} {'run s':>7} {'rerun s':>8} {'close s':>8} {'verify s':>9} {'close µs/tx':>12} {'ok':>4}"
    )
    for r in results:
        per = r["close_s"] / r["transactions_in_period"] * 1e6
        print(
            f"{r['transactions_in_period']:>13,} {r['run_s']:>7} {r['rerun_s']:>8} {r['close_s']:>8} "
            f"{r['verify_s']:>9} {per:>12.1f} {r['sanity_check']!s:>4}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "goal_seconds_1m": GOAL_SECONDS_1M,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
