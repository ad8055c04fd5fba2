"""Batch files vs GraphQL `earn`, same server, same run.

    python -m bench.imports [--lines 200000] [--seconds 15] [--connections 32]

Creates a fresh database (DATABASE_URL's server, or the embedded one), seeds a partner with an
earn rule, an agreement and a client, and 2,000 members (`bench.graphql_earn.seed`), starts
`uvicorn --factory gateway.cli:serving_app` (the importer of `serve` included), then:

1. GraphQL `earn` under wrk (unique key and order per request) for `--seconds`: earns/s.
2. `POST /imports` of a CSV of `--lines` earn lines, timed from the upload's 202 until the
   import's `finished_at` (its last lines recorded, just before their commit; the database's
   clock, on this machine), `GET /imports/{id}` polled every 0.25 s meanwhile for the
   timeline (`observed_seconds`: until a poll saw it done): lines/s.

Checks that every line was applied once (one earn per line) and that no transaction is
unbalanced; writes bench/out/imports.json. Goals: ≥ 20,000 lines/s and ≥ 20 x the GraphQL
earn rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import psycopg

from bench.graphql_earn import EARN_LUA, client_token, free_port, seed, start_server, wrk
from bench.speed import SpeedProbe
from tests.db import create_test_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
# The server's settings a bulk write depends on (recorded with the figures)
SETTINGS = (
    "shared_buffers",
    "wal_buffers",
    "max_wal_size",
    "min_wal_size",
    "checkpoint_timeout",
    "autovacuum",
)
HEADER = "kind,order_ref,card_number,amount,currency,category,idempotency_key\n"
POLL_S = 0.25  # between two polls of the import's status


def csv_file(cards: list[str], lines: int) -> bytes:
    rows = (
        f"earn,imp-{i},{cards[i % len(cards)]},{100 + i % 97}.50,RUB,fuel,imp-key-{i}\n"
        for i in range(lines)
    )
    return (HEADER + "".join(rows)).encode()


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process so far, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_jiffies() -> tuple[int, int]:
    """The whole machine's idle (idle + iowait) and total jiffies so far (/proc/stat)."""
    with open("/proc/stat") as f:
        cells = [int(x) for x in f.readline().split()[1:]]
    return cells[3] + cells[4], sum(cells)


def _idle(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The fraction of the machine idle between two `_machine_jiffies` readings."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total else 0.0


def _cpu(server_pid: int, uri: str) -> tuple[float, float]:
    """CPU seconds so far of the server process and of the backends connected to the bench's
    database (those a pool keeps open: the importer's among them)."""
    with psycopg.connect(uri) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
        ]
    return _proc_cpu(server_pid), sum(_proc_cpu(p) for p in pids)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--members", type=int, default=2000)
    args = ap.parse_args()

    admin, uri = create_test_database("coalition_bench_imports")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = None
    probe = SpeedProbe()
    try:
        client_id, secret, cards = asyncio.run(seed(uri, args.members))
        server = start_server(uri, port, RATE_LIMIT_SETTLEMENT="1000000/minute", IMPORT_WORKERS="1")
        token = client_token(base, client_id, secret)
        probe.__enter__()
        time.sleep(2)  # the machine idle, the server up: the probe's reference
        probe.phase("warm-up")
        cards_lua = ",".join(f'"{c}"' for c in cards)
        url = f"{base}/graphql"
        wrk(
            url,
            EARN_LUA.format(token=token, cards=cards_lua, seed=1, run="warm"),
            3,
            args.connections,
            1,
        )
        probe.phase("graphql")
        earn = wrk(
            url,
            EARN_LUA.format(token=token, cards=cards_lua, seed=2, run="run"),
            args.seconds,
            args.connections,
            1,
        )
        probe.phase("between")
        body = csv_file(cards, args.lines)
        auth = {"Authorization": f"Bearer {token}"}
        with psycopg.connect(uri) as conn:
            before = conn.execute(
                "SELECT count(*) FROM transactions WHERE kind = 'earn'"
            ).fetchone()[0]
        r = httpx.post(
            f"{base}/imports",
            content=body,
            headers={**auth, "Content-Type": "text/csv"},
            timeout=300,
        )
        assert r.status_code == 202, r.text
        started, started_at = time.perf_counter(), time.time()
        probe.phase("import")
        cpu_before = _cpu(server.pid, uri)
        idle_start = idle_last = _machine_jiffies()
        timeline: list[list[float]] = []  # [seconds, lines done, machine idle since the last]
        import_id = r.json()["id"]
        # One client for the polls: a new one per poll (TLS context, pool) cost the bench's own
        # process about 5 ms of CPU each, 10 % of a core taken from the server it measures. A
        # poll every 0.25 s, not every 50 ms (each one the server's CPU too: 1 % of its samples
        # under py-spy); the end is read from the import's `finished_at`, not from the poll.
        with httpx.Client(headers=auth, timeout=60) as poller:
            while True:
                status = poller.get(f"{base}/imports/{import_id}").json()
                now = _machine_jiffies()
                timeline.append(
                    [
                        round(time.perf_counter() - started, 2),
                        status["applied"] + status["replayed"] + status["rejected"],
                        _idle(idle_last, now),
                    ]
                )
                idle_last = now
                if status["status"] == "done":
                    observed = time.perf_counter() - started
                    break
                time.sleep(POLL_S)
        idle = _idle(idle_start, _machine_jiffies())
        probe.phase("after")
        cpu_after = _cpu(server.pid, uri)
        with psycopg.connect(uri) as conn:
            after = conn.execute(
                "SELECT count(*) FROM transactions WHERE kind = 'earn'"
            ).fetchone()[0]
            unbalanced = conn.execute(
                "SELECT count(*) FROM (SELECT transaction_id FROM entries GROUP BY 1 "
                "HAVING sum(amount) <> 0) x"
            ).fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0]
            finished_at = conn.execute(
                "SELECT extract(epoch FROM finished_at) FROM imports WHERE id = %s", (import_id,)
            ).fetchone()[0]
            elapsed = float(finished_at) - started_at
            settings = dict(
                conn.execute(
                    "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                    (list(SETTINGS),),
                ).fetchall()
            )
    finally:
        probe.__exit__()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_database(admin, uri)

    lines_per_s = args.lines / elapsed
    result = {
        "graphql_earn_rps": round(earn["rps"], 1),
        "import_lines": args.lines,
        "import_seconds": round(elapsed, 2),
        "observed_seconds": round(observed, 2),
        "import_lines_per_s": round(lines_per_s),
        "ratio": round(lines_per_s / earn["rps"], 2),
        # CPU per line, load-independent: the server process (Python) and the database's
        # backends of this database (PostgreSQL), from /proc (the server runs on this machine).
        "server_cpu_us_per_line": round((cpu_after[0] - cpu_before[0]) / args.lines * 1e6, 1),
        "database_cpu_us_per_line": round((cpu_after[1] - cpu_before[1]) / args.lines * 1e6, 1),
        # The whole machine's idle share during the import (both cores; /proc/stat), and per
        # quarter second with the lines done: where the machine waited.
        "machine_idle": idle,
        "timeline": timeline,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        # The machine's speed by phase (`bench.speed`): CPU ms of a fixed piece of work, idle
        # ("start") and under each load; a phase run on a slower machine shows higher figures.
        "speed_probe_ms": {
            k: v for k, v in probe.summary().items() if k in ("start", "graphql", "import")
        },
        "applied": status["applied"],
        "replayed": status["replayed"],
        "rejected": status["rejected"],
        "earns_recorded_by_import": after - before,
        "unbalanced_transactions": unbalanced,
        "nproc": os.cpu_count(),
        "postgres": version,
        "postgres_settings": settings,
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded",
        "command": " ".join(["python -m bench.imports", *sys.argv[1:]]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "imports.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
