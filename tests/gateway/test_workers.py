"""`coalition serve --workers 2`: every limit holds across the two processes.

Real processes over a database of the test's own: `python -m gateway.cli serve --workers 2`,
uvicorn's supervisor and its two workers. Each response names the worker that served it
(`X-Coalition-Worker`); the test keeps one keep-alive connection pinned to each worker and
alternates between them, and checks that both served requests. With per-process counters the
two workers would each admit the whole limit (twice what is asserted here).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_engine
from gateway.oauth import login
from gateway.workers import HEADER
from members import codes as member_codes
from tests.gateway import oauth_helpers as oh
from tests.gateway.gql_helpers import AUTHORIZE, EARN, gql, key, operator_token, rub, setup_partner
from tests.gateway.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
BURST = 30  # RATE_LIMIT_BURST of the served app: under 40, a lease is one request (exact)
START_TIMEOUT = 120.0
DEADLINE = 60.0  # bound of the polls below (a worker restarting, a notification arriving)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

WORKER = HEADER.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """`coalition serve --workers 2` in a subprocess, its output in a file."""

    def __init__(self, db_uri: str, log_dir: Path, receiver_port: int) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"serve-{self.port}.log"
        env = {
            **os.environ,
            "DATABASE_URL": db_uri,
            "PYTHONPATH": str(ROOT),
            "PUBLIC_URL": oh.BASE_URL,  # the helpers build redirect URIs on it
            "RATE_LIMIT_PER_SECOND": "0.01",  # BURST per 3000 s: no window ends during the test
            "RATE_LIMIT_BURST": str(BURST),
            "WEBHOOK_ALLOW_INSECURE": "true",  # the receiver is on 127.0.0.1
            "REFERRAL_SWEEP_MINUTES": "10",  # a scheduled job: the workers elect its leader
            "COALITION_APP": f"workers-test-{receiver_port}",
        }
        command = [sys.executable, "-m", "gateway.cli", "serve", "--workers", "2"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=log_dir,  # no .env of the working copy
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def healthz(self) -> dict[str, Any] | None:
        """/healthz on a new connection (so any worker may answer), or None if none does."""
        try:
            async with httpx.AsyncClient(base_url=self.base, trust_env=False) as c:
                r = await c.get("/healthz", timeout=2.0)
        except httpx.TransportError:
            return None
        return r.json() if r.status_code == 200 else None

    async def workers(self, *, without: int | None = None) -> dict[int, str]:
        """Poll /healthz until two live workers (not `without`) have settled their part in the
        scheduler; returns pid -> "leader" or "standby" (the latest each reported)."""
        seen: dict[int, str] = {}
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            h = await self.healthz()
            if h is not None and h["worker"] != without:
                seen[h["worker"]] = h["scheduler"]
                seen = {pid: s for pid, s in seen.items() if _alive(pid)}
                settled = [s for s in seen.values() if s != "starting"]
                if len(settled) == 2 and sorted(settled) == ["leader", "standby"]:
                    return seen
            await asyncio.sleep(0.05)  # the poll interval
        pytest.fail(f"no two settled workers in {START_TIMEOUT} s ({seen}):\n{self.output()}")

    async def pinned(self) -> list[httpx.AsyncClient]:
        """Two clients of one keep-alive connection each, one per worker."""
        by_pid: dict[str, httpx.AsyncClient] = {}
        for _ in range(500):
            c = httpx.AsyncClient(
                base_url=self.base,
                trust_env=False,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            pid = (await c.get("/healthz")).headers[WORKER]
            if pid in by_pid:
                await c.aclose()
                continue
            by_pid[pid] = c
            if len(by_pid) == 2:
                return list(by_pid.values())
        pytest.fail(f"the kernel gave every connection to one worker: {list(by_pid)}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(fresh_database, pool_size=5, max_overflow=5)
    yield eng
    await eng.dispose()


@pytest.fixture
def served(fresh_database: str, tmp_path: Path, receiver: Receiver) -> Iterator[Served]:
    s = Served(fresh_database, tmp_path, receiver.port)
    try:
        yield s
    finally:
        s.stop()


async def test_every_limit_holds_across_two_workers(
    served: Served, engine: AsyncEngine, receiver: Receiver
) -> None:
    roles = await served.workers()
    assert sorted(roles.values()) == ["leader", "standby"]  # one scheduler for the deployment
    async with httpx.AsyncClient(base_url=served.base, trust_env=False) as any_worker:
        op = await operator_token(any_worker, engine)
        limited = await setup_partner(any_worker, op, name="Limited")
        guesser = await setup_partner(any_worker, op, name="Guesser")
        revoked = await setup_partner(any_worker, op, name="Revoked")
        hooked = await setup_partner(any_worker, op, name="Hooked")
    a, b = await served.pinned()
    try:
        await _graphql_rate_limit(a, b, limited.token)
        await _login_throttle(a, b, engine)
        await _code_throttle(a, b, guesser.token)
        await _revocation(a, b, revoked)
        await _webhooks_delivered_once(a, b, hooked.token, engine, receiver)
    finally:
        await a.aclose()
        await b.aclose()
    await _leader_failover(served, roles)


async def _graphql_rate_limit(a: httpx.AsyncClient, b: httpx.AsyncClient, token: str) -> None:
    """One caller's burst is shared: BURST admitted in all, whichever worker counted them."""
    served: list[tuple[str, int]] = []
    for n in range(BURST + 10):
        r = await (a, b)[n % 2].post(
            "/graphql",
            json={"query": "{ __typename }"},
            headers={"Authorization": f"Bearer {token}"},
        )
        served.append((r.headers[WORKER], r.status_code))
    assert [s for _, s in served].count(200) == BURST, served
    assert [s for _, s in served].count(429) == 10, served
    assert len({pid for pid, s in served if s == 200}) == 2, served  # both admitted some
    assert len({pid for pid, s in served if s == 429}) == 2, served  # and both refused


async def _login_throttle(a: httpx.AsyncClient, b: httpx.AsyncClient, engine: AsyncEngine) -> None:
    """Failed sign-ins of one email count in one window, whichever worker checked them."""
    email, _, _ = await oh.make_member(engine)
    url = oh.authorize_url(oh.pkce_pair()[1])
    forms = {c: await oh.login_form(c, url) for c in (a, b)}
    served: list[tuple[str, int]] = []
    for n in range(login.EMAIL_LIMIT + 3):
        c = (a, b)[n % 2]
        data = {"csrf_token": forms[c], "email": email, "password": "wrong"}
        r = await c.post(url, data=data)
        served.append((r.headers[WORKER], r.status_code))
    statuses = [s for _, s in served]
    assert statuses == [401] * (login.EMAIL_LIMIT - 1) + [429] * 4, served
    assert len({pid for pid, _ in served}) == 2, served


async def _code_throttle(a: httpx.AsyncClient, b: httpx.AsyncClient, token: str) -> None:
    """Bad redemption codes of one client count together: THROTTLE_FAILURES checked in all."""
    served: list[tuple[str, str]] = []
    for n in range(member_codes.THROTTLE_FAILURES + 2):
        variables = {
            "input": {
                "redemptionCode": "".join(secrets.choice("0123456789") for _ in range(12)),
                "points": 1,
                "purchaseAmount": rub("10"),
                "orderRef": "o",
                "idempotencyKey": key(),
            }
        }
        r = await (a, b)[n % 2].post(
            "/graphql",
            json={"query": AUTHORIZE, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        served.append((r.headers[WORKER], r.json()["data"]["authorizeRedemption"]["code"]))
    codes = [c for _, c in served]
    assert codes.count("INVALID_REDEMPTION_CODE") == member_codes.THROTTLE_FAILURES, served
    assert codes[-2:] == ["LIMIT_EXCEEDED"] * 2, served
    assert len({pid for pid, _ in served}) == 2, served


async def _revocation(a: httpx.AsyncClient, b: httpx.AsyncClient, partner: Any) -> None:
    """A token revoked through one worker is refused by the other: at once in practice (the
    revocation's NOTIFY), polled here up to DEADLINE (gateway.oauth.revocation)."""
    token = (
        await a.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers=oh.basic_auth(partner.client_id, partner.client_secret),
        )
    ).json()["access_token"]

    async def typename(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post(
            "/graphql",
            json={"query": "{ __typename }"},
            headers={"Authorization": f"Bearer {token}"},
        )

    assert (await typename(b)).status_code == 200
    r = await a.post(
        "/oauth/revoke",
        data={"token": token},
        headers=oh.basic_auth(partner.client_id, partner.client_secret),
    )
    assert r.status_code == 200, r.text
    revoker = r.headers[WORKER]
    deadline = time.monotonic() + DEADLINE
    while True:
        r = await typename(b)
        if r.status_code == 401:
            break
        assert r.status_code == 200 and time.monotonic() < deadline, r.text
    assert r.headers[WORKER] != revoker
    assert r.json()["errors"][0]["extensions"]["code"] == "TOKEN_REVOKED"
    assert (await typename(a)).status_code == 401


async def _webhooks_delivered_once(
    a: httpx.AsyncClient,
    b: httpx.AsyncClient,
    token: str,
    engine: AsyncEngine,
    receiver: Receiver,
) -> None:
    """Both workers run a dispatcher: each event is delivered once (SKIP LOCKED claims)."""
    d = await gql(
        a,
        "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { __typename } }",
        {"input": {"url": f"http://127.0.0.1:{receiver.port}/h", "events": ["earn.recorded"]}},
        token,
    )
    assert d["createWebhook"]["__typename"] == "CreateWebhookSuccess", d
    earned = 12
    for n in range(earned):
        _, _, member = await oh.make_member(engine)
        variables = {
            "input": {
                "cardNumber": member.card_number,
                "amount": rub("100.00"),
                "category": "shop",
                "orderRef": f"o-{n}",
                "idempotencyKey": key(),
            }
        }
        d = await gql((a, b)[n % 2], EARN, variables, token)
        assert d["earn"]["__typename"] == "EarnSuccess", d
    deadline = time.monotonic() + DEADLINE
    while await _undelivered(engine):
        assert time.monotonic() < deadline, "webhooks not delivered"
        receiver.arrived.clear()
        try:  # woken by the next delivery, or the next poll
            await asyncio.wait_for(receiver.arrived.wait(), 0.5)
        except TimeoutError:
            pass
    ids = [event["id"] for event in receiver.delivered()]
    assert len(ids) == earned and len(set(ids)) == earned


async def _undelivered(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        n = await conn.execute(
            text("SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'")
        )
        return int(n.scalar_one())


async def _leader_failover(served: Served, roles: dict[int, str]) -> None:
    """The leader killed: uvicorn starts a new worker, and one worker (never two) leads."""
    leader = next(pid for pid, role in roles.items() if role == "leader")
    os.kill(leader, signal.SIGKILL)
    after = await served.workers(without=leader)
    assert leader not in after and sorted(after.values()) == ["leader", "standby"]
