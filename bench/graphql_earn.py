"""GraphQL `earn` through uvicorn vs the server's ceiling (`{ __typename }`), same token, same run.

    python -m bench.graphql_earn [--seconds 15] [--connections 32] [--workers 1]

Needs `wrk` (Debian: `apt-get install wrk`) as the separate load process. It creates a fresh
database (DATABASE_URL's server, or the embedded one), seeds a partner with an earn rule and
a client, 2,000 members, starts `uvicorn --factory gateway.cli:serving_app`, gets a JWT with
client_credentials, then runs wrk twice: `{ __typename }` (the ceiling: auth + GraphQL, no
database) and `earn` with a unique idempotency key and order per request. It checks the ledger
afterwards (one earn transaction per successful request) and writes bench/out/graphql_earn.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from tests.db import create_test_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"

TYPENAME_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = '{{"query":"{{ __typename }}"}}'
"""

EARN_LUA = """
local cards = {{{cards}}}
local n = 0
local tid = 0
setup = function(thread) tid = tid + 1; thread:set("tid", tid) end
init = function(args) math.randomseed({seed} + (tid or 0)) end
request = function()
  n = n + 1
  local card = cards[math.random(#cards)]
  local key = string.format("{run}-%d-%d", tid, n)
  local body = string.format('{{"query":"mutation($i: EarnInput!) {{ earn(input: $i) {{ __typename ... on EarnSuccess {{ transaction {{ id points }} }} ... on Error {{ code }} }} }}","variables":{{"i":{{"cardNumber":"%s","amount":{{"amount":"1234.50","currency":"RUB"}},"category":"fuel","orderRef":"%s","idempotencyKey":"%s"}}}}}}', card, key, key)
  return wrk.format("POST", "/graphql", {{["Content-Type"]="application/json", ["Authorization"]="Bearer {token}"}}, body)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# `--offers N`: the bench partner's live offers, as a coalition would run them: most could apply
# to a fuel purchase with no state of the member's (multipliers and bonuses, stackable or not,
# some for a tier and up), a few need an activation or count uses (other categories: an earn
# they may apply to runs on the single path), two are coalition-wide (every earn's: their points
# are the operator's, a second lot per earn). (multiplier, bonus, category, stackable, requires
# activation, max uses, min tier)
OFFER_MIX = [
    ("2", None, "fuel", False, False, None, None),
    ("3", None, "fuel", False, False, None, "Gold"),
    ("1.5", None, None, True, False, None, None),
    (None, 50, "fuel", True, False, None, "Silver"),
    (None, 10, None, True, False, None, None),
    ("1.2", None, "fuel", True, False, None, None),
    ("2.5", None, "fuel", False, False, None, "Platinum"),
    (None, 5, "fuel", True, False, None, None),
    ("1.1", None, None, True, False, None, "Silver"),
    (None, 100, "fuel", False, False, None, None),
    ("4", None, "wash", False, False, None, None),
    (None, 20, "wash", True, False, None, None),
    ("2", None, "snacks", True, False, None, None),
    ("1.5", None, "snacks", False, False, None, "Gold"),
    ("5", None, "shop", False, True, None, None),
    (None, 200, "shop", True, True, None, None),
    ("2", None, "cafe", False, False, 3, None),
    (None, 30, "cafe", True, False, 1, None),
]
TIER_MIX = [("Silver", "5000", "1.25"), ("Gold", "20000", "1.5"), ("Platinum", "60000", "2")]


async def seed(
    uri: str, members: int, offers: int = 0, tiers: bool = False
) -> tuple[str, str, list[str]]:
    from core.db import create_engine
    from core.money import Money
    from loyalty import offers as loyalty_offers
    from members import service as members_service
    from members import tiers as member_tiers
    from partners import clients
    from partners import service as partners

    engine = create_engine(uri)
    async with engine.begin() as conn:
        p = await partners.create(conn, name="Bench Fuel", category="fuel", currency="RUB")
        await partners.set_earn_rule(
            conn,
            partner_id=p.id,
            base_rate="0.1",
            category_rates={"fuel": "0.2"},
            hold_days=0,
            actor="bench",
        )
        # No point is issued without an agreement in force.
        await partners.set_agreement(
            conn,
            partner_id=p.id,
            issue_price="0.01",
            redemption_price="0.01",
            effective_from=datetime(2020, 1, 1, tzinfo=UTC),
            currency="RUB",
            actor="bench",
        )
        creds = await clients.create_partner_client(conn, partner_id=p.id, scopes=["points:earn"])
        cards = [(await members_service.create(conn)).card_number for _ in range(members)]
        if tiers:
            await member_tiers.set_tiers(
                conn,
                tiers=[member_tiers.TierSpec(n, Money.parse(t, "RUB"), x) for n, t, x in TIER_MIX],
                currency="RUB",
                actor="bench",
            )
        mix = OFFER_MIX + [("1.5", None, None, True, False, None, None)] * 2  # coalition-wide
        for n, (mult, bonus, category, stackable, activation, uses, tier) in enumerate(
            mix[:offers]
        ):
            await loyalty_offers.create_in(
                conn,
                actor="bench",
                partner_id=None if n >= len(OFFER_MIX) else p.id,
                name=f"offer {n}",
                description="",
                multiplier=mult,
                bonus_points=bonus,
                category=category,
                starts_at=None,
                ends_at=None,
                requires_activation=activation,
                max_uses_per_member=uses,
                stackable=stackable,
                min_tier=tier if tiers else None,
            )
    await engine.dispose()
    return creds.client_id, creds.client_secret, cards


def start_server(uri: str, port: int, workers: int = 1, **settings: str) -> subprocess.Popen[bytes]:
    """`uvicorn gateway.cli:serving_app` on `port` over `uri`, no rate limits in the way
    (`settings`: more environment), once /healthz answers."""
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": uri,
        "PUBLIC_URL": base,
        "RATE_LIMIT_PER_SECOND": "1000000",
        "RATE_LIMIT_BURST": "1000000",
        "DB_POOL_SIZE": "20",
        "COALITION_APP": "bench",
        **settings,
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "gateway.cli:serving_app",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=ROOT,
    )
    for _ in range(600):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    return server


def client_token(base: str, client_id: str, secret: str) -> str:
    """A client-credentials access token."""
    return str(
        httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        ).json()["access_token"]
    )


def parse_wrk(text: str) -> dict[str, float]:
    def latency(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": rps,
        "requests": total,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "p50_ms": latency("50"),
        "p90_ms": latency("90"),
        "p99_ms": latency("99"),
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn workers), from /proc."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wrk(url: str, script: str, seconds: int, connections: int, threads: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            f.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    return parse_wrk(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--offers", type=int, default=0, help="live offers (at most 20: OFFER_MIX)")
    ap.add_argument("--tiers", action="store_true", help="a ladder of three tiers (TIER_MIX)")
    ap.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="record the server with py-spy during the earn run (collapsed stacks to this file)",
    )
    args = ap.parse_args()

    admin, uri = create_test_database("coalition_bench_gql")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = None
    try:
        client_id, secret, cards = asyncio.run(seed(uri, args.members, args.offers, args.tiers))
        server = start_server(uri, port, args.workers)
        token = client_token(base, client_id, secret)
        url = f"{base}/graphql"
        cards_lua = ",".join(f'"{c}"' for c in cards)
        # Warm up both paths (prepared statements, caches, JIT of nothing: CPython).
        wrk(url, TYPENAME_LUA.format(token=token), 3, args.connections, args.threads)
        wrk(
            url,
            EARN_LUA.format(token=token, cards=cards_lua, seed=1, run="warm"),
            3,
            args.connections,
            args.threads,
        )
        with psycopg.connect(uri) as conn:
            before = conn.execute(
                "SELECT count(*) FROM transactions WHERE kind = 'earn'"
            ).fetchone()[0]
        cpu0 = process_cpu_s(server.pid)
        ceiling = wrk(
            url, TYPENAME_LUA.format(token=token), args.seconds, args.connections, args.threads
        )
        cpu1 = process_cpu_s(server.pid)
        ceiling["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000 / max(1, ceiling["requests"])
        ceiling["server_cpu_cores"] = (cpu1 - cpu0) / args.seconds
        spy = None
        if args.py_spy is not None:  # a profile of the earn run, for finding the next cost
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(args.seconds),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--output",
                    str(args.py_spy),
                ],
                stdout=subprocess.DEVNULL,
            )
        earn = wrk(
            url,
            EARN_LUA.format(token=token, cards=cards_lua, seed=2, run="run"),
            args.seconds,
            args.connections,
            args.threads,
        )
        cpu2 = process_cpu_s(server.pid)
        earn["server_cpu_ms_per_request"] = (cpu2 - cpu1) * 1000 / max(1, earn["requests"])
        earn["server_cpu_cores"] = (cpu2 - cpu1) / args.seconds
        if spy is not None:
            spy.wait(timeout=60)
        with psycopg.connect(uri) as conn:
            after = conn.execute(
                "SELECT count(*) FROM transactions WHERE kind = 'earn'"
            ).fetchone()[0]
            unbalanced = conn.execute(
                "SELECT count(*) FROM (SELECT transaction_id FROM entries GROUP BY 1 HAVING sum(amount) <> 0) x"
            ).fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0]
            # What the rules did (`--offers`, `--tiers`): earns with OFFER or TIER lines, and
            # the upgrades committed with them.
            ruled = conn.execute(
                "SELECT count(*) FILTER (WHERE lines @> '[[\"OFFER\"]]'), "
                "count(*) FILTER (WHERE lines @> '[[\"TIER\"]]'), "
                "count(*) FILTER (WHERE lines @> '[[\"OPERATOR\"]]') "
                "FROM earn_breakdowns"
            ).fetchone()
            upgrades = conn.execute("SELECT count(*) FROM member_tier_changes").fetchone()[0]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_database(admin, uri)

    result = {
        "ceiling_typename": ceiling,
        "earn": earn,
        "ratio": round(earn["rps"] / ceiling["rps"], 3),
        "earns_recorded": after - before,
        "offers": args.offers,
        "tiers": args.tiers,
        "earns_with_offer_lines": ruled[0],
        "earns_with_tier_lines": ruled[1],
        "earns_with_operator_lines": ruled[2],
        "tier_upgrades": upgrades,
        "unbalanced_transactions": unbalanced,
        "connections": args.connections,
        "seconds": args.seconds,
        "workers": args.workers,
        "nproc": os.cpu_count(),
        "postgres": version,
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded",
        "command": " ".join(["python -m bench.graphql_earn", *sys.argv[1:]]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "graphql_earn.json").write_text(json.dumps(result, indent=2))
    print(
        f"{'':18}{'req/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}"
        f"{'server cores':>14}{'CPU ms/req':>12}"
    )
    for name, r in (("{ __typename }", ceiling), ("earn", earn)):
        print(
            f"{name:18}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p90_ms']:>10.2f}{r['p99_ms']:>10.2f}"
            f"{r['server_cpu_cores']:>14.2f}{r['server_cpu_ms_per_request']:>12.3f}"
        )
    print(
        f"earn / ceiling = {result['ratio']}  (goal >= 0.5); earns recorded {after - before} "
        f"of {earn['requests']} requests; unbalanced transactions: {unbalanced}"
    )
    if args.offers or args.tiers:
        print(
            f"{args.offers} offers, tiers {'on' if args.tiers else 'off'}: earns with OFFER lines "
            f"{ruled[0]} (the operator's {ruled[2]}), with a TIER line {ruled[1]}; tier upgrades "
            f"{upgrades}"
        )


if __name__ == "__main__":
    main()
