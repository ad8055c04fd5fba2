"""Prometheus metrics: `GET /metrics`, and a middleware timing every HTTP request."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "coalition_http_requests_total",
    "HTTP requests by route, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "coalition_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)


class MetricsMiddleware:
    """Times requests; labels by the matched route template, never the raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = "unmatched"
        for r in scope["app"].router.routes if "app" in scope else ():
            if r.matches(scope)[0] == Match.FULL:
                route = getattr(r, "path", "unmatched")
                break
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            LATENCY.labels(route).observe(time.perf_counter() - start)
            REQUESTS.labels(route, scope["method"], str(status)).inc()


_EARN_COUNTERS = (
    ("batches", "Earn group-commit statements committed by this process."),
    ("batched_earns", "Earns committed by group-commit statements."),
    ("single_path", "Earns run alone (replays, errors, members owing points, fallbacks)."),
    ("refused_batches", "Group-commit statements that refused themselves: a member owed points."),
    ("failed_batches", "Group-commit statements that failed; their earns were retried alone."),
)


def _earn_batch_lines(request: Request) -> bytes:
    earns = getattr(request.app.state, "earns", None)
    if earns is None:
        return b""
    lines = []
    for name, help_text in _EARN_COUNTERS:
        metric = f"coalition_earn_{name}_total"
        lines += [
            f"# HELP {metric} {help_text}",
            f"# TYPE {metric} counter",
            f"{metric} {getattr(earns.stats, name)}",
        ]
    return ("\n".join(lines) + "\n").encode()


async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(
        generate_latest(REGISTRY) + _earn_batch_lines(request), media_type=CONTENT_TYPE_LATEST
    )


def requests_by_route() -> list[tuple[str, int, int, int]]:
    """(route, requests, 4xx, 5xx) answered by this process since it started, busiest first."""
    totals: dict[str, list[int]] = {}
    for metric in REQUESTS.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            counts = totals.setdefault(sample.labels["route"], [0, 0, 0])
            n = int(sample.value)
            counts[0] += n
            status = sample.labels["status"]
            if status.startswith("4"):
                counts[1] += n
            elif status.startswith("5"):
                counts[2] += n
    return sorted(
        ((route, *c) for route, c in totals.items()),  # type: ignore[misc]
        key=lambda r: (-r[1], r[0]),
    )
