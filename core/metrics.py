"""The process's Prometheus registry and the business series that the use cases feed.

Counters of what happened (points issued and redeemed) are incremented where a use case's unit
of work has committed, never on a replay: cheap on the hot path (one in-memory add) and exact
per process. Several processes (`serve --workers N`, uvicorn workers) each count their own:
with PROMETHEUS_MULTIPROC_DIR set before the process starts, prometheus_client keeps the
values in files that `GET /metrics` sums across processes (`gateway.metrics`). What is a state
rather than an event (the liability, the webhook backlog) is read from the database at scrape.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

POINTS_ISSUED = Counter(
    "coalition_points_issued",
    "Points issued by committed earns (replays not counted).",
    ["kind"],
    registry=REGISTRY,
)
POINTS_REDEEMED = Counter(
    "coalition_points_redeemed",
    "Points taken as payment by committed captures and reward redemptions (replays not counted).",
    ["kind"],
    registry=REGISTRY,
)
# The children the use cases increment, looked up once (not per earn).
ISSUED_BY_EARN = POINTS_ISSUED.labels("earn")
REDEEMED_BY_CAPTURE = POINTS_REDEEMED.labels("capture")
REDEEMED_BY_REWARD = POINTS_REDEEMED.labels("reward")
# Jobs that run for seconds to hours on a large ledger.
_JOB_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)
SETTLEMENT_SECONDS = Histogram(
    "coalition_settlement_run_seconds",
    "Duration of settlement runs that were not skipped (another process held the job's lock).",
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
EXPIRY_SECONDS = Histogram(
    "coalition_expiry_run_seconds",
    "Duration of points expiry runs (inside settlement or `coalition expire`).",
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)

P = ParamSpec("P")
R = TypeVar("R")


def timed(histogram: Histogram) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Observe the wall time of every call of an async function, failed ones included."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - start)

        return run

    return decorate
