"""Faults and overload under load: nothing acknowledged is lost, nothing is applied twice.

    python -m bench.faults kill-db      [--seconds 30] [--clients 32]
    python -m bench.faults kill-worker  [--seconds 30] [--clients 32] [--workers 2]
    python -m bench.faults overload     [--seconds 20] [--factor 2]

Each scenario creates a fresh database, seeds a partner (earn and redeem scopes) and 500
members, starts the gateway (`uvicorn --factory gateway.cli:serving_app`, as `serve` runs
it), gives every member points, then runs `--clients` client loops for `--seconds`: each loop
earns (70 %) or redeems (30 %: authorize with a fresh redemption code, then capture), and
retries every request with the same idempotency key until it gets a definitive answer
(success or a typed error), as a partner's till would: after a 503, a connection error, or an
UNAVAILABLE / masked error, with backoff, for at most 60 s. Then it checks the database:

- every acknowledged earn is in the ledger once, with the acknowledged id and points;
- every acknowledged capture is in the ledger once, its hold captured;
- no earn, hold or capture is there twice (per idempotency key / order), acknowledged or not;
- every ledger invariant holds (`tests/ledger/invariants.py`: double entry, balances, lots).

The faults:

- `kill-db`: the PostgreSQL server (an embedded one of its own, in a temporary directory) is
  SIGKILLed a third of the way in and restarted (crash recovery) after 2 s, while the load runs.
- `kill-worker`: the gateway runs `--workers` processes; one is SIGKILLed a third of the way in
  (uvicorn's supervisor starts another), while the load runs.
- `overload`: first the capacity (earns/s with 32 closed-loop clients), then an open-loop load
  at `--factor` times that rate: the answers to what was accepted (p50/p99 latency), how many
  were refused (503 OVERLOADED) and how fast, then the same light load as at the start to show
  it recovered. Every earn is checked as above.

Writes bench/out/faults-<scenario>.json; the figures go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import psycopg

from bench.graphql_earn import client_token, free_port, seed, start_server
from tests.db import create_test_database, drop_database

OUT = Path(__file__).resolve().parent / "out"

EARN = (
    "mutation($i: EarnInput!) { earn(input: $i) { __typename "
    "... on EarnSuccess { transaction { id points } } ... on Error { code } } }"
)
AUTHORIZE = (
    "mutation($i: AuthorizeRedemptionInput!) { authorizeRedemption(input: $i) { __typename "
    "... on AuthorizeRedemptionSuccess { hold { id points } } ... on Error { code } } }"
)
CAPTURE = (
    "mutation($i: CaptureRedemptionInput!) { captureRedemption(input: $i) { __typename "
    "... on CaptureRedemptionSuccess { transaction { id points } } ... on Error { code } } }"
)
RETRY_FOR = 60.0  # seconds a client keeps retrying one request


def tracing() -> aiohttp.TraceConfig:
    """Times each request's wait for a free client connection (`trace_request_ctx`), so that
    the latencies reported are the server's, not the load generator's own queue."""

    async def start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        if ctx.trace_request_ctx is not None:
            ctx.trace_request_ctx.since = time.monotonic()

    async def end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        if ctx.trace_request_ctx is not None:
            ctx.trace_request_ctx.seconds += time.monotonic() - ctx.trace_request_ctx.since

    config = aiohttp.TraceConfig()
    config.on_connection_queued_start.append(start)
    config.on_connection_queued_end.append(end)
    return config


@dataclass
class Outcome:
    """One operation as the client saw it: acknowledged (with what), refused (typed), or
    abandoned (no definitive answer within RETRY_FOR)."""

    kind: str
    key: str
    status: str = "abandoned"
    result: dict[str, Any] = field(default_factory=dict)
    code: str | None = None
    attempts: int = 0


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # accepted answers, seconds
    refused: list[float] = field(default_factory=list)  # 503 answers, seconds
    errors: int = 0  # connection errors, timeouts


async def call(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    field_name: str,
    query: str,
    variables: dict[str, Any],
    outcome: Outcome,
    stats: Stats | None = None,
    retry: bool = True,
) -> dict[str, Any] | None:
    """POST until a definitive answer; None when abandoned."""
    deadline = time.monotonic() + RETRY_FOR
    backoff = 0.05
    while True:
        outcome.attempts += 1
        started = time.monotonic()
        queued = SimpleNamespace(seconds=0.0, since=0.0)
        try:
            async with session.post(
                url,
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=15),
                trace_request_ctx=queued,
            ) as r:
                status = r.status
                body = await r.json(content_type=None) if status in (200, 503) else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            status, body = 0, None
            if stats is not None:
                stats.errors += 1
        # The server's part: not the time spent waiting for one of the client's connections.
        elapsed = time.monotonic() - started - queued.seconds
        data = (body or {}).get("data") or {}
        answer = data.get(field_name)
        if status == 200 and answer is not None:
            if stats is not None:
                stats.latencies.append(elapsed)
            if answer["__typename"].endswith("Success"):
                outcome.status = "acknowledged"
                return answer  # type: ignore[no-any-return]
            outcome.status, outcome.code = "refused", answer.get("code")
            return None
        if status == 503 and stats is not None:
            stats.refused.append(elapsed)
        if not retry or time.monotonic() > deadline:
            return None
        await asyncio.sleep(backoff * (0.5 + random.random()))
        backoff = min(backoff * 2, 1.0)


async def earn(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    card: str,
    outcomes: list[Outcome],
    stats: Stats | None = None,
    retry: bool = True,
    prefix: str = "e-",
) -> None:
    key = f"{prefix}{uuid.uuid4()}"
    o = Outcome("earn", key)
    outcomes.append(o)
    v = {
        "i": {
            "cardNumber": card,
            "amount": {"amount": "1234.50", "currency": "RUB"},
            "category": "fuel",
            "orderRef": key,
            "idempotencyKey": key,
        }
    }
    answer = await call(session, url, token, "earn", EARN, v, o, stats, retry)
    if answer is not None:
        o.result = answer["transaction"]


async def redeem(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    code: str,
    outcomes: list[Outcome],
) -> None:
    key = f"r-{uuid.uuid4()}"
    auth = Outcome("authorize", key)
    outcomes.append(auth)
    v = {
        "i": {
            "redemptionCode": code,
            "points": 20,
            "purchaseAmount": {"amount": "500.00", "currency": "RUB"},
            "orderRef": key,
            "idempotencyKey": key,
        }
    }
    answer = await call(session, url, token, "authorizeRedemption", AUTHORIZE, v, auth)
    if answer is None:
        return
    auth.result = answer["hold"]
    cap = Outcome("capture", f"{key}-c")
    outcomes.append(cap)
    v = {"i": {"holdId": answer["hold"]["id"], "points": 20, "idempotencyKey": cap.key}}
    answer = await call(session, url, token, "captureRedemption", CAPTURE, v, cap)
    if answer is not None:
        cap.result = {"hold": auth.result["id"], **answer["transaction"]}


async def setup(uri: str, members: int) -> tuple[str, str, list[str], list[str]]:
    """The bench partner, its client with earn and redeem scopes, members, and two single-use
    redemption codes per member (made as the member app would: `members.codes.create`)."""
    from core.db import create_engine
    from members import codes
    from partners import clients

    _, _, cards = await seed(uri, members)
    engine = create_engine(uri)
    async with engine.begin() as conn:
        partner = (
            await conn.exec_driver_sql("SELECT id FROM partners WHERE name = 'Bench Fuel'")
        ).scalar_one()
        creds = await clients.create_partner_client(
            conn, partner_id=partner, scopes=["points:earn", "points:redeem"]
        )
        member_ids = [r[0] for r in await conn.exec_driver_sql("SELECT id FROM members")]
        issued = [
            (await codes.create(conn, member_id=m, ttl=timedelta(hours=2))).code
            for m in member_ids
            for _ in range(2)
        ]
    await engine.dispose()
    return creds.client_id, creds.client_secret, cards, issued


async def load(
    base: str,
    token: str,
    cards: list[str],
    codes: list[str],
    clients: int,
    seconds: float,
    at_third: Any,
) -> list[Outcome]:
    """`clients` loops for `seconds`; `at_third()` runs a third of the way in."""
    url = f"{base}/graphql"
    outcomes: list[Outcome] = []
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients * 2)) as s:

        async def loop() -> None:
            while time.monotonic() < stop:
                if random.random() < 0.3 and codes:
                    await redeem(s, url, token, codes.pop(), outcomes)
                else:
                    await earn(s, url, token, random.choice(cards), outcomes)

        async def fault() -> None:
            await asyncio.sleep(seconds / 3)
            await asyncio.to_thread(at_third)

        await asyncio.gather(fault(), *(loop() for _ in range(clients)))
    return outcomes


def check(uri: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """What the database holds against what the clients were told."""
    from sqlalchemy import text

    from core.db import create_engine
    from tests.ledger.invariants import violations

    earns = {o.key: o for o in outcomes if o.kind == "earn"}
    captures = {o.key: o for o in outcomes if o.kind == "capture"}
    problems: list[str] = []
    with psycopg.connect(uri) as conn:
        ledger_earns: dict[str, list[tuple[str, int]]] = {}
        for ref, tx, points in conn.execute(
            "SELECT ref, id::text, points FROM transactions WHERE kind = 'earn' AND ref LIKE 'e-%%'"
        ):
            ledger_earns.setdefault(ref, []).append((tx, points))
        holds: dict[str, tuple[str, str | None, int]] = {
            str(h): (status, str(c) if c else None, n)
            for h, status, c, n in conn.execute(
                "SELECT id, status, capture_tx_id, (SELECT count(*) FROM transactions t "
                "WHERE t.hold_id = holds.id AND t.kind = 'capture') FROM holds"
            )
        }
        hold_orders = conn.execute(
            "SELECT order_ref, count(*) FROM holds GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
    for ref, rows in ledger_earns.items():
        if len(rows) > 1:
            problems.append(f"earn {ref} applied {len(rows)} times")
    for key, o in earns.items():
        rows = ledger_earns.get(key, [])
        if o.status == "acknowledged" and rows != [(o.result["id"], o.result["points"])]:
            problems.append(f"acknowledged earn {key} is {rows} in the ledger")
        if o.status == "refused" and rows:
            problems.append(f"refused earn {key} applied")
    for key, o in captures.items():
        if o.status != "acknowledged":
            continue
        status, capture_tx, n = holds.get(o.result["hold"], ("missing", None, 0))
        if status != "captured" or capture_tx != o.result["id"] or n != 1:
            problems.append(f"acknowledged capture {key}: hold {status}, {n} captures")
    problems += [f"hold order {ref} held {n} times" for ref, n in hold_orders]
    for _status, _tx, n in holds.values():
        if n > 1:
            problems.append(f"a hold captured {n} times")

    async def invariants() -> dict[str, Any]:
        engine = create_engine(uri)
        async with engine.connect() as c:
            found = await violations(c)
            assert (await c.execute(text("SELECT 1"))).scalar_one() == 1
        await engine.dispose()
        return found

    broken = asyncio.run(invariants())
    by = lambda kind, status: sum(  # noqa: E731
        1 for o in outcomes if o.kind == kind and o.status == status
    )
    return {
        "earns_acknowledged": by("earn", "acknowledged"),
        "earns_refused": by("earn", "refused"),
        "earns_abandoned": by("earn", "abandoned"),
        "earns_in_ledger": sum(len(r) for r in ledger_earns.values()),
        "authorizations_acknowledged": by("authorize", "acknowledged"),
        "captures_acknowledged": by("capture", "acknowledged"),
        "captures_abandoned": by("capture", "abandoned"),
        "requests_retried": sum(1 for o in outcomes if o.attempts > 1),
        "retries": sum(o.attempts - 1 for o in outcomes),
        "problems": problems[:20],
        "invariants_broken": {k: len(v) for k, v in broken.items()},
        "ok": not problems and not broken,
    }


def workers_of(pid: int) -> list[int]:
    """uvicorn's worker processes under `pid` (not multiprocessing's resource tracker)."""
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [
        p for p in children if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
    ]


def fund(base: str, token: str, cards: list[str]) -> None:
    """One earn per member first, so that redemptions have points to take."""

    async def go() -> None:
        outcomes: list[Outcome] = []
        async with aiohttp.ClientSession() as s:
            sem = asyncio.Semaphore(32)

            async def one(card: str) -> None:
                async with sem:
                    await earn(s, f"{base}/graphql", token, card, outcomes, prefix="f-")

            await asyncio.gather(*(one(c) for c in cards))
        assert all(o.status == "acknowledged" for o in outcomes), "funding failed"

    asyncio.run(go())


def scenario_kill(args: argparse.Namespace, what: str) -> dict[str, Any]:
    from core.db import start_embedded

    tmp = Path(tempfile.mkdtemp(prefix="coalition-faults-"))
    embedded = None
    if what == "kill-db":
        embedded = start_embedded(tmp)
        admin = embedded.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE coalition")
        uri = embedded.get_uri("coalition")
        from migrations.runner import upgrade

        upgrade(uri)
    else:
        admin, uri = create_test_database("coalition_bench_faults")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    workers = args.workers if what == "kill-worker" else 1
    server = None
    events: list[str] = []
    try:
        client_id, secret, cards, codes = asyncio.run(setup(uri, args.members))
        server = start_server(
            uri, port, workers, WEBHOOK_WORKERS="0", IMPORT_WORKERS="0", DB_POOL_TIMEOUT_SECONDS="2"
        )
        token = client_token(base, client_id, secret)
        fund(base, token, cards)

        def kill_db() -> None:
            assert embedded is not None
            pid = embedded.get_pid()
            os.kill(pid, signal.SIGKILL)
            events.append(f"{time.strftime('%H:%M:%S')} SIGKILL postmaster {pid}")
            time.sleep(2.0)  # the outage (the harness's, not a test's synchronisation)
            embedded._postmaster_info = None
            embedded.ensure_postgres_running()
            events.append(f"{time.strftime('%H:%M:%S')} restarted: pid {embedded.get_pid()}")

        def kill_worker() -> None:
            assert server is not None
            children = workers_of(server.pid)
            victim = children[0]
            os.kill(victim, signal.SIGKILL)
            events.append(f"{time.strftime('%H:%M:%S')} SIGKILL worker {victim} of {children}")
            for _ in range(300):  # uvicorn's supervisor starts another
                now = set(workers_of(server.pid))
                if now - set(children):
                    events.append(f"{time.strftime('%H:%M:%S')} new worker {sorted(now)}")
                    break
                time.sleep(0.1)

        outcomes = asyncio.run(
            load(
                base,
                token,
                cards,
                codes,
                args.clients,
                args.seconds,
                kill_db if what == "kill-db" else kill_worker,
            )
        )
        result = check(uri, outcomes)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if embedded is not None:
            embedded.cleanup()
        else:
            drop_database(admin, uri)
    return {"events": events, "workers": workers, **result}


def scenario_overload(args: argparse.Namespace) -> dict[str, Any]:
    admin, uri = create_test_database("coalition_bench_overload")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = None
    try:
        client_id, secret, cards, _ = asyncio.run(setup(uri, args.members))
        server = start_server(uri, port, 1, WEBHOOK_WORKERS="0", IMPORT_WORKERS="0")
        token = client_token(base, client_id, secret)
        url = f"{base}/graphql"

        async def closed(seconds: float, clients: int) -> tuple[float, Stats, list[Outcome]]:
            outcomes: list[Outcome] = []
            stats = Stats()
            stop = time.monotonic() + seconds
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=clients), trace_configs=[tracing()]
            ) as s:

                async def loop() -> None:
                    while time.monotonic() < stop:
                        await earn(s, url, token, random.choice(cards), outcomes, stats)

                await asyncio.gather(*(loop() for _ in range(clients)))
            return len(stats.latencies) / seconds, stats, outcomes

        async def open_loop(rate: float, seconds: float) -> tuple[Stats, list[Outcome]]:
            """Requests sent at `rate` per second whatever the answers (no retry: a refused
            one counts as refused; its key is never applied, checked below)."""
            outcomes: list[Outcome] = []
            stats = Stats()
            tasks = []
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512), trace_configs=[tracing()]
            ) as s:
                start = time.monotonic()
                n = 0
                while (now := time.monotonic()) < start + seconds:
                    due = int((now - start) * rate) - n
                    for _ in range(due):
                        tasks.append(
                            asyncio.create_task(
                                earn(s, url, token, random.choice(cards), outcomes, stats, False)
                            )
                        )
                    n += due
                    await asyncio.sleep(0.005)
                await asyncio.gather(*tasks)
            return stats, outcomes

        _, _, o0 = asyncio.run(closed(3, 32))  # warm-up: caches, prepared statements
        capacity, base_stats, o1 = asyncio.run(closed(args.seconds / 2, 32))
        offered = capacity * args.factor
        over, o2 = asyncio.run(open_loop(offered, args.seconds))
        after, after_stats, o3 = asyncio.run(closed(args.seconds / 2, 32))
        result = check(uri, o0 + o1 + o2 + o3)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_database(admin, uri)

    def pct(xs: list[float], q: float) -> float | None:
        return round(statistics.quantiles(xs, n=100)[q - 1] * 1000, 1) if len(xs) > 100 else None

    return {
        "capacity_earns_per_s": round(capacity, 1),
        "capacity_p99_ms": pct(base_stats.latencies, 99),
        "offered_per_s": round(offered, 1),
        "accepted_per_s": round(len(over.latencies) / args.seconds, 1),
        "accepted_p50_ms": pct(over.latencies, 50),
        "accepted_p99_ms": pct(over.latencies, 99),
        "accepted_max_ms": round(max(over.latencies) * 1000, 1) if over.latencies else None,
        "refused_503": len(over.refused),
        "refused_p99_ms": pct(over.refused, 99),
        "connection_errors": over.errors,
        "after_earns_per_s": round(after, 1),
        "after_p99_ms": pct(after_stats.latencies, 99),
        **result,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("scenario", choices=["kill-db", "kill-worker", "overload"])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--members", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--factor", type=float, default=2.0)
    args = ap.parse_args()
    if args.scenario == "overload":
        result = scenario_overload(args)
    else:
        result = scenario_kill(args, args.scenario)
    result = {
        "scenario": args.scenario,
        **result,
        "nproc": os.cpu_count(),
        "load": os.getloadavg()[0],
        "database": "DATABASE_URL"
        if os.environ.get("DATABASE_URL") and args.scenario != "kill-db"
        else "embedded",
        "command": " ".join(["python -m bench.faults", *sys.argv[1:]]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"faults-{args.scenario}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not result["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
