"""Observability: /metrics after earns and redemptions, its token, the request id (header,
GraphQL errors, hostile headers replaced), the scheduler split, OpenTelemetry spans."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import text
from starlette.applications import Starlette

from core.settings import Settings
from gateway import metrics, tracing
from gateway.app import create_app, create_scheduler_app
from tests.gateway.conftest import served_client
from tests.gateway.gql_helpers import (
    AUTHORIZE,
    CAPTURE,
    CREATE_CODE,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

NAMED_EARN = """
mutation EarnForMetrics($input: EarnInput!) { earn(input: $input) {
  __typename ... on EarnSuccess { replayed transaction { id points } } ... on Error { code } } }
"""
ROOT = Path(__file__).resolve().parents[2]
HEX32 = re.compile(r"[0-9a-f]{32}")


def sample(body: str, name: str, **labels: str) -> float:
    """The value of the sample `name` with exactly `labels` in a /metrics answer; 0 if absent."""
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database-derived gauges read at every scrape (not cached), for exact deltas."""
    monkeypatch.setattr(metrics, "STATE_SECONDS", 0.0)


async def scrape(client: httpx.AsyncClient) -> str:
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    return r.text


async def test_metrics_after_an_earn_and_a_redemption(client, engine, fresh_state):
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Obs A", base_rate="0.2")
    m = await register_and_login(client)
    before = await scrape(client)

    earn = {
        "cardNumber": m.card,
        "amount": rub("1500.00"),
        "orderRef": "OBS-1",
        "idempotencyKey": key(),
    }
    first = (await gql(client, NAMED_EARN, {"input": earn}, a.token))["earn"]
    assert first["transaction"]["points"] == 300
    replay = (await gql(client, NAMED_EARN, {"input": earn}, a.token))["earn"]
    assert replay["replayed"] is True
    after_earn = await scrape(client)

    # Issued once (the replay adds nothing); outstanding +300 points worth 300 x 1.20 RUB.
    issued = "coalition_points_issued_total"
    assert sample(after_earn, issued, kind="earn") - sample(before, issued, kind="earn") == 300
    out = "coalition_points_outstanding"
    assert sample(after_earn, out) - sample(before, out) == 300
    value = "coalition_liability_value"
    assert sample(after_earn, value, currency="RUB") - sample(
        before, value, currency="RUB"
    ) == pytest.approx(360.0)
    # Per operation: both requests under the operation's own name, neither an error.
    ops = {"type": "mutation", "operation": "EarnForMetrics"}
    assert (
        sample(after_earn, "coalition_graphql_requests_total", **ops)
        - sample(before, "coalition_graphql_requests_total", **ops)
        == 2
    )
    assert sample(after_earn, "coalition_graphql_errors_total", **ops) == 0
    assert sample(after_earn, "coalition_graphql_request_duration_seconds_count", **ops) >= 2

    code = (await gql(client, CREATE_CODE, {"input": {"maxPoints": 200}}, m.token))[
        "createRedemptionCode"
    ]["code"]
    auth = {
        "redemptionCode": code,
        "points": 150,
        "purchaseAmount": rub("1000.00"),
        "orderRef": "OBS-B1",
        "idempotencyKey": key(),
    }
    held = (await gql(client, AUTHORIZE, {"input": auth}, a.token))["authorizeRedemption"]
    cap = {"holdId": held["hold"]["id"], "points": 100, "idempotencyKey": key()}
    assert (await gql(client, CAPTURE, {"input": cap}, a.token))["captureRedemption"][
        "__typename"
    ] == "CaptureRedemptionSuccess"
    assert (await gql(client, CAPTURE, {"input": cap}, a.token))["captureRedemption"]["replayed"]
    after_capture = await scrape(client)

    redeemed = "coalition_points_redeemed_total"
    assert (
        sample(after_capture, redeemed, kind="capture")
        - sample(after_earn, redeemed, kind="capture")
        == 100
    )
    assert sample(after_capture, out) - sample(after_earn, out) == -100
    assert sample(after_capture, value, currency="RUB") - sample(
        after_earn, value, currency="RUB"
    ) == pytest.approx(-120.0)


async def test_graphql_errors_and_anonymous_operations_are_counted_apart(client):
    before = await scrape(client)
    r = await client.post("/graphql", json={"query": "query NoSuchThing { nope }"})
    assert r.status_code == 200 and r.json()["errors"]
    r = await client.post("/graphql", json={"query": "{ __typename }"})
    assert r.status_code == 200 and "errors" not in r.json()
    after = await scrape(client)
    # A name first seen in a failed request takes no label of its own: "other".
    bad = {"type": "query", "operation": "other"}
    for name in ("coalition_graphql_requests_total", "coalition_graphql_errors_total"):
        assert sample(after, name, **bad) - sample(before, name, **bad) == 1, name
    assert (
        sample(after, "coalition_graphql_requests_total", type="query", operation="NoSuchThing")
        == 0
    )
    anon = {"type": "query", "operation": "anonymous"}
    assert (
        sample(after, "coalition_graphql_requests_total", **anon)
        - sample(before, "coalition_graphql_requests_total", **anon)
        == 1
    )


async def test_an_unknown_http_method_is_counted_as_other(client):
    r = await client.request("BREW", "/no/such/path/42")
    assert r.status_code in (404, 405)
    body = await scrape(client)
    assert (
        sample(
            body,
            "coalition_http_requests_total",
            route="unmatched",
            method="OTHER",
            status=str(r.status_code),
        )
        >= 1
    )
    assert 'method="BREW"' not in body and "/no/such/path/42" not in body


def test_operation_labels_are_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(metrics, "_known", set())
    monkeypatch.setattr(metrics, "MAX_OPERATIONS", 2)
    assert metrics.operation_label("A", admit=True) == "A"
    assert metrics.operation_label("B", admit=True) == "B"
    assert metrics.operation_label("C", admit=True) == "other"  # full
    assert metrics.operation_label("A", admit=False) == "A"
    assert metrics.operation_label(None, admit=True) == "anonymous"
    monkeypatch.setattr(metrics, "_known", set())
    assert metrics.operation_label("bad name\n", admit=True) == "other"
    assert metrics.operation_label("x" * 65, admit=True) == "other"


async def test_outbox_lag_is_the_age_of_the_oldest_pending_delivery(client, engine, fresh_state):
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Obs Hooks")
    async with engine.begin() as conn:
        hook = (
            await conn.execute(
                text(
                    "INSERT INTO webhooks (id, partner_id, url, secret, events, actor) VALUES "
                    "(gen_random_uuid(), :p, 'https://hooks.example.com/x', 's', '{earn}', 't') "
                    "RETURNING id"
                ),
                {"p": a.id},
            )
        ).scalar_one()
        # Due tomorrow: the app's dispatcher leaves it pending.
        await conn.execute(
            text(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, event_data, "
                "event_created_at, seq, created_at, next_attempt_at) VALUES (:h, "
                "gen_random_uuid(), 'earn', '{}', now(), 1, now() - interval '2 hours', "
                "now() + interval '1 day')"
            ),
            {"h": hook},
        )
    body = await scrape(client)
    assert sample(body, "coalition_webhook_outbox_lag_seconds") >= 7200
    assert sample(body, "coalition_webhook_pending_deliveries") >= 1
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE webhook_deliveries SET status = 'delivered' WHERE webhook_id = :h"),
            {"h": hook},
        )
    body = await scrape(client)
    assert sample(body, "coalition_webhook_outbox_lag_seconds") < 7200


@pytest.fixture
async def guarded(settings: Settings, db_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings.model_copy(update={"metrics_token": SecretStr("m-s3cret")}), database_url=db_uri
    )
    async with served_client(app) as c:
        yield c


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Bearer m-s3cre", "m-s3cret", "Basic m-s3cret"]
)
async def test_metrics_token_is_required_when_set(guarded, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    r = await guarded.get("/metrics", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHENTICATED"
    assert "coalition_" not in r.text


async def test_metrics_token_lets_the_scraper_in(guarded):
    r = await guarded.get("/metrics", headers={"Authorization": "Bearer m-s3cret"})
    assert r.status_code == 200 and "coalition_http_requests_total" in r.text


async def test_request_id_is_echoed_and_put_in_graphql_errors(client):
    r = await client.post(
        "/graphql", json={"query": "{ nope }"}, headers={"X-Request-ID": "req-42.a:b_c"}
    )
    assert r.headers["x-request-id"] == "req-42.a:b_c"
    assert r.json()["errors"][0]["extensions"]["requestId"] == "req-42.a:b_c"
    # Refusals before GraphQL runs (a bad token) carry it too.
    r = await client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 401
    rid = r.headers["x-request-id"]
    assert HEX32.fullmatch(rid) and r.json()["errors"][0]["extensions"]["requestId"] == rid


async def asgi_post(
    app: Starlette, headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[bytes, bytes], Any]:
    """POST /graphql straight through ASGI: headers no HTTP client would send."""
    body = json.dumps({"query": "{ nope }"}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(payload)


@pytest.mark.parametrize(
    "hostile",
    [
        b"abc\x00def",
        b"a" * 10_240,
        b"abc\ninjected",
        b"abc\r\nX-Evil: 1",
        b"",
        b"caf\xc3\xa9",
        b"a b",
    ],
    ids=["nul", "10kb", "newline", "crlf", "empty", "non-ascii", "space"],
)
async def test_a_hostile_request_id_is_replaced(app, hostile):
    _, headers, body = await asgi_post(app, [(b"x-request-id", hostile)])
    rid = headers[b"x-request-id"].decode()
    assert HEX32.fullmatch(rid), rid
    assert body["errors"][0]["extensions"]["requestId"] == rid


async def test_a_long_but_sane_request_id_is_kept(app):
    _, headers, _ = await asgi_post(app, [(b"x-request-id", b"a" * 128)])
    assert headers[b"x-request-id"] == b"a" * 128
    _, headers, _ = await asgi_post(app, [(b"x-request-id", b"a" * 129)])
    assert HEX32.fullmatch(headers[b"x-request-id"].decode())


async def test_scheduler_runs_apart_from_the_gateway(settings: Settings, db_uri: str):
    jobs_on = settings.model_copy(update={"settle_every_minutes": 60, "tier_review_day": "01-01"})
    gateway = create_app(jobs_on.model_copy(update={"scheduler": False}), database_url=db_uri)
    async with LifespanManager(gateway):
        assert gateway.state.scheduled == []
    gateway = create_app(jobs_on, database_url=db_uri)
    async with LifespanManager(gateway):
        assert len(gateway.state.scheduled) == 3
    sched = create_scheduler_app(jobs_on)
    async with served_client(sched) as c:
        assert len(sched.state.scheduled) == 3
        health = (await c.get("/healthz")).json()
        assert (health["status"], health["scheduler"]) == ("ok", "dedicated")
        assert "coalition_settlement_run_seconds" in (await c.get("/metrics")).text
        assert (await c.post("/graphql", json={"query": "{ __typename }"})).status_code == 404


async def test_a_graphql_request_is_traced_with_its_sql(settings: Settings, db_uri: str, engine):
    exporter = InMemorySpanExporter()
    app = create_app(settings, database_url=db_uri)
    tracing.enable(app, settings, exporter=exporter)
    async with served_client(app) as c:
        exporter.clear()  # the lifespan's own statements
        op = await operator_token(c, engine)
        exporter.clear()
        r = await c.post(
            "/graphql",
            json={"query": "query Periods { settlementPeriods(first: 1) { edges { cursor } } }"},
            headers={"Authorization": f"Bearer {op}"},
        )
        assert r.status_code == 200 and "errors" not in r.json(), r.text
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1 and roots[0].name.startswith("POST"), [s.name for s in spans]
    root = roots[0]
    db = [s for s in spans if s.attributes and "db.statement" in s.attributes]
    db = db or [s for s in spans if s.attributes and "db.query.text" in s.attributes]
    assert db, [(s.name, dict(s.attributes or {})) for s in spans]
    assert all(s.context.trace_id == root.context.trace_id for s in db)
    by_id = {s.context.span_id: s for s in spans}
    for s in db:  # each SQL span hangs under the request's span
        node = s
        while node.parent is not None:
            node = by_id[node.parent.span_id]
        assert node is root


def test_tracing_is_off_by_default(settings: Settings):
    assert settings.otel_exporter_otlp_endpoint is None
    assert getattr(create_app(settings).state, "tracer_provider", None) is None
    on = settings.model_copy(update={"otel_exporter_otlp_endpoint": "http://127.0.0.1:4318"})
    traced = create_app(on)
    assert traced.state.tracer_provider is not None
    tracing.shutdown(traced)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_logs_json_lines_with_the_request_id(db_uri: str, tmp_path: Path):
    """`coalition serve` with LOG_FORMAT=json: every line of its output is one JSON object, and
    the request's lines (uvicorn's access line) carry its id."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_uri,
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
        "WEBHOOK_WORKERS": "0",
        "IMPORT_WORKERS": "0",
        "REFERRAL_SWEEP_MINUTES": "0",
    }
    out = tmp_path / "serve.log"
    with out.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:  # until it answers (or gives up)
                assert server.poll() is None, out.read_text()
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, out.read_text()
                    time.sleep(0.1)
            r = httpx.post(
                f"{base}/graphql",
                json={"query": "{ nope }"},
                headers={"X-Request-ID": "log-line-7"},
            )
            assert r.headers["x-request-id"] == "log-line-7"
            assert r.json()["errors"][0]["extensions"]["requestId"] == "log-line-7"
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    lines = [line for line in out.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # each line is one JSON object
    assert all({"timestamp", "level", "logger", "message"} <= r.keys() for r in records), lines
    mine = [r for r in records if r.get("request_id") == "log-line-7"]
    assert mine and any("/graphql" in r["message"] for r in mine), lines


async def test_settlement_and_expiry_runs_are_timed(client, engine, settings: Settings):
    from gateway.app import settle_with
    from ledger import service as ledger

    before = await scrape(client)
    report = await settle_with(engine, settings)
    assert not report.skipped
    await ledger.expire_points(engine)
    after = await scrape(client)
    for name in ("coalition_settlement_run_seconds_count", "coalition_expiry_run_seconds_count"):
        assert sample(after, name) - sample(before, name) == 1, name
