"""Subscriptions over graphql-transport-ws on /graphql: the member's balance, pushed when it
changes; the token in connection_init (as a browser sends it) or refused."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from tests.gateway.gql_helpers import (
    EARN,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

SUB = "subscription { myBalance(everySeconds: 1) { available total } }"


async def _next(ws) -> dict:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.receive_text(), timeout=30))
        if msg["type"] != "ping":
            return msg


async def test_member_balance_is_pushed_when_it_changes(app, client, engine):
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Pusher", base_rate="1")
    member = await register_and_login(client)
    async with httpx.AsyncClient(
        transport=ASGIWebSocketTransport(app), base_url="http://testserver"
    ) as wsc:
        async with aconnect_ws("/graphql", wsc, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send_text(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"Authorization": f"Bearer {member.token}"},
                    }
                )
            )
            assert (await _next(ws))["type"] == "connection_ack"
            await ws.send_text(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUB}})
            )
            first = await _next(ws)
            assert first["type"] == "next" and first["payload"]["data"]["myBalance"] == {
                "available": 0,
                "total": 0,
            }
            await gql(
                client,
                EARN,
                {
                    "input": {
                        "cardNumber": member.card,
                        "amount": rub("250"),
                        "orderRef": key(),
                        "idempotencyKey": key(),
                    }
                },
                partner.token,
            )
            pushed = await _next(ws)  # the next message is the changed balance
            assert pushed["payload"]["data"]["myBalance"] == {"available": 250, "total": 250}
            await ws.send_text(json.dumps({"id": "1", "type": "complete"}))


async def test_subscription_needs_a_member_token(app, client, engine):
    op = await operator_token(client, engine)
    async with httpx.AsyncClient(
        transport=ASGIWebSocketTransport(app), base_url="http://testserver"
    ) as wsc:
        # A bad token in connection_init: the connection is refused (4403).
        async with aconnect_ws("/graphql", wsc, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send_text(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": "Bearer garbage"}}
                )
            )
            with pytest.raises(WebSocketDisconnect) as refused:
                await _next(ws)
        assert refused.value.code == 4403
        # A valid operator token: connected, but the member-only field is refused.
        async with aconnect_ws("/graphql", wsc, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send_text(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {op}"}}
                )
            )
            assert (await _next(ws))["type"] == "connection_ack"
            await ws.send_text(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUB}})
            )
            msg = await _next(ws)
            errors = msg["payload"] if msg["type"] == "error" else msg["payload"].get("errors")
            assert errors and errors[0]["extensions"]["code"] == "FORBIDDEN", msg
