"""Partners' webhooks: the use cases (create, list, delete, delivery log, redeliver) and the
dispatcher that delivers the outbox's events (`ledger.outbox` -> `partners.webhooks`).

A delivery is `POST url` with the JSON body `{"id", "type", "createdAt", "data"}` and the header
`Coalition-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. A non-2xx
answer, a timeout or a refused address is retried with exponential backoff and full jitter
until 24 hours after the event; the event id is the same on every attempt. The dispatcher runs
in `serve` (WEBHOOK_WORKERS of them, safe side by side), apart from the earns: an endpoint
slow or dead only delays its own deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import aiohttp
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import utcnow
from core.errors import ErrorCode, ValidationError
from loyalty.runtime import Runtime
from partners import webhooks
from partners.webhooks import DeliveryRecord, Due, Outcome, WebhookRecord

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Coalition-Signature"
RETRY_WINDOW = timedelta(hours=24)
BACKOFF_BASE = timedelta(seconds=10)
BACKOFF_CAP = timedelta(hours=1)
# Deliveries one step claims at most. A step's claim, delivery and record run one after another
# and share the event loop with the requests `serve` answers: under a full GraphQL earn load a
# step of 100 fell behind (`bench.webhooks`, 2026-12-06: 0.86-0.98 deliveries per earn, the
# oldest pending 2.58 s); of 500, 0.91-0.99 with the oldest pending under 0.9 s (bench/RESULTS.md).
STEP_BATCH = 500
# Connections the dispatchers' shared HTTP client opens at once (`connections`), and to one
# endpoint: a step's deliveries never queue behind the client's limit (their 10 s timeout
# counts that wait), and a slow endpoint holds at most PER_ENDPOINT of them.
PER_ENDPOINT = 100


def connections(workers: int) -> int:
    """The client's connection limit for `workers` dispatchers: a full step each at once."""
    return STEP_BATCH * max(1, workers)


# A dispatcher that found nothing due waits IDLE_MIN, then twice as long each time it finds
# nothing again, up to IDLE_MAX (`idle_wait`). A flat second: an earn load's events found the
# outbox momentarily empty, the dispatcher slept a whole second, and the oldest pending
# delivery reached 1.4 s (`bench.webhooks`, 2026-12-06).
IDLE_MIN = 0.05
IDLE_MAX = 1.0


def idle_wait(previous: float, cap: float = IDLE_MAX) -> float:
    """How long a dispatcher waits after a step that found nothing due, having waited
    `previous` after the step before (0: that one delivered)."""
    return min(cap, max(IDLE_MIN, 2 * previous))


MAX_PAGE = 100

# What the use cases may raise (gateway.graphql checks each mutation's result union).
CREATE_ERRORS = frozenset({ErrorCode.VALIDATION})
CHANGE_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})


def parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError(f"{what} is not a valid id", field=what) from None


async def create(
    rt: Runtime, *, partner_id: uuid.UUID, url: str, events: list[str], actor: str
) -> WebhookRecord:
    """A new webhook for the partner's own events; its secret is in this result only."""
    chosen = webhooks.check_events(events)
    # DNS: off the event loop.
    checked = await asyncio.to_thread(
        webhooks.check_url, url, allow_insecure=rt.settings.webhook_allow_insecure
    )
    async with rt.engine.begin() as conn:
        return await webhooks.create(
            conn, partner_id=partner_id, url=checked, events=chosen, actor=actor
        )


async def listed(rt: Runtime, *, partner_id: uuid.UUID) -> list[WebhookRecord]:
    """The partner's webhooks."""
    async with rt.engine.connect() as conn:
        return await webhooks.list_for(conn, partner_id=partner_id)


async def delete(rt: Runtime, *, partner_id: uuid.UUID, webhook_id: str) -> None:
    """Stop one of the partner's webhooks."""
    wid = parse_id(webhook_id, "webhookId")
    async with rt.engine.begin() as conn:
        await webhooks.delete(conn, partner_id=partner_id, webhook_id=wid)


async def deliveries(
    rt: Runtime,
    *,
    partner_id: uuid.UUID,
    webhook_id: str,
    first: int,
    after: uuid.UUID | None,
) -> list[DeliveryRecord]:
    """A page of one of the partner's webhooks' delivery log, newest first."""
    wid = parse_id(webhook_id, "webhookId")
    if not 0 < first <= MAX_PAGE + 1:
        raise ValidationError(f"first must be between 1 and {MAX_PAGE}", field="first")
    async with rt.engine.connect() as conn:
        return await webhooks.deliveries(
            conn, partner_id=partner_id, webhook_id=wid, limit=first, after=after
        )


async def redeliver(rt: Runtime, *, partner_id: uuid.UUID, delivery_id: str) -> DeliveryRecord:
    """Send a delivery's event again (same event id), now."""
    did = parse_id(delivery_id, "deliveryId")
    async with rt.engine.begin() as conn:
        return await webhooks.redeliver(conn, partner_id=partner_id, delivery_id=did)


# -- delivery ----------------------------------------------------------------------------------


def body_of(due: Due) -> bytes:
    """The delivery's JSON body."""
    return orjson.dumps(
        {
            "id": str(due.event_id),
            "type": due.event_type,
            "createdAt": due.event_created_at.isoformat(),
            "data": due.event_data,
        }
    )


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Coalition-Signature` header's value."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def next_attempt(
    *, attempts: int, now: datetime, created_at: datetime, rng: Callable[[], float]
) -> datetime | None:
    """When to try again after the `attempts`-th failure: BACKOFF_BASE doubling per attempt up
    to BACKOFF_CAP, with full jitter; the last try at the window's end; None once it is over."""
    end = created_at + RETRY_WINDOW
    if now >= end:
        return None
    ceiling = min(BACKOFF_BASE * (2 ** min(attempts - 1, 30)), BACKOFF_CAP)
    delay = ceiling * (0.5 + rng() / 2)  # jitter in [ceiling/2, ceiling]
    return min(now + delay, end)


class Dispatcher:
    """Delivers due webhook deliveries, one claim at a time (`step`), or forever (`run`).

    `clock` and `rng` are injectable: tests drive it step by step through hours of retries."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        client: aiohttp.ClientSession,
        allow_insecure: bool,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
        batch: int = STEP_BATCH,
        timeout: float = 10.0,
        resolver: webhooks.Resolver | None = None,
    ) -> None:
        self.engine, self.client = engine, client
        self.allow_insecure, self.resolver = allow_insecure, resolver
        self.clock, self.rng = clock, rng
        self.batch, self.timeout = batch, timeout

    async def step(self) -> int:
        """Claim the due deliveries heading their member's queue, deliver them side by side,
        record how each went; all in one transaction (a worker killed meanwhile leaves them
        pending). Returns how many were attempted."""
        now = self.clock()
        async with self.engine.begin() as conn:
            due = await webhooks.claim_due(conn, now=now, limit=self.batch)
            if not due:
                return 0
            # Each URL checked once per step (DNS, in a worker thread), not once per delivery.
            targets = await asyncio.to_thread(self._targets, {d.url for d in due})
            outcomes = await asyncio.gather(*(self._deliver(d, targets[d.url], now) for d in due))
            await webhooks.record(conn, list(outcomes))
        return len(due)

    async def run(
        self,
        *,
        idle_seconds: float = IDLE_MAX,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Step until cancelled; when nothing is due, wait (`idle_wait`: briefly after work, up
        to `idle_seconds` once idle a while). A failing step is logged and retried."""
        wait = 0.0
        while True:
            try:
                done = await self.step()
            except Exception:  # the dispatcher must outlive a bad step
                log.exception("webhook dispatch step failed")
                done = 0
            wait = 0.0 if done else idle_wait(wait, idle_seconds)
            if wait:
                await sleep(wait)

    def _targets(self, urls: set[str]) -> dict[str, webhooks.Target | ValidationError]:
        """Each URL checked again (the host may resolve elsewhere by now): where to connect,
        or why not. Blocking (DNS)."""
        checked: dict[str, webhooks.Target | ValidationError] = {}
        for url in urls:
            try:
                checked[url] = webhooks.check_target(
                    url, allow_insecure=self.allow_insecure, resolver=self.resolver
                )
            except ValidationError as exc:
                checked[url] = exc
        return checked

    async def _deliver(
        self, due: Due, target: webhooks.Target | ValidationError, now: datetime
    ) -> Outcome:
        code: int | None = None
        error: str | None = None
        if isinstance(target, ValidationError):
            error = f"refused: {target.message}"
        else:
            body = body_of(due)
            try:
                # To the address just checked: no second lookup to rebind.
                async with self.client.post(
                    target.connect_url,
                    data=body,
                    server_hostname=target.tls_name,
                    headers={
                        "Host": target.host_header,
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: signature(due.secret, int(now.timestamp()), body),
                        "User-Agent": "Coalition-Webhooks/1",
                    },
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    allow_redirects=False,
                ) as response:
                    code = response.status
                    await response.read()
                if 200 <= code < 300:
                    return Outcome(due.id, now, code, None, True, None)
                error = f"HTTP {code}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        retry_at = next_attempt(
            attempts=due.attempts + 1, now=now, created_at=due.created_at, rng=self.rng
        )
        return Outcome(due.id, now, code, error, False, retry_at)
