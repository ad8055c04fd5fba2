"""Admission control (gateway.admission): a bounded number of requests in flight, a bounded
queue, the excess refused at once with 503 OVERLOADED and Retry-After; /healthz and /metrics
always answer. Driven with requests held in flight by events: no sleeps, no timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from core.settings import Settings
from gateway.admission import Admission
from gateway.app import create_app
from gateway.observe import ObserveMiddleware


class Held:
    """An ASGI app whose requests wait for `release`; `entered` counts those running."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        if scope["path"] not in ("/healthz", "/metrics"):
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def until(predicate: object) -> None:
    """Yield to the event loop until `predicate()` holds (the requests' tasks run meanwhile)."""
    for _ in range(10_000):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


async def refused_soon(request: Awaitable[httpx.Response]) -> httpx.Response:
    """A request expected to be refused without waiting for the held ones: without the guard
    it would wait for them forever, so the test fails (TimeoutError) rather than hangs."""
    return await asyncio.wait_for(request, 30)


@pytest.fixture
def held() -> Held:
    return Held()


def client_for(app: Admission) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_beyond_the_slots_a_request_is_refused_at_once_and_changes_nothing(
    held: Held,
) -> None:
    gate = Admission(held, max_in_flight=2, queue_timeout=0)
    async with client_for(gate) as c:
        running = [asyncio.create_task(c.post("/graphql", json={})) for _ in range(2)]
        await until(lambda: held.entered == 2)
        refused = await refused_soon(c.post("/graphql", json={"query": "mutation { earn }"}))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["errors"][0]["extensions"]["code"] == "OVERLOADED"
        assert held.entered == 2  # the refused one never reached the app
        other = await refused_soon(c.get("/imports/x"))
        assert other.json()["error"]["code"] == "OVERLOADED"
        held.release.set()
        assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]
        assert (await c.post("/graphql", json={})).status_code == 200  # recovered
    assert gate.refused == 2


async def test_a_waiting_request_gets_the_next_free_slot_and_the_queue_is_bounded(
    held: Held,
) -> None:
    gate = Admission(held, max_in_flight=1, queue_timeout=60)
    async with client_for(gate) as c:
        first = asyncio.create_task(c.post("/graphql", json={}))
        await until(lambda: held.entered == 1)
        second = asyncio.create_task(c.post("/graphql", json={}))
        await until(lambda: gate.waiting == 1)
        third = await refused_soon(c.post("/graphql", json={}))  # the queue (one per slot) is full
        assert third.status_code == 503
        held.release.set()
        assert (await first).status_code == 200
        assert (await second).status_code == 200
    assert held.entered == 2 and gate.waiting == 0


async def test_a_request_that_waited_its_timeout_is_refused(held: Held) -> None:
    gate = Admission(held, max_in_flight=1, queue_timeout=0.01)
    async with client_for(gate) as c:
        first = asyncio.create_task(c.post("/graphql", json={}))
        await until(lambda: held.entered == 1)
        assert (await refused_soon(c.post("/graphql", json={}))).status_code == 503
        held.release.set()
        assert (await first).status_code == 200
    assert gate.waiting == 0 and held.entered == 1


async def test_health_and_metrics_answer_when_every_slot_is_taken(held: Held) -> None:
    gate = Admission(held, max_in_flight=1, queue_timeout=0)
    async with client_for(gate) as c:
        first = asyncio.create_task(c.post("/graphql", json={}))
        await until(lambda: held.entered == 1)
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/metrics")).status_code == 200
        held.release.set()
        await first


@pytest.fixture
async def small_app(db_uri: str) -> AsyncIterator[Settings]:
    yield Settings(database_url=db_uri, admission_max_in_flight=3, admission_queue_timeout_ms=250)


def test_the_app_is_behind_admission_with_the_settings(small_app: Settings) -> None:
    app = create_app(small_app)
    [gate] = [m for m in app.user_middleware if m.cls is Admission]
    assert gate.kwargs == {"max_in_flight": 3, "queue_timeout": 0.25}
    # Right inside the request id and metrics: a refusal is counted, then costs nothing more.
    assert [m.cls for m in app.user_middleware] == [ObserveMiddleware, Admission]
