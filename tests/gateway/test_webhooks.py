"""Webhooks through the transactional outbox: a receiver on 127.0.0.1 that answers 500 for a
while gets each event once it answers 200, with the same event id and a verifying signature,
in order per member; no event for a rolled-back transaction; a dispatcher killed mid-delivery
loses nothing; a partner gets only its own events; the URL policy (no SSRF). The dispatcher is
driven step by step with an injected clock: no sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import ValidationError
from core.settings import Settings
from ledger import service as ledger
from loyalty import webhooks as dispatch
from loyalty.webhooks import Dispatcher
from partners.webhooks import check_target, check_url, resolve
from tests.gateway.conftest import BASE_URL
from tests.gateway.gql_helpers import (
    EARN,
    PartnerHandle,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)
from tests.gateway.receiver import Receiver

CREATE = """
mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { __typename
  ... on CreateWebhookSuccess { webhook { id url events secret } } ... on Error { code message } } }
"""
DELIVERIES = """
query($id: ID!, $first: Int!, $after: String) { webhookDeliveries(webhookId: $id, first: $first, after: $after) {
  edges { cursor node { id eventId eventType status attempts lastStatusCode } } pageInfo { hasNextPage endCursor } } }
"""
REDELIVER = """
mutation($input: RedeliverWebhookInput!) { redeliverWebhook(input: $input) { __typename
  ... on RedeliverWebhookSuccess { delivery { id eventId status } } ... on Error { code message } } }
"""


@pytest.fixture(scope="module")
def settings(db_uri: str) -> Settings:
    return Settings(
        database_url=db_uri,
        public_url=BASE_URL,
        graphql_introspection=True,
        rate_limit_oauth_ip="1000000/minute",
        rate_limit_register="1000000/hour",
        webhook_allow_insecure=True,
        webhook_workers=0,  # the tests drive their own dispatcher
        import_workers=0,
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as c:
        yield c


def dispatcher(
    engine: AsyncEngine, http: aiohttp.ClientSession, clock: Callable[[], datetime]
) -> Dispatcher:
    return Dispatcher(engine, client=http, allow_insecure=True, clock=clock, rng=lambda: 0.5)


async def _earn(client: httpx.AsyncClient, partner: PartnerHandle, card: str, ref: str) -> str:
    d = await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": card,
                "amount": rub("100.00"),
                "category": "shop",
                "orderRef": ref,
                "idempotencyKey": key(),
            }
        },
        partner.token,
    )
    assert d["earn"]["__typename"] == "EarnSuccess", d
    return d["earn"]["transaction"]["id"]  # type: ignore[no-any-return]


async def _webhook(client: httpx.AsyncClient, partner: PartnerHandle, url: str) -> dict[str, Any]:
    d = await gql(
        client, CREATE, {"input": {"url": url, "events": ["earn.recorded"]}}, partner.token
    )
    assert d["createWebhook"]["__typename"] == "CreateWebhookSuccess", d
    return d["createWebhook"]["webhook"]  # type: ignore[no-any-return]


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in headers["coalition-signature"].split(","))
    mac = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), parts["v1"])


async def _pending(engine: AsyncEngine, webhook_id: str) -> int:
    async with engine.connect() as conn:
        r = await conn.execute(
            text(
                "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = :w AND status = 'pending'"
            ),
            {"w": webhook_id},
        )
        return int(r.scalar_one())


async def test_retried_until_the_receiver_answers_once_in_order_signed(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Hooked")
    other = await setup_partner(client, op, name="Other hooked")
    wh = await _webhook(client, p, f"http://127.0.0.1:{receiver.port}/hook")
    wh_other = await _webhook(client, other, f"http://127.0.0.1:{receiver.port}/other")
    m1, m2 = await register_and_login(client), await register_and_login(client)
    txs1 = [await _earn(client, p, m1.card, f"o1-{i}") for i in range(3)]
    txs2 = [await _earn(client, p, m2.card, f"o2-{i}") for i in range(2)]
    receiver.statuses = [500] * 4
    clock = Clock()
    d = dispatcher(engine, http, clock)
    for _ in range(40):
        await d.step()
        if not await _pending(engine, wh["id"]):
            break
        clock.now += timedelta(minutes=30)
    assert await _pending(engine, wh["id"]) == 0

    # Each event delivered once, with the same event id as its failed attempts, signed.
    delivered = receiver.delivered()
    assert sorted(e["data"]["transactionId"] for e in delivered) == sorted(txs1 + txs2)
    assert len({e["id"] for e in delivered}) == 5
    failed_ids = {json.loads(b)["id"] for _, b, s in receiver.requests if s != 200}
    assert failed_ids <= {e["id"] for e in delivered}
    for headers, body, _ in receiver.requests:
        assert verify(wh["secret"], headers, body)
        assert not verify(wh_other["secret"], headers, body)
    # In order per member.
    for txs in (txs1, txs2):
        got = [e["data"]["transactionId"] for e in delivered if e["data"]["transactionId"] in txs]
        assert got == txs
    # A partner gets only its own events: the other partner's webhook got nothing.
    assert all(h.get("host") and b"/other" not in b for h, b, _ in receiver.requests)
    async with engine.connect() as conn:
        n = await conn.execute(
            text("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = :w"),
            {"w": wh_other["id"]},
        )
        assert n.scalar_one() == 0

    # The log, and a redelivery with the same event id.
    log = await gql(client, DELIVERIES, {"id": wh["id"], "first": 3}, p.token)
    page = log["webhookDeliveries"]
    assert len(page["edges"]) == 3 and page["pageInfo"]["hasNextPage"]
    rest = await gql(
        client,
        DELIVERIES,
        {"id": wh["id"], "first": 10, "after": page["pageInfo"]["endCursor"]},
        p.token,
    )
    assert len(rest["webhookDeliveries"]["edges"]) == 2
    first = page["edges"][0]["node"]
    assert first["status"] == "delivered"
    r = await gql(client, REDELIVER, {"input": {"deliveryId": first["id"]}}, p.token)
    assert r["redeliverWebhook"]["delivery"]["eventId"] == first["eventId"]
    # Not another partner's: its log is empty, redelivering is NOT_FOUND.
    assert (await gql(client, DELIVERIES, {"id": wh["id"], "first": 5}, other.token))[
        "webhookDeliveries"
    ]["edges"] == []
    r = await gql(client, REDELIVER, {"input": {"deliveryId": first["id"]}}, other.token)
    assert r["redeliverWebhook"]["code"] == "NOT_FOUND"


async def test_retries_stop_after_24_hours_with_backoff(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Dead endpoint")
    wh = await _webhook(client, p, f"http://127.0.0.1:{receiver.port}/dead")
    m = await register_and_login(client)
    await _earn(client, p, m.card, "dead-1")
    receiver.statuses = [503] * 1000
    clock = Clock()
    d = dispatcher(engine, http, clock)
    start = clock.now
    for _ in range(200):
        await d.step()
        if not await _pending(engine, wh["id"]):
            break
        async with engine.connect() as conn:
            nxt = (
                await conn.execute(
                    text("SELECT next_attempt_at FROM webhook_deliveries WHERE webhook_id = :w"),
                    {"w": wh["id"]},
                )
            ).scalar_one()
        clock.now = max(clock.now, nxt)
    attempts = [s for _, _, s in receiver.requests]
    assert len(attempts) > 10 and clock.now > start
    async with engine.connect() as conn:
        status, created, last = (
            await conn.execute(
                text(
                    "SELECT status, created_at, last_attempt_at FROM webhook_deliveries "
                    "WHERE webhook_id = :w"
                ),
                {"w": wh["id"]},
            )
        ).one()
    assert status == "failed" and last - created >= timedelta(hours=24)


async def test_no_event_for_a_rolled_back_earn(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver
) -> None:
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Rolled back")
    wh = await _webhook(client, p, f"http://127.0.0.1:{receiver.port}/rb")
    m = await register_and_login(client)
    import uuid

    async with engine.connect() as conn:
        tx = await conn.begin()
        r = await ledger.earn(
            conn,
            actor="t",
            key_space="t",
            idempotency_key=key(),
            member_id=uuid.UUID(m.id),
            partner_id=uuid.UUID(p.id),
            points=10,
            ref="rb-1",
        )
        assert not r.replayed
        inside = await conn.execute(
            text("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = :w"), {"w": wh["id"]}
        )
        assert inside.scalar_one() == 1  # written with the earn
        await tx.rollback()
    assert await _pending(engine, wh["id"]) == 0


async def test_a_dispatcher_killed_mid_delivery_loses_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Killed")
    wh = await _webhook(client, p, f"http://127.0.0.1:{receiver.port}/killed")
    m = await register_and_login(client)
    tx = await _earn(client, p, m.card, "k-1")
    receiver.hold = asyncio.Event()
    clock = Clock()
    first = asyncio.create_task(dispatcher(engine, http, clock).step())
    async with asyncio.timeout(60):  # a bound, not a synchronisation: fails rather than hangs
        await receiver.arrived.wait()  # the request is at the receiver, unanswered
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    receiver.hold.set()
    assert await _pending(engine, wh["id"]) == 1
    restarted = dispatcher(engine, http, clock)
    for _ in range(5):  # other tests' deliveries (the module's database) may share a step
        await restarted.step()
    assert await _pending(engine, wh["id"]) == 0
    ids = {json.loads(b)["id"] for _, b, _ in receiver.requests}
    assert len(ids) == 1 and receiver.delivered()[-1]["data"]["transactionId"] == tx


async def test_two_dispatchers_never_send_one_member_out_of_order(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Two workers")
    wh = await _webhook(client, p, f"http://127.0.0.1:{receiver.port}/two")
    m = await register_and_login(client)
    txs = [await _earn(client, p, m.card, f"t-{i}") for i in range(4)]
    clock = Clock()
    a, b = dispatcher(engine, http, clock), dispatcher(engine, http, clock)
    for _ in range(10):
        await asyncio.gather(a.step(), b.step())
    assert await _pending(engine, wh["id"]) == 0
    assert [e["data"]["transactionId"] for e in receiver.delivered()] == txs


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # not https
        "https://10.0.0.1/hook",  # private
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "https://[::1]/hook",  # loopback
        "https://localhost/hook",  # resolves to loopback
        "https://[::ffff:10.0.0.1]/hook",  # IPv4-mapped private
        "https://user:pw@93.184.215.14/",  # credentials
        "ftp://93.184.215.14/",
        "https://93.184.215.14/\x00",
        "",
        "https://" + "a" * 3000 + ".com/",
    ],
)
def test_url_policy_refuses(url: str) -> None:
    with pytest.raises(ValidationError):
        check_url(url, allow_insecure=False)


def test_url_policy_accepts_public_https_and_loopback_http_only_when_insecure() -> None:
    assert check_url("https://93.184.215.14/hook", allow_insecure=False)
    assert check_url("http://127.0.0.1:8080/hook", allow_insecure=True)
    with pytest.raises(ValidationError):
        check_url("http://127.0.0.1:8080/hook", allow_insecure=False)
    with pytest.raises(ValidationError):
        check_url("http://10.0.0.1/hook", allow_insecure=True)


def test_the_target_is_the_checked_address_with_the_original_host_for_tls() -> None:
    names = {"hooks.partner.test": [ipaddress.ip_address("2606:4700::1111")]}
    t = check_target(
        "https://hooks.partner.test:8443/in?x=1", allow_insecure=False, resolver=names.__getitem__
    )
    assert (t.connect_url, t.host_header, t.tls_name) == (
        "https://[2606:4700::1111]:8443/in?x=1",
        "hooks.partner.test:8443",
        "hooks.partner.test",
    )
    rebound = {"hooks.partner.test": [ipaddress.ip_address("169.254.169.254")]}
    with pytest.raises(ValidationError):
        check_target(
            "https://hooks.partner.test/", allow_insecure=False, resolver=rebound.__getitem__
        )


async def test_a_delivery_connects_to_the_address_it_checked_not_a_new_lookup(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    """No DNS-rebinding window: the dispatcher resolves the host once, checks that address and
    connects to it. `hooks.rebind.test` exists only in the dispatcher's resolver, so a second
    lookup by the HTTP client would fail the delivery."""
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Rebind")
    wh = await _webhook(client, p, f"http://127.0.0.1:{receiver.port}/hook")
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE webhooks SET url = :u WHERE id = :w"),
            {"u": f"http://hooks.rebind.test:{receiver.port}/hook", "w": wh["id"]},
        )
    m = await register_and_login(client)
    await _earn(client, p, m.card, "rebind-1")
    names = {"hooks.rebind.test": [ipaddress.ip_address("127.0.0.1")]}

    def resolver(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        # other tests' leftover deliveries (to 127.0.0.1) may be due too: resolve those as usual
        return names[host] if host in names else resolve(host)

    d = Dispatcher(engine, client=http, allow_insecure=True, rng=lambda: 0.5, resolver=resolver)
    for _ in range(10):
        await d.step()
        if not await _pending(engine, wh["id"]):
            break
    assert await _pending(engine, wh["id"]) == 0
    [(headers, body, status)] = receiver.requests
    assert headers["host"] == f"hooks.rebind.test:{receiver.port}"
    assert verify(wh["secret"], headers, body) and status == 200


async def test_create_webhook_refuses_bad_input_with_typed_errors(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Bad hooks")
    for url, events in [
        ("https://10.1.2.3/x", ["earn.recorded"]),
        ("http://127.0.0.1:1/x", ["nope"]),
        ("http://127.0.0.1:1/x", []),
        ("http://127.0.0.1:1/\x00", ["earn.recorded"]),
    ]:
        d = await gql(client, CREATE, {"input": {"url": url, "events": events}}, p.token)
        assert d["createWebhook"]["code"] == "VALIDATION", d
    d = await gql(
        client,
        CREATE,
        {"input": {"url": "https://93.184.215.14/", "events": ["earn.recorded"]}},
        op,
    )
    assert d["createWebhook"]["code"] == "FORBIDDEN"


def test_the_client_holds_a_full_step_of_every_dispatcher() -> None:
    """No delivery of a step waits behind the shared client's connection limit (its timeout
    would count the wait), however many dispatchers share it."""
    assert dispatch.connections(1) == dispatch.STEP_BATCH
    assert dispatch.connections(4) == 4 * dispatch.STEP_BATCH
    assert dispatch.connections(0) == dispatch.STEP_BATCH
    assert dispatch.PER_ENDPOINT <= dispatch.STEP_BATCH


async def test_a_dispatcher_that_finds_nothing_due_looks_again_soon_then_less_often(
    engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    """After a step that delivered, an empty one waits IDLE_MIN, then twice as long each time
    up to a second: events of a steady load wait at most IDLE_MIN for a dispatcher that found
    the outbox momentarily empty (a flat second let the oldest pending reach 1.4 s), and an
    idle one polls once a second. (The steps scripted: this is the loop's wait policy.)"""
    counts = iter([3, 0, 0, 0, 0, 0, 0, 0, 2, 0])
    waits: list[float] = []

    class Scripted(Dispatcher):
        async def step(self) -> int:
            return next(counts)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 8:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await Scripted(engine, client=http, allow_insecure=True).run(sleep=sleep)
    assert waits == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.05])
    assert dispatch.idle_wait(0.0) == dispatch.IDLE_MIN
    assert dispatch.idle_wait(0.8, cap=0.5) == 0.5
