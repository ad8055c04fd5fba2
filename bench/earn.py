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
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench.earn_counts import count_per_batch, count_per_earn
from bench.earn_pgbench import PGBENCH_TABLES, find_pgbench, prepare_pgbench, run_pgbench
from bench.earn_service import run_service
from bench.earn_setup import create_database, machine, seed, server_facts
from bench.earn_verdicts import print_summary, summarize, verdicts

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"

GOAL_VS_PGBENCH = 0.7
GOAL_HOT_VS_SPREAD = 0.8


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 if any earn failed."""
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
