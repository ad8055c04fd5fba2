"""Prometheus: `GET /metrics`, and the series of HTTP and GraphQL requests.

Counters and histograms live in `core.metrics.REGISTRY` (the use cases' business series too).
With several processes (`serve --workers N`, uvicorn workers) set PROMETHEUS_MULTIPROC_DIR to
an empty directory before they start: each process then writes its values there and /metrics,
whichever process answers, sums them all (prometheus_client's multiprocess mode). States, not
events (the outstanding points, the webhook backlog), are read from the database at scrape
time, at most every STATE_SECONDS per process: the same for every process by construction.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.metrics import REGISTRY
from partners import webhooks
from settlement import service as settlement

if TYPE_CHECKING:
    from gateway.observe import GraphQLCall

log = logging.getLogger(__name__)

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
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
    buckets=_BUCKETS,
    registry=REGISTRY,
)
GRAPHQL_REQUESTS = Counter(
    "coalition_graphql_requests",
    "GraphQL HTTP requests by operation type and name (see operation_label).",
    ["type", "operation"],
    registry=REGISTRY,
)
GRAPHQL_ERRORS = Counter(
    "coalition_graphql_errors",
    "GraphQL HTTP requests answered with errors (a 4xx/5xx, or `errors` in the body); typed "
    "results such as InsufficientPointsError are answers, not errors.",
    ["type", "operation"],
    registry=REGISTRY,
)
GRAPHQL_LATENCY = Histogram(
    "coalition_graphql_request_duration_seconds",
    "GraphQL HTTP request latency by operation type and name.",
    ["type", "operation"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)

# The GraphQL call of the request being served (gateway.observe sets it, the view fills it).
GRAPHQL_CALL: ContextVar[GraphQLCall | None] = ContextVar("graphql_call", default=None)

# Operation names are the caller's: a label per name would let anyone grow the series without
# bound. A name is its own label when it looks like a GraphQL name and is among the first
# MAX_OPERATIONS names this process saw answered without errors; every other request is
# "other", a request without a name "anonymous".
MAX_OPERATIONS = 200
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
_known: set[str] = set()
# The first operation of a document: its type and name ("{ ... }" is an anonymous query).
_FIRST_OPERATION = re.compile(
    r"(?:\s|,|#[^\n]*)*(?:(query|mutation|subscription)\b(?:\s|,|#[^\n]*)*([_A-Za-z][_0-9A-Za-z]*)?)?"
)


def note_operation(query: object, operation_name: object) -> None:
    """The view parsed a request: remember its operation's type and name. Cheap (a regular
    expression on the document's first bytes, no parse): it runs on every GraphQL request."""
    call = GRAPHQL_CALL.get()
    if call is None:
        return
    call.seen = True
    doc = query if isinstance(query, str) else ""
    if isinstance(operation_name, str) and operation_name:
        call.name = operation_name
        found = re.search(
            rf"\b(query|mutation|subscription)(?:\s|,|#[^\n]*)+{re.escape(operation_name[:64])}\b",
            doc,
        )
        call.kind = found.group(1) if found else "query"
        return
    first = _FIRST_OPERATION.match(doc, 0, 4096)
    if first is not None and first.group(1):
        call.kind, call.name = first.group(1), first.group(2)


def note_errors(count: int) -> None:
    """The view answers with `count` GraphQL errors."""
    call = GRAPHQL_CALL.get()
    if call is not None:
        call.errors += count


def operation_label(name: str | None, *, admit: bool) -> str:
    """The `operation` label of a request named `name`; `admit`: a new name may take a slot."""
    if not name:
        return "anonymous"
    if name in _known:
        return name
    if admit and len(_known) < MAX_OPERATIONS and _NAME.fullmatch(name):
        _known.add(name)
        return name
    return "other"


# (route, method, status) -> its children, looked up once: routes are the app's templates,
# methods and statuses few, so the dict stays small.
_http: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}


# The method is the caller's too: any other than these is counted as OTHER.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    key = (route, method if method in _METHODS else "OTHER", status)
    series = _http.get(key)
    if series is None:
        series = _http[key] = (LATENCY.labels(route), REQUESTS.labels(route, key[1], str(status)))
    series[0].observe(seconds)
    series[1].inc()


# (type, operation) -> its children of the three series, looked up once per label pair.
_series: dict[tuple[str, str], tuple[Counter, Histogram, Counter]] = {}


def observe_graphql(call: GraphQLCall, status: int, seconds: float) -> None:
    failed = status >= 400 or call.errors > 0
    key = (call.kind, operation_label(call.name, admit=not failed))
    series = _series.get(key)
    if series is None:
        series = _series[key] = (
            GRAPHQL_REQUESTS.labels(*key),
            GRAPHQL_LATENCY.labels(*key),
            GRAPHQL_ERRORS.labels(*key),
        )
    series[0].inc()
    series[1].observe(seconds)
    if failed:
        series[2].inc()


# --- GET /metrics ---------------------------------------------------------------------------

STATE_SECONDS = 10.0  # the database-derived gauges are read at most this often per process
STATE_TIMEOUT_SECONDS = 5.0


@dataclass
class _State:
    at: float
    metrics: list[Metric]


class _Fixed:
    """A collector of metrics computed beforehand (the database's answers)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


async def _read_state(request: Request) -> list[Metric]:
    """Outstanding points and their value by currency, and the webhook backlog, from the
    database (shared by every process, so the same whichever process answers)."""
    settings = request.app.state.settings
    async with request.app.state.engine.connect() as conn:
        lines = await settlement.liability(
            conn, currency=settings.settlement_currency, point_value=settings.point_value
        )
        backlog = await webhooks.backlog(conn)
    outstanding = GaugeMetricFamily(
        "coalition_points_outstanding", "Points earned and not yet spent, expired or taken back."
    )
    outstanding.add_metric([], sum(line.points for line in lines))
    value = GaugeMetricFamily(
        "coalition_liability_value",
        "The outstanding points valued at their issue price (the operator's at POINT_VALUE).",
        labels=["currency"],
    )
    value.add_metric(
        [settings.settlement_currency], float(sum(line.value.amount for line in lines))
    )
    lag = GaugeMetricFamily(
        "coalition_webhook_outbox_lag_seconds",
        "Age of the oldest webhook delivery not delivered yet (0: none pending).",
    )
    lag.add_metric([], backlog.oldest_seconds)
    pending = GaugeMetricFamily(
        "coalition_webhook_pending_deliveries", "Webhook deliveries not delivered yet."
    )
    pending.add_metric([], backlog.pending)
    return [outstanding, value, lag, pending]


async def _state(request: Request) -> list[Metric]:
    """The database-derived gauges, cached STATE_SECONDS; none when the database is away (the
    scrape still answers, with the process's own series)."""
    cached: _State | None = getattr(request.app.state, "metrics_state", None)
    now = time.monotonic()
    if cached is not None and now - cached.at < STATE_SECONDS:
        return cached.metrics
    try:
        async with asyncio.timeout(STATE_TIMEOUT_SECONDS):
            found = await _read_state(request)
    except Exception as exc:  # a scrape must answer whatever the database does
        log.warning("metrics: the database-derived gauges are unavailable: %s", exc)
        return []
    request.app.state.metrics_state = _State(now, found)
    return found


def _authorized(request: Request) -> bool:
    """Without METRICS_TOKEN: anyone. With it: only `Authorization: Bearer <token>`."""
    token = request.app.state.settings.metrics_token
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    )


async def metrics(request: Request) -> Response:
    """Prometheus text exposition: the series of every process (multiprocess mode) or of this
    one, the database-derived gauges, this process's group-commit counters."""
    if not _authorized(request):
        return JSONResponse(
            {
                "error": {
                    "code": "UNAUTHENTICATED",
                    "message": "GET /metrics needs the bearer token",
                }
            },
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_Fixed(list(REGISTRY.collect())))
    registry.register(_Fixed(await _state(request)))
    return Response(
        generate_latest(registry) + _earn_batch_lines(request), media_type=CONTENT_TYPE_LATEST
    )


_EARN_COUNTERS = (
    ("batches", "Earn group-commit statements committed by this process."),
    ("batched_earns", "Earns committed by group-commit statements."),
    ("single_path", "Earns run alone (replays, errors, members owing points, fallbacks)."),
    ("refused_batches", "Group-commit statements that refused themselves: a member owed points."),
    ("failed_batches", "Group-commit statements that failed; their earns were retried alone."),
)


def _earn_batch_lines(request: Request) -> bytes:
    """The group commit's counters of the process that answers (plain attributes of its
    EarnBatcher, not summed across processes)."""
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
