"""Gateway fixtures: the real ASGI app (lifespan run) over the session's test database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from core.settings import Settings
from gateway.app import create_app

BASE_URL = "http://testserver"


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
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
