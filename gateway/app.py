"""The ASGI application: `create_app(settings)` builds it; nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import anyio
import psycopg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from core.clock import utcnow
from core.db import create_driver_pool, create_engine, resolve_database_url
from core.settings import Settings, get_settings
from gateway import tracing
from gateway.admission import Admission
from gateway.leader import Job, Leadership
from gateway.oauth.routes import routes as oauth_routes
from gateway.oauth.state import oauth_state
from gateway.ratelimit import RateLimits
from ledger.batch import EarnBatcher
from loyalty import imports
from loyalty import webhooks as webhook_dispatch
from loyalty.runtime import Services
from loyalty.webhooks import Dispatcher
from settlement import service as settlement

log = logging.getLogger(__name__)


HEALTHZ_TIMEOUT_SECONDS = 5.0


async def healthz(request: Request) -> JSONResponse:
    """Liveness, and whether the database answers: 503 with the reason when it does not."""
    from sqlalchemy import text

    try:
        async with (
            asyncio.timeout(HEALTHZ_TIMEOUT_SECONDS),
            request.app.state.engine.connect() as conn,
        ):
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, psycopg.Error, OSError, TimeoutError) as exc:
        log.warning("healthz: the database does not answer: %s", exc)
        return JSONResponse({"status": "unavailable", "reason": "database"}, status_code=503)
    return JSONResponse({"status": "ok", **worker_status(request)})


def worker_status(request: Request) -> dict[str, object]:
    """Which worker answered (`serve --workers N`), and its part in the scheduler: "leader",
    "standby", "starting", or "off" when this app schedules no job (gateway.leader);
    "dedicated" for `coalition scheduler`."""
    state = request.app.state
    leadership = getattr(state, "leadership", None)
    role = getattr(state, "scheduler_role", None) or (leadership.state if leadership else "off")
    return {"worker": os.getpid(), "scheduler": role}


async def settle_with(
    engine: AsyncEngine,
    settings: Settings,
    *,
    now: datetime | None = None,
    granularity: str | None = None,
    actor: str = "system:serve-scheduler",
    progress: Callable[[int, int, str], None] | None = None,
) -> settlement.SettleReport:
    """One settlement run under `settings` (period, time zone, close delay, currency); what the
    scheduler in `serve` runs, and `coalition settle` (which may name another `granularity`)."""
    return await settlement.settle_due(
        engine,
        granularity=granularity or settings.settlement_period,
        timezone=settings.settlement_timezone,
        close_delay=timedelta(minutes=settings.settlement_close_delay_minutes),
        currency=settings.settlement_currency,
        point_value=settings.point_value,
        now=now,
        actor=actor,
        progress=progress,
    )


async def settle_periodically(engine: AsyncEngine, settings: Settings) -> None:
    """Run `settle_with(settings)` every SETTLE_EVERY_MINUTES inside `serve`.

    Safe with several app processes: the job takes an advisory lock and skips when another
    process holds it; every run is idempotent. A failed run is logged and retried next time.
    """
    while True:
        try:
            report = await settle_with(engine, settings)
            log.info("settlement run: %s", report)
        except Exception:  # the scheduler must outlive a bad run; the next one retries
            log.exception("settlement run failed")
        await asyncio.sleep(settings.settle_every_minutes * 60.0)


async def pay_referrals_periodically(engine: AsyncEngine, settings: Settings) -> None:
    """Run the referral sweep (`loyalty.bonuses.pay_pending_referrals`) every
    REFERRAL_SWEEP_MINUTES inside `serve`: one process at a time (an advisory lock), each run
    idempotent; a failed run is logged and retried next time."""
    from loyalty import bonuses

    while True:
        try:
            paid = await bonuses.pay_pending_referrals(
                engine, validity_months=settings.points_validity_months
            )
            if paid:
                log.info("referral sweep: %d referral bonuses paid", paid)
        except Exception:  # the scheduler must outlive a bad run; the next one retries
            log.exception("referral sweep failed")
        await asyncio.sleep(settings.referral_sweep_minutes * 60.0)


def tier_review_due(now: datetime, day: str) -> datetime | None:
    """The instant of the tier review due at `now` under TIER_REVIEW_DAY `day` (MM-DD, UTC):
    00:00 UTC of that day when `now` falls on it, else None."""
    if not day:
        return None
    month, dom = (int(part) for part in day.split("-"))
    now = now.astimezone(UTC)
    if (now.month, now.day) != (month, dom):
        return None
    return datetime(now.year, month, dom, tzinfo=UTC)


async def review_tiers_on_the_day(engine: AsyncEngine, settings: Settings) -> None:
    """Run the yearly tier review inside `serve` on TIER_REVIEW_DAY, as of 00:00 UTC that day:
    checked hourly, once per process and day (`loyalty.tiers.review` takes an advisory lock,
    so another process's run makes this one skip, and a re-run for the same instant changes
    nothing). A failed run is logged and retried at the next check."""
    from loyalty import tiers

    done: datetime | None = None
    while True:
        as_of = tier_review_due(utcnow(), settings.tier_review_day)
        if as_of is not None and as_of != done:
            try:
                report = await tiers.review(
                    engine, as_of=as_of, currency=settings.settlement_currency
                )
                log.info("tier review as of %s: %s", as_of.isoformat(), report)
                done = as_of
            except tiers.ReviewRunning:
                done = as_of  # another process reviews this instant
            except Exception:  # the scheduler must outlive a bad run; the next check retries
                log.exception("tier review failed")
        await asyncio.sleep(3600.0)


def scheduled_jobs(engine: AsyncEngine, settings: Settings) -> list[Job]:
    """The periodic jobs the settings turn on (settlement, referral sweep, tier review), each
    as a function starting it: run by `serve`'s leader (`gateway.leader`) unless SCHEDULER=0,
    and by `coalition scheduler`. Each also takes an advisory lock, so any number of processes
    may run them; one process is enough."""
    jobs: list[Job] = []
    if settings.settle_every_minutes:
        jobs.append(lambda: settle_periodically(engine, settings))
    if settings.referral_sweep_minutes:
        jobs.append(lambda: pay_referrals_periodically(engine, settings))
    if settings.tier_review_day:
        jobs.append(lambda: review_tiers_on_the_day(engine, settings))
    return jobs


def create_scheduler_app(settings: Settings | None = None) -> Starlette:
    """`coalition scheduler`: the periodic jobs of `scheduled_jobs`, with no API, and only
    /healthz and /metrics (their durations, the database-derived gauges) to watch them."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engine = create_engine(resolve_database_url(settings), pool_size=4)
        tracing.trace_engine(app, app.state.engine)
        app.state.scheduled = [
            asyncio.create_task(j()) for j in scheduled_jobs(app.state.engine, settings)
        ]
        try:
            yield
        finally:
            for job in app.state.scheduled:
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            await app.state.engine.dispose()
            tracing.shutdown(app)

    from gateway.metrics import metrics
    from gateway.observe import ObserveMiddleware

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/metrics", metrics)],
        lifespan=lifespan,
        middleware=[Middleware(ObserveMiddleware)],
    )
    app.state.settings = settings
    app.state.scheduler_role = "dedicated"
    tracing.enable(app, settings)
    return app


def create_app(settings: Settings | None = None, *, database_url: str | None = None) -> Starlette:
    """Build the app for `settings` (the environment's when omitted)."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = database_url or resolve_database_url(settings)
        app.state.engine = create_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        tracing.trace_engine(app, app.state.engine)
        # psycopg's own pool for the earn hot path (see core.db.DriverConnection).
        app.state.pool = create_driver_pool(
            url,
            max_size=max(2, settings.db_pool_size // 2),
            timeout=settings.db_pool_timeout_seconds,
        )
        await app.state.pool.open()
        app.state.earns = EarnBatcher(
            app.state.pool,
            max_batch=settings.earn_batch_max,
            max_in_flight=settings.earn_batch_in_flight,
            split_at=settings.earn_batch_split_at,
        )
        await app.state.rate_limits.start(url)
        jobs = [asyncio.create_task(oauth_state(app).revoked.listen(url))]
        # The scheduled jobs run in one process of the deployment: the leader (gateway.leader);
        # in none of the gateway's with SCHEDULER=0 (`coalition scheduler` runs them).
        scheduled = scheduled_jobs(app.state.engine, settings) if settings.scheduler else []
        app.state.scheduled = scheduled
        if scheduled:
            app.state.leadership = Leadership(url, scheduled)
            jobs.append(asyncio.create_task(app.state.leadership.run()))
        app.state.runtime = Services(
            app.state.engine, app.state.pool, app.state.earns, settings, app.state.caches
        )
        # Batch files: applied in the background, those a restart interrupted first.
        for _ in range(settings.import_workers):
            jobs.append(asyncio.create_task(imports.work(app.state.runtime, app.state.import_wake)))
        # Webhook dispatchers, apart from the earns (their own connections and HTTP client).
        app.state.webhook_client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=webhook_dispatch.connections(settings.webhook_workers),
                limit_per_host=webhook_dispatch.PER_ENDPOINT,
            ),
            trust_env=False,
        )
        for _ in range(settings.webhook_workers):
            dispatcher = Dispatcher(
                app.state.engine,
                client=app.state.webhook_client,
                allow_insecure=settings.webhook_allow_insecure,
            )
            jobs.append(asyncio.create_task(dispatcher.run()))
        try:
            yield
        finally:
            for job in jobs:
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            await app.state.earns.drain()
            await app.state.rate_limits.stop()
            await app.state.webhook_client.close()
            await app.state.pool.close()
            await app.state.engine.dispose()
            tracing.shutdown(app)

    from gateway.console import routes as console_routes
    from gateway.graphql.schema import build_schema
    from gateway.graphql.view import STATIC_GRAPHIQL, GraphQLEndpoint
    from gateway.imports_http import routes as import_routes
    from gateway.memberapp.routes import routes as memberapp_routes
    from gateway.metrics import metrics
    from gateway.observe import ObserveMiddleware
    from gateway.settlement_http import routes as settlement_routes
    from loyalty.caches import Caches

    graphql = GraphQLEndpoint(
        build_schema(
            introspection=settings.graphql_introspection, max_cost=settings.graphql_max_cost
        ),
        graphql_ide=settings.graphql_introspection,
    )
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        *oauth_routes(),
        *settlement_routes(),
        *console_routes(),
        *memberapp_routes(),
        *import_routes(),
    ]
    if settings.graphql_introspection:  # GraphiQL's scripts and styles come from the app
        graphiql_assets = StaticFiles(directory=Path(__file__).parent / "static" / "graphiql")
        routes.append(Mount(STATIC_GRAPHIQL, graphiql_assets, name="graphiql"))
    admission = Middleware(
        Admission,
        max_in_flight=settings.admission_max_in_flight,
        queue_timeout=settings.admission_queue_timeout_ms / 1000,
    )
    # Observed first (request id, metrics: refusals count too), then admission: a refused
    # request costs nothing more (gateway.admission).
    app = Starlette(
        routes=routes, lifespan=lifespan, middleware=[Middleware(ObserveMiddleware), admission]
    )
    app.state.settings = settings
    tracing.enable(app, settings)
    app.state.caches = Caches()
    app.state.import_wake = asyncio.Event()
    app.state.rate_limits = RateLimits(settings)
    app.state.hash_limiter = anyio.CapacityLimiter(settings.password_hash_threads)
    return app
