"""Admission control: what the gateway does with more load than it can serve.

At most ADMISSION_MAX_IN_FLIGHT HTTP requests run at once in a process. One more waits for a
slot at most ADMISSION_QUEUE_TIMEOUT_MS, and at most as many wait as may run; past either, it is
refused at once with 503 and `Retry-After`, code OVERLOADED, before its body is read, before
it is authenticated, before it touches the database. A refused request changed nothing: the
client retries it with the same idempotency key.

Why: without a bound, an overloaded process accepts everything, every request queues behind
every other (for the event loop, for a database connection) and every latency grows until
clients time out and retry, adding load; the throughput that remains is spent on requests
whose callers have given up. With it, what is accepted finishes within the queue timeout plus
the time `max_in_flight` requests take together, whatever the offered load, and the excess
costs one refusal each (bench/RESULTS.md, "Overload").

Exempt: /healthz and /metrics (an overloaded process must still say so), websockets (bounded
per principal by WS_MAX_PER_PRINCIPAL) and lifespan events.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.logs import current_request_id

EXEMPT = frozenset({"/healthz", "/metrics"})
RETRY_AFTER_SECONDS = 1


class Admission:
    """ASGI middleware: a bounded number of requests in flight, a bounded wait for the rest."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int, queue_timeout: float) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.queue_timeout = queue_timeout
        self.slots = asyncio.Semaphore(max_in_flight)
        self.waiting = 0
        self.refused = 0  # since start (the process's health, the tests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        if not await self._admit():
            self.refused += 1
            await _refuse(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()

    async def _admit(self) -> bool:
        """Take a slot: at once if one is free, else after waiting in a bounded queue."""
        if not self.slots.locked():
            await self.slots.acquire()  # free: returns without yielding
            return True
        if self.waiting >= self.max_in_flight or self.queue_timeout <= 0:
            return False
        self.waiting += 1
        try:
            async with asyncio.timeout(self.queue_timeout):
                await self.slots.acquire()
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1


async def _refuse(scope: Scope, send: Send) -> None:
    message = "the server is overloaded: retry shortly with the same idempotency key"
    extensions = {"code": "OVERLOADED"}
    request_id = current_request_id()  # gateway.observe, outside this middleware, set it
    if request_id is not None:
        extensions["requestId"] = request_id
    body: dict[str, object]
    if scope["path"].startswith("/graphql"):
        body = {"data": None, "errors": [{"message": message, "extensions": extensions}]}
    else:
        body = {"error": {**extensions, "message": message}}
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
