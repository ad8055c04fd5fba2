"""Gateway fixtures: the real ASGI app (lifespan run) over a database of the test module's own.

Gateway tests commit through the API, and some read across the whole database (settlement
periods sum every partner's ledger rows in a window, liability and the access matrix list all
partners, schemathesis runs anything an operator may): each module gets its own database,
copied from the session's migrated template (about 50 ms), and its own app, so no module sees
another's rows whatever the order. A test that needs more isolation than its module takes
`fresh_database` (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from core.db import create_engine
from core.settings import Settings
from gateway.app import create_app
from tests.db import create_test_database, drop_database
from tests.gateway.receiver import Receiver

BASE_URL = "http://testserver"


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    admin, uri = create_test_database("coalition_gw")
    try:
        yield uri
    finally:
        drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=20, max_overflow=60)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="module")
def settings(db_uri: str) -> Settings:
    # The whole suite talks from one IP: per-IP limits are raised (tests of the limits build
    # apps of their own with tiny ones).
    return Settings(
        database_url=db_uri,
        public_url=BASE_URL,
        graphql_introspection=True,
        rate_limit_oauth_ip="1000000/minute",
        rate_limit_register="1000000/hour",
    )


@pytest.fixture(scope="module")
async def app(settings: Settings, db_uri: str) -> AsyncIterator[Starlette]:
    application = create_app(settings, database_url=db_uri)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL, follow_redirects=False
    ) as c:
        yield c


@contextlib.asynccontextmanager
async def served_client(
    app: Starlette, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of `app` running its lifespan (for a test's own app)."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(
                app=manager.app, raise_app_exceptions=raise_app_exceptions
            ),
            base_url=BASE_URL,
        ) as c,
    ):
        yield c


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.port = server.sockets[0].getsockname()[1]
    yield r
    if r.hold is not None:
        r.hold.set()
    server.close()
