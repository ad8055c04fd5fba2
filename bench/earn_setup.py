"""The database and the machine `bench.earn` measures: a seeded database, server settings,
CPU accounting."""

from __future__ import annotations

import asyncio
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / tick, total / tick


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
    """Members, partners, the lookup tables pgbench draws from, a history of earns, ANALYZE."""
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
    """`n` earns through the group commit, spread over random members and partners."""
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
    """The server settings that decide durability and capacity."""
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


def machine(mode: str, facts: dict[str, str], pgbench: str, loop_kind: str) -> dict[str, Any]:
    """The machine, client libraries and server the figures were taken on."""
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
