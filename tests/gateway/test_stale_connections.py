"""The database goes away (issue 9, item 19): pooled connections whose backend was terminated are
replaced on checkout, so the next requests succeed; /healthz answers 503 with a JSON reason while
the database does not answer, never a 500."""

from __future__ import annotations

import psycopg
from sqlalchemy import text

from core.settings import Settings
from gateway.app import create_app
from tests.db import admin_uri
from tests.gateway.conftest import served_client
from tests.gateway.gql_helpers import (
    EARN,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

APP_NAME = "coalition-test-reconnect"  # application_name of this test's connections only


async def terminate_app_backends(engine) -> int:
    """pg_terminate_backend on every connection of the app under test; returns how many. The
    timeout makes each call return once that backend has exited (its socket is closed)."""
    async with engine.connect() as c:
        return await terminate_on(c)


async def terminate_on(conn) -> int:
    """`terminate_app_backends` on a connection the caller holds."""
    return (
        await conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) "
                "FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :app"
            ),
            {"app": APP_NAME},
        )
    ).scalar_one()


async def test_requests_after_the_database_terminated_the_backends_succeed(
    settings, db_uri, engine, monkeypatch
):
    monkeypatch.setenv("COALITION_APP", APP_NAME)
    app = create_app(settings, database_url=db_uri)
    async with served_client(app, raise_app_exceptions=False) as c:
        op = await operator_token(c, engine)
        partner = await setup_partner(c, op, name="Reconnect")
        member = await register_and_login(c)

        async def earn() -> dict:
            variables = {
                "input": {
                    "cardNumber": member.card,
                    "amount": rub("10.00"),
                    "orderRef": key(),
                    "idempotencyKey": key(),
                }
            }
            return (await gql(c, EARN, variables, partner.token))["earn"]

        assert (await earn())["__typename"] == "EarnSuccess"  # both pools hold connections now
        assert (await c.get("/healthz")).status_code == 200

        # Both pools: SQLAlchemy's (healthz, most resolvers) and psycopg's (the earn path).
        assert await terminate_app_backends(engine) >= 2

        r = await c.get("/healthz")
        assert (r.status_code, r.json()["status"]) == (200, "ok")
        assert (await earn())["__typename"] == "EarnSuccess"
        d = await gql(
            c, "query($p: ID!) { earnRule(partnerId: $p) { baseRate } }", {"p": partner.id}, op
        )
        assert d["earnRule"]["baseRate"]

        # Again, with the earn first: the psycopg pool's connections are replaced as well.
        assert await terminate_app_backends(engine) >= 1
        assert (await earn())["__typename"] == "EarnSuccess"
        assert (await c.get("/healthz")).status_code == 200


async def test_healthz_answers_503_with_a_reason_when_the_database_does_not_answer(settings):
    nowhere = "postgresql://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    app = create_app(
        Settings(**{**settings.model_dump(), "database_url": nowhere}), database_url=nowhere
    )
    async with served_client(app, raise_app_exceptions=False) as c:
        r = await c.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "reason": "database"}


async def test_an_earn_while_the_database_refuses_connections_is_a_503_to_retry_and_applies_once(
    settings, db_uri, engine, monkeypatch
):
    """The database is out of reach mid-request (its backends gone, new connections refused):
    the earn answers 503 with Retry-After and code UNAVAILABLE, never a 500 nor a masked
    "Unexpected error.", and nothing is applied; the same request once the database is back is
    applied, once."""
    monkeypatch.setenv("COALITION_APP", APP_NAME)
    quick = Settings(**{**settings.model_dump(), "db_pool_timeout_seconds": 0.5})
    app = create_app(quick, database_url=db_uri)
    async with (
        served_client(app, raise_app_exceptions=False) as c,
        engine.connect() as admin,
    ):
        await admin.execution_options(isolation_level="AUTOCOMMIT")
        db = (await admin.execute(text("SELECT current_database()"))).scalar_one()
        op = await operator_token(c, engine)
        partner = await setup_partner(c, op, name="Outage")
        member = await register_and_login(c)
        ref = key()
        body = {
            "query": EARN,
            "variables": {
                "input": {
                    "cardNumber": member.card,
                    "amount": rub("10.00"),
                    "orderRef": ref,
                    "idempotencyKey": ref,
                }
            },
        }
        auth = {"Authorization": f"Bearer {partner.token}"}

        async def applied() -> int:
            return (
                await admin.execute(
                    text("SELECT count(*) FROM transactions WHERE kind = 'earn' AND ref = :r"),
                    {"r": ref},
                )
            ).scalar_one()

        async def allow(yes: bool) -> None:  # from the maintenance database: not this one's
            async with await psycopg.AsyncConnection.connect(admin_uri(), autocommit=True) as pg:
                await pg.execute(f'ALTER DATABASE "{db}" WITH ALLOW_CONNECTIONS {yes}')

        await allow(False)
        try:
            await terminate_on(admin)
            r = await c.post("/graphql", json=body, headers=auth)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            [error] = r.json()["errors"]
            assert error["extensions"]["code"] == "UNAVAILABLE"
            assert await applied() == 0
        finally:
            await allow(True)
        r = await c.post("/graphql", json=body, headers=auth)
        assert r.status_code == 200 and r.json()["data"]["earn"]["__typename"] == "EarnSuccess"
        assert await applied() == 1
        again = await c.post("/graphql", json=body, headers=auth)  # a second retry: a replay
        assert (
            again.json()["data"]["earn"]["transaction"] == r.json()["data"]["earn"]["transaction"]
        )
        assert await applied() == 1
