"""A partner integrates with stock tools: authlib's OAuth2 client for the token, `gql` for
GraphQL; and ten codes of one member authorized at once never take more than the balance."""

from __future__ import annotations

import asyncio

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from gql import Client
from gql import gql as parse
from gql.transport.httpx import HTTPXAsyncTransport
from sqlalchemy import text

from tests.gateway.gql_helpers import (
    AUTHORIZE,
    CREATE_CODE,
    EARN,
    ME,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

BASE = "http://testserver"


async def test_stock_oauth_and_graphql_clients(app, client, engine):
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Stock Tools Inc", base_rate="0.5")
    member = await register_and_login(client)

    async with AsyncOAuth2Client(
        client_id=partner.client_id,
        client_secret=partner.client_secret,
        token_endpoint_auth_method="client_secret_basic",
        transport=httpx.ASGITransport(app=app),
        base_url=BASE,
    ) as oauth:
        token = await oauth.fetch_token(f"{BASE}/oauth/token", grant_type="client_credentials")
    assert token["token_type"].lower() == "bearer" and "points:earn" in token["scope"].split()

    transport = HTTPXAsyncTransport(
        url=f"{BASE}/graphql",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        transport=httpx.ASGITransport(app=app),
    )
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        request = parse(EARN)
        request.variable_values = {
            "input": {
                "cardNumber": member.card,
                "amount": rub("200.00"),
                "orderRef": "stock-1",
                "idempotencyKey": key(),
            }
        }
        result = await session.execute(request)
    assert result["earn"]["__typename"] == "EarnSuccess"
    assert result["earn"]["transaction"]["points"] == 100


async def test_ten_codes_authorized_at_once_never_exceed_the_balance(client, engine):
    op = await operator_token(client, engine)
    earner = await setup_partner(client, op, name="Earner", base_rate="1")
    shop = await setup_partner(client, op, name="Shop")
    m = await register_and_login(client)
    await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": m.card,
                "amount": rub("350"),
                "orderRef": "e1",
                "idempotencyKey": key(),
            }
        },
        earner.token,
    )
    codes = [
        (await gql(client, CREATE_CODE, {"input": {}}, m.token))["createRedemptionCode"]["code"]
        for _ in range(10)
    ]

    async def spend(code: str) -> str:
        d = await gql(
            client,
            AUTHORIZE,
            {
                "input": {
                    "redemptionCode": code,
                    "points": 100,
                    "purchaseAmount": rub("1000"),
                    "orderRef": key(),
                    "idempotencyKey": key(),
                }
            },
            shop.token,
        )
        return d["authorizeRedemption"].get("code") or "OK"

    outcomes = await asyncio.gather(*(spend(c) for c in codes))
    assert outcomes.count("OK") == 3 and outcomes.count("INSUFFICIENT_POINTS") == 7
    bal = (await gql(client, ME, {"first": 1}, m.token))["me"]["balance"]
    assert bal == {"available": 50, "pending": 0, "onHold": 300, "total": 350, "debt": 0}
    async with engine.connect() as conn:
        used = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM redemption_codes WHERE member_id = :m AND used_at IS NOT NULL"
                ),
                {"m": m.id},
            )
        ).scalar_one()
    assert used == 3  # the refused ones stay usable
