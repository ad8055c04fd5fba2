"""Does webhook dispatch keep up with the earn rate? Same server, same run.

    python -m bench.webhooks [--seconds 15] [--connections 32] [--webhook-workers 1]

Creates a fresh database (DATABASE_URL's server, or the embedded one), seeds a partner, 2,000
members and a webhook of the partner's for `earn.recorded` pointing at a receiver on 127.0.0.1
(its own process: a minimal keep-alive HTTP/1.1 endpoint answering 200), starts
`uvicorn --factory gateway.cli:serving_app` with `serve`'s dispatchers
(WEBHOOK_ALLOW_INSECURE=1), then:

1. GraphQL `earn` under wrk for `--seconds` (unique key and order per request), the
   dispatcher delivering meanwhile: earns/s, deliveries/s in the same window, and the outbox
   lag when the load stops (deliveries still pending; the oldest one's age).
2. The drain: how long the pending deliveries take once the load stopped.

Checks that every earn's event was delivered exactly once (the receiver's count of distinct
event ids against the earns in the ledger, no event id twice); writes bench/out/webhooks.json.
Goal: dispatch keeps up: over the same steady window (from WARM_S into the load to its end,
sampled every SAMPLE_S) deliveries/s ≥ earns/s within the sampling's error, and the oldest
pending delivery stays young (its age sampled through the whole load) rather than growing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import threading
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import psycopg

from bench.graphql_earn import EARN_LUA, client_token, free_port, seed, start_server, wrk
from tests.db import create_test_database, drop_database

OUT = Path(__file__).resolve().parent / "out"
SAMPLE_S = 0.5  # the lag sampled this often during the load
WARM_S = 2.0  # the steady window starts this far into the load


def receive(port: int, count: Synchronized[int], ready: Synchronized[int]) -> None:
    """The webhook endpoint: answers 200 to each POST, counts them (run in its own process)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                with count.get_lock():
                    count.value += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        ready.value = 1
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


async def add_webhook(uri: str, url: str) -> None:
    from core.db import create_engine
    from partners import webhooks

    engine = create_engine(uri)
    async with engine.begin() as conn:
        partner = (
            await conn.exec_driver_sql("SELECT id FROM partners WHERE name = 'Bench Fuel'")
        ).scalar_one()
        await webhooks.create(
            conn, partner_id=partner, url=url, events=["earn.recorded"], actor="bench"
        )
    await engine.dispose()


def lag(conn: psycopg.Connection) -> tuple[int, float]:
    """Pending deliveries, and the age in seconds of the oldest one's event."""
    pending, age = conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
        "FROM webhook_deliveries WHERE status = 'pending'"
    ).fetchone()
    return int(pending), float(age)


def sample(
    uri: str,
    count: Synchronized[int],
    out: list[tuple[float, int, int, int, float]],
    stop: threading.Event,
) -> None:
    """Every SAMPLE_S until `stop`: (seconds, events delivered, earns committed, deliveries
    pending, the oldest pending one's age), from the receiver's count and the database."""
    started = time.perf_counter()
    with psycopg.connect(uri, autocommit=True) as conn:
        while not stop.wait(SAMPLE_S):
            earns = conn.execute(
                "SELECT count(*) FROM transactions WHERE kind = 'earn'"
            ).fetchone()[0]
            out.append((time.perf_counter() - started, count.value, earns, *lag(conn)))


def steady(timeline: list[tuple[float, int, int, int, float]]) -> dict[str, float]:
    """Earns/s and deliveries/s over the same steady window (from WARM_S into the load to its
    last sample: the dispatcher starts behind by its latency, and an event of the load's last
    instant is still in flight when it stops, which a whole-window count charges to it), and
    the outbox's lag over the whole load."""
    window = [t for t in timeline if t[0] >= WARM_S]
    if len(window) < 2:
        return {}
    (t0, d0, e0, _, _), (t1, d1, e1, _, _) = window[0], window[-1]
    earns_s, deliveries_s = (e1 - e0) / (t1 - t0), (d1 - d0) / (t1 - t0)
    return {
        "steady_window_s": round(t1 - t0, 2),
        "steady_earns_per_s": round(earns_s, 1),
        "steady_deliveries_per_s": round(deliveries_s, 1),
        "steady_ratio": round(deliveries_s / earns_s, 3) if earns_s else 0.0,
        "max_pending_during_load": max(t[3] for t in timeline),
        "max_oldest_pending_age_s": round(max(t[4] for t in timeline), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--webhook-workers", type=int, default=1)
    args = ap.parse_args()

    admin, uri = create_test_database("coalition_bench_webhooks")
    port, hook_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    count = multiprocessing.Value("q", 0)
    ready = multiprocessing.Value("i", 0)
    receiver = multiprocessing.Process(target=receive, args=(hook_port, count, ready), daemon=True)
    receiver.start()
    server = None
    try:
        client_id, secret, cards = asyncio.run(seed(uri, args.members))
        asyncio.run(add_webhook(uri, f"http://127.0.0.1:{hook_port}/hook"))
        while not ready.value:
            time.sleep(0.05)
        server = start_server(
            uri,
            port,
            WEBHOOK_ALLOW_INSECURE="1",
            WEBHOOK_WORKERS=str(args.webhook_workers),
            IMPORT_WORKERS="0",
        )
        token = client_token(base, client_id, secret)
        cards_lua = ",".join(f'"{c}"' for c in cards)
        url = f"{base}/graphql"
        with psycopg.connect(uri, autocommit=True) as conn:
            delivered_before = count.value
            timeline: list[tuple[float, int, int, int, float]] = []
            stop = threading.Event()
            sampler = threading.Thread(target=sample, args=(uri, count, timeline, stop))
            sampler.start()
            try:
                earn = wrk(
                    url,
                    EARN_LUA.format(token=token, cards=cards_lua, seed=2, run="run"),
                    args.seconds,
                    args.connections,
                    1,
                )
            finally:
                stop.set()
                sampler.join()
            delivered_during = count.value - delivered_before
            pending_at_stop, oldest_at_stop = lag(conn)
            stopped = time.perf_counter()
            while lag(conn)[0]:
                time.sleep(0.05)
            drain_s = time.perf_counter() - stopped
            earns = conn.execute(
                "SELECT count(*) FROM transactions WHERE kind = 'earn'"
            ).fetchone()[0]
            delivered_rows, distinct_events = conn.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM webhook_deliveries "
                "WHERE status = 'delivered'"
            ).fetchone()
            version = conn.execute("SHOW server_version").fetchone()[0]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        receiver.terminate()
        drop_database(admin, uri)

    deliveries_per_s = delivered_during / args.seconds
    result = {
        "graphql_earn_rps": round(earn["rps"], 1),
        "deliveries_per_s_during_load": round(deliveries_per_s, 1),
        "ratio": round(deliveries_per_s / earn["rps"], 2),
        **steady(timeline),
        "pending_when_load_stopped": pending_at_stop,
        "oldest_pending_age_s": round(oldest_at_stop, 2),
        "drain_s": round(drain_s, 2),
        "earns": earns,
        "delivered": delivered_rows,
        "distinct_events_delivered": distinct_events,
        "receiver_requests": count.value,
        "webhook_workers": args.webhook_workers,
        "nproc": os.cpu_count(),
        "load": os.getloadavg()[0],
        "postgres": version,
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded",
        "command": " ".join(["python -m bench.webhooks", *sys.argv[1:]]),
        # [seconds, delivered, earns, pending, the oldest pending one's age]
        "timeline": [[round(t, 2), d, e, p, round(a, 2)] for t, d, e, p, a in timeline],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "webhooks.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    assert earns == delivered_rows == distinct_events == count.value, "not exactly once"


if __name__ == "__main__":
    main()
