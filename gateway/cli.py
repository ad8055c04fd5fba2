"""The `coalition` command: serve, migrate and the scheduled jobs."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import Progress

from core.clock import utcnow
from core.db import create_engine, resolve_database_url, stop_embedded
from core.errors import DomainError
from core.settings import get_settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

app = typer.Typer(help="Coalition: a coalition loyalty platform.", no_args_is_help=True)


def _url() -> str:
    return resolve_database_url(get_settings())


@app.command()
def migrate() -> None:
    """Apply the database migrations (creates the embedded database when needed)."""
    from migrations.runner import upgrade

    upgrade(_url())
    typer.echo("database is up to date")


@app.command()
def serve(
    host: str = typer.Option(None, help="Interface to bind (default: settings.host)."),
    port: int = typer.Option(None, help="Port (default: settings.port)."),
    workers: int = typer.Option(
        1,
        min=1,
        max=64,
        help="Worker processes (uvicorn's supervisor restarts one that dies). Every limit, "
        "throttle, revocation and the scheduler's leadership are shared through PostgreSQL.",
    ),
) -> None:
    """Run the HTTP gateway."""
    import uvicorn

    from gateway.app import create_app
    from gateway.logs import log_config

    chosen = {"host": host, "port": port}
    settings = get_settings().model_copy(
        update={name: value for name, value in chosen.items() if value is not None}
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again against the
    # handler that was there before it: with the default one SIGTERM kills the process before
    # any exit hook runs, and the embedded PostgreSQL is left running. Exit normally instead.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    # X-Forwarded-For is read by the app, from TRUSTED_PROXIES only (gateway.ratelimit);
    # uvicorn's own rule would believe it from any loopback peer.
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "log_config": log_config(settings),  # LOG_FORMAT, the request id in every line
        "proxy_headers": False,
    }
    try:
        url = resolve_database_url(settings)  # the embedded server starts here, once
        if workers == 1:
            uvicorn.run(_ready_to_serve(create_app(settings, database_url=url)), **options)
        else:
            # Spawned workers read the environment: they attach to this URL (the parent's
            # embedded server, stopped below when the parent leaves) instead of starting one,
            # and take the chosen host and port (the default PUBLIC_URL is built on them).
            os.environ.update(DATABASE_URL=url, HOST=settings.host, PORT=str(settings.port))
            # /metrics sums every worker's series (gateway.metrics): a directory they share.
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
                    prefix="coalition-metrics-"
                )
            uvicorn.run("gateway.cli:serving_app", factory=True, workers=workers, **options)
    finally:
        stop_embedded()


def tune_gc_for_serving() -> None:
    """Prepare the process to serve for long: what is built by now (the app, its schema and
    caches) lives as long as the process, so it leaves the collector's sight, and the young
    generation is collected less often (bench/RESULTS.md: the GraphQL earn's CPU per request).
    Only where a process starts serving: a test that builds an app keeps its collector as is."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def serving_app() -> Starlette:
    """The app as `coalition serve` runs it (the environment's settings, the collector tuned),
    for `uvicorn --factory gateway.cli:serving_app` (several workers, the benchmark)."""
    from gateway.app import create_app

    return _ready_to_serve(create_app(get_settings()))


def _ready_to_serve(app_: Starlette) -> Starlette:
    """What `serve` adds to the app: the worker's pid on every response (`X-Coalition-Worker`),
    the collector tuned."""
    from gateway.workers import WorkerHeader

    app_.add_middleware(WorkerHeader)
    tune_gc_for_serving()
    return app_


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # the shell's code for "ended by this signal"


@app.command()
def expire(
    at: datetime = typer.Option(
        None, help="Expire lots expired by this instant, not in the future (default: now; UTC)."
    ),
    batch_size: int = typer.Option(500, min=1, max=100_000),
) -> None:
    """Move the remaining points of expired lots to breakage (safe to re-run)."""
    from ledger import service as ledger

    when = _past_instant(at)

    async def run() -> dict[str, int]:
        engine = create_engine(_url())
        try:
            with Progress(transient=False) as progress:
                task = progress.add_task("expiring points", total=None)

                def report(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                released = await ledger.release_expired_holds(engine, at=when)
                report_ = await ledger.expire_points(
                    engine, at=when, batch_size=batch_size, progress=report
                )
            return {"holds_released": released, **report_.__dict__}
        finally:
            await engine.dispose()

    try:
        outcome = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(outcome))


def _past_instant(at: datetime | None) -> datetime:
    """`at` (a zone-less value is UTC; default: now), exit 2 when it lies in the future."""
    now = utcnow()
    if at is None:
        return now
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if at > now:
        # A job dated in the future would take points today that every "as of now" figure
        # (the points liability) still counts.
        typer.echo(
            f"error: --at {at.isoformat()} is in the future (now: {now.isoformat()})", err=True
        )
        raise typer.Exit(2)
    return at


@app.command()
def demo(
    if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing when partners exist."),
) -> None:
    """Load the demo coalition: partners, prices, rules, API clients, members, history."""
    from gateway.demo import DEMO_PASSWORD, is_empty, load

    settings = get_settings()

    async def run() -> None:
        engine = create_engine(_url())
        try:
            if if_empty and not await is_empty(engine):
                typer.echo("database already has partners: demo not loaded")
                return
            report = await load(engine, settings)
        finally:
            await engine.dispose()
        typer.echo(
            f"demo coalition loaded: {report.earns} earns, {report.redemptions} redemptions, "
            f"{report.referrals} referral bonuses, {report.bonuses} partner bonuses, "
            f"{report.transfers} transfers, "
            f"{report.tier_review.upgraded if report.tier_review else 0} members in tiers"
        )
        if (settled := report.periods) is not None:
            typer.echo(
                f"settlement: {settled.created} monthly periods, {len(settled.closed)} closed and sealed"
            )
        typer.echo(f"operator client: {json.dumps(report.operator)}")
        typer.echo(f"console /console: {report.operator_user} (password {DEMO_PASSWORD!r})")
        for name, p in report.partners.items():
            typer.echo(f"partner {name}: {json.dumps(p)}")
        for email, card in report.members.items():
            typer.echo(f"member {email} (password {DEMO_PASSWORD!r}): card {card}")

    asyncio.run(run())


@app.command("export-schema")
def export_schema(
    path: str = typer.Argument("schema.graphql", help="Where to write the SDL."),
) -> None:
    """Write the GraphQL schema (SDL) that partners integrate against."""
    from pathlib import Path

    from gateway.graphql.schema import schema_sdl

    Path(path).write_text(schema_sdl())
    typer.echo(f"wrote {path}")


@app.command("bootstrap-operator")
def bootstrap_operator(
    name: str = typer.Option("operator", help="A label for the client (who or what uses it)."),
) -> None:
    """Create an operator OAuth client; prints its id and secret (shown only this once)."""
    from partners import clients

    async def run() -> clients.ClientCredentials:
        engine = create_engine(_url())
        try:
            async with engine.begin() as conn:
                return await clients.create_operator_client(conn, name=name)
        finally:
            await engine.dispose()

    credentials = asyncio.run(run())
    # The last line of stdout is the contract (API.md): scripts parse it.
    typer.echo(
        json.dumps({"client_id": credentials.client_id, "client_secret": credentials.client_secret})
    )


@app.command("add-operator-user")
def add_operator_user(
    email: str = typer.Argument(..., help="The person's email: what they sign in with."),
) -> None:
    """Add an operator user (signs in to the console at /console); prints a generated
    password, shown only this once."""
    from members import operators

    async def run() -> tuple[operators.OperatorUserRecord, str]:
        engine = create_engine(_url())
        try:
            async with engine.begin() as conn:
                return await operators.add(conn, email=email)
        finally:
            await engine.dispose()

    try:
        user, password = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    # The last line of stdout is the contract: scripts parse it.
    typer.echo(json.dumps({"id": str(user.id), "email": user.email, "password": password}))


@app.command("disable-operator-user")
def disable_operator_user(
    email: str = typer.Argument(..., help="The operator user's email."),
    enable: bool = typer.Option(False, "--enable", help="Enable the user again instead."),
) -> None:
    """Stop an operator user signing in to the console (or, with --enable, allow it again);
    tokens already issued live out their minutes, refreshing them is refused."""
    from members import operators

    async def run() -> operators.OperatorUserRecord | None:
        engine = create_engine(_url())
        try:
            async with engine.begin() as conn:
                return await operators.set_disabled(
                    conn, email=email, disabled=not enable, at=utcnow()
                )
        finally:
            await engine.dispose()

    user = asyncio.run(run())
    if user is None:
        typer.echo(f"error: no operator user {email!r}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps({"email": user.email, "disabled": user.disabled_at is not None}))


@app.command("rotate-signing-key")
def rotate_signing_key(
    retire: bool = typer.Option(True, help="Also retire keys superseded long enough ago."),
) -> None:
    """Sign access tokens with a new key from now on (older keys verify until retired)."""
    from gateway.oauth import keys

    async def run() -> dict[str, object]:
        engine = create_engine(_url())
        try:
            async with engine.begin() as conn:
                retired = await keys.retire_superseded_keys(conn) if retire else []
                kid = await keys.create_signing_key(conn)
            return {"kid": kid, "retired": retired}
        finally:
            await engine.dispose()

    typer.echo(json.dumps(asyncio.run(run())))


@app.command("purge-oauth")
def purge_oauth() -> None:
    """Delete expired authorization codes, refresh tokens, revocations, login failures."""
    from gateway.oauth import store

    async def run() -> dict[str, int]:
        engine = create_engine(_url())
        try:
            async with engine.begin() as conn:
                return await store.purge_expired(conn, now=utcnow())
        finally:
            await engine.dispose()

    typer.echo(json.dumps(asyncio.run(run())))


@app.command("pay-referrals")
def pay_referrals() -> None:
    """Pay the referral bonuses still due after a friend's first earn (the earn pays them
    itself; this is the safety net, also run by `serve`). Safe to re-run."""
    from loyalty import bonuses

    settings = get_settings()

    async def run() -> int:
        engine = create_engine(_url())
        try:
            return await bonuses.pay_pending_referrals(
                engine, validity_months=settings.points_validity_months
            )
        finally:
            await engine.dispose()

    typer.echo(json.dumps({"paid": asyncio.run(run())}))


@app.command("review-tiers")
def review_tiers(
    as_of: datetime = typer.Option(
        None, "--as-of", help="Review as of this instant (default: now; never in the future)."
    ),
) -> None:
    """Run the yearly tier review: every member gets the tier the 12 months before the instant
    qualify for, up or down. Safe to re-run for the same instant; one review at a time."""
    from loyalty import tiers

    settings = get_settings()
    at = _past_instant(as_of)

    async def run() -> dict[str, object]:
        engine = create_engine(_url())
        try:
            with Progress(transient=False) as progress:
                task = progress.add_task("reviewing tiers", total=None)

                def report(total: tiers.ReviewReport) -> None:
                    progress.update(
                        task,
                        completed=total.reviewed,
                        description=f"reviewing tiers: {total.reviewed} members, "
                        f"{total.upgraded} up, {total.downgraded} down",
                    )

                result = await tiers.review(
                    engine, as_of=at, currency=settings.settlement_currency, progress=report
                )
            return {
                "asOf": at.isoformat(),
                "reviewed": result.reviewed,
                "upgraded": result.upgraded,
                "downgraded": result.downgraded,
            }
        finally:
            await engine.dispose()

    try:
        outcome = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(outcome))


@app.command()
def settle(
    at: datetime = typer.Option(None, help="Settle as of this instant (default: now)."),
    period: str = typer.Option(
        None, help="daily, weekly or monthly (default: the SETTLEMENT_PERIOD setting)."
    ),
) -> None:
    """Run every due settlement period: create missing ones, run the expiry up to each ended
    period's end, close and seal it; recompute the current one. Safe to run from cron."""
    from gateway.app import settle_with

    settings = get_settings()
    now = _past_instant(at)  # settling in the future would close and expire ahead of time

    async def run() -> dict[str, object]:
        engine = create_engine(_url())
        try:
            with Progress(transient=False) as progress:
                task = progress.add_task("settling", total=None)

                def report(done: int, total: int, label: str) -> None:
                    progress.update(
                        task, completed=done, total=total, description=f"settling {label}"
                    )

                result = await settle_with(
                    engine,
                    settings,
                    now=now,
                    granularity=period,
                    actor="system:settle",
                    progress=report,
                )
            return {
                "skipped": result.skipped,
                "created": result.created,
                "runs": result.runs,
                "closed": [str(p) for p in result.closed],
                "expired_points": result.expired_points,
            }
        finally:
            await engine.dispose()

    try:
        outcome = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(outcome))


@app.command("import")
def import_file(
    file: Path = typer.Argument(..., help="A CSV (or .jsonl) file of earn and refund lines."),
    partner: str = typer.Option(..., "--partner", help="The partner whose lines these are."),
) -> None:
    """Apply a partner's batch file (API.md "Batch files") now, with a progress bar; prints the
    outcome as JSON (rejected lines with their line numbers). Interrupted, it resumes where it
    stopped when run again or by `serve`, never applying a line twice."""
    import uuid

    from core.db import create_driver_pool
    from ledger.batch import EarnBatcher
    from loyalty import imports
    from loyalty.caches import Caches
    from loyalty.runtime import Services
    from partners import service as partners

    settings = get_settings()
    try:
        partner_id = uuid.UUID(partner)
    except ValueError:
        typer.echo("error: --partner must be a partner id", err=True)
        raise typer.Exit(2) from None
    try:
        body = file.read_bytes()[: imports.MAX_BYTES + 1]
    except OSError as exc:
        typer.echo(f"error: {exc.strerror}: {file}", err=True)
        raise typer.Exit(2) from None
    content_type = "application/x-ndjson" if file.suffix in (".jsonl", ".ndjson") else "text/csv"

    async def run() -> dict[str, object]:
        url = _url()
        engine = create_engine(url)
        pool = create_driver_pool(url, max_size=4)
        await pool.open()
        rt = Services(engine, pool, EarnBatcher(pool), settings, Caches())
        try:
            async with engine.connect() as conn:
                if await partners.get(conn, partner_id=partner_id) is None:
                    raise DomainError("no such partner")
            record = await imports.submit(
                rt, partner_id=partner_id, actor="cli:import", body=body, content_type=content_type
            )
            with Progress(transient=False) as progress:
                task = progress.add_task("importing", total=record.lines)

                def report(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                await imports.run(rt, record.id, progress=report)
            done, errors = await imports.status(rt, partner_id=None, import_id=str(record.id))
            return {
                "id": str(done.id),
                "status": done.status,
                "lines": done.lines,
                "applied": done.applied,
                "replayed": done.replayed,
                "rejected": done.rejected,
                "errors": [{"line": e.line, "code": e.code, "message": e.message} for e in errors],
            }
        finally:
            await pool.close()
            await engine.dispose()

    try:
        outcome = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(outcome))


@app.command()
def scheduler(
    host: str = typer.Option("127.0.0.1", help="Interface of /healthz and /metrics."),
    port: int = typer.Option(9100, help="Port of /healthz and /metrics."),
) -> None:
    """Run the periodic jobs (SETTLE_EVERY_MINUTES, REFERRAL_SWEEP_MINUTES, TIER_REVIEW_DAY) in
    a process of their own, for gateways started with SCHEDULER=0; serves only /healthz and
    /metrics. Several may run: each job takes an advisory lock."""
    import uvicorn

    from gateway.app import create_scheduler_app
    from gateway.logs import log_config

    settings = get_settings()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    try:
        uvicorn.run(
            create_scheduler_app(settings),
            host=host,
            port=port,
            log_level="info",
            log_config=log_config(settings),
            access_log=False,
            proxy_headers=False,
        )
    finally:
        stop_embedded()


if __name__ == "__main__":  # pragma: no cover
    app()
