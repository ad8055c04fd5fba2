"""The service's side of `bench.earn`: durable earns from C concurrent callers split over P
spawned processes, each window's throughput, latency, client CPU and earns per group commit."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import os
import random
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.earn_setup import machine_cpu


@dataclass
class WorkerResult:
    """One service process's window: its earns, errors, latencies, CPU and group commits."""

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
    """One service window: C callers over P spawned processes, started together after warm-up."""
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
