"""A subscription lives no longer than its token: the socket is closed (4401) when the token is
revoked or expires; and a principal may hold only WS_MAX_PER_PRINCIPAL sockets (4429)."""

from __future__ import annotations

import asyncio
import base64
import json
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from sqlalchemy import text

from core import clock
from gateway.oauth import revocation
from tests.gateway.gql_helpers import register_and_login
from tests.gateway.oauth_helpers import APP_CLIENT_ID

SUB = "subscription { myBalance(everySeconds: 1) { available total } }"


async def _next(ws) -> dict:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.receive_text(), timeout=30))
        if msg["type"] != "ping":
            return msg


async def _subscribed(ws, token: str) -> None:
    """connection_init with the token, then myBalance; returns after its first value."""
    await ws.send_text(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    assert (await _next(ws))["type"] == "connection_ack"
    await ws.send_text(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUB}}))
    first = await _next(ws)
    assert first["type"] == "next", first


def _wsc(app) -> httpx.AsyncClient:
    """A client for websockets to `app` (entered in the test itself: its transport's tasks
    must end in the task that started them)."""
    return httpx.AsyncClient(transport=ASGIWebSocketTransport(app), base_url="http://testserver")


def _ws(wsc):
    return aconnect_ws("/graphql", wsc, subprotocols=["graphql-transport-ws"])


async def test_revoking_the_token_closes_the_subscription(app, client):
    member = await register_and_login(client)
    async with _wsc(app) as wsc, _ws(wsc) as ws:
        await _subscribed(ws, member.token)
        r = await client.post(
            "/oauth/revoke",
            data={
                "token": member.token,
                "token_type_hint": "access_token",
                "client_id": APP_CLIENT_ID,
            },
        )
        assert r.status_code == 200, r.text
        with pytest.raises(WebSocketDisconnect) as closed:
            await _next(ws)
    assert closed.value.code == 4401 and closed.value.reason == "token revoked"


async def test_a_revocation_by_another_process_closes_the_subscription(
    app, client, engine, monkeypatch
):
    """Another process's revocation reaches this one when its list reloads (here: at once)."""
    monkeypatch.setattr(revocation, "REFRESH_SECONDS", 0.01)
    member = await register_and_login(client)
    async with _wsc(app) as wsc, _ws(wsc) as ws:
        await _subscribed(ws, member.token)
        async with engine.begin() as conn:  # as another process's /oauth/revoke would
            await conn.execute(
                text(
                    "INSERT INTO oauth_revoked_tokens (jti, expires_at, revoked_at) "
                    "VALUES (:j, now() + interval '10 minutes', now())"
                ),
                {"j": _claims(member.token)["jti"]},
            )
        with pytest.raises(WebSocketDisconnect) as closed:
            await _next(ws)
    assert closed.value.code == 4401 and closed.value.reason == "token revoked"


async def test_an_expired_token_closes_the_subscription(app, client, monkeypatch):
    member = await register_and_login(client)
    claims = _claims(member.token)
    expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    # The clock a moment before the token's end: it is accepted, and the server's deadline for
    # it is that moment away.
    monkeypatch.setattr(clock, "utcnow", lambda: expires_at - timedelta(milliseconds=200))
    async with _wsc(app) as wsc, _ws(wsc) as ws:
        await _subscribed(ws, member.token)
        monkeypatch.setattr(clock, "utcnow", lambda: expires_at + timedelta(seconds=1))
        with pytest.raises(WebSocketDisconnect) as closed:
            await _next(ws)
    assert closed.value.code == 4401 and closed.value.reason == "token expired"


async def test_sockets_per_principal_are_bounded(app, client, settings):
    member = await register_and_login(client)
    limit = settings.ws_max_per_principal
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {member.token}"}}
    async with _wsc(app) as wsc:
        async with AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(_ws(wsc)) for _ in range(limit)]
            for ws in sockets:
                await _subscribed(ws, member.token)
            async with _ws(wsc) as extra:
                await extra.send_text(json.dumps(init))
                with pytest.raises(WebSocketDisconnect) as refused:
                    await _next(extra)
            assert refused.value.code == 4429 and "too many" in refused.value.reason
            # Another member is not affected.
            other = await register_and_login(client)
            async with _ws(wsc) as ws:
                await _subscribed(ws, other.token)
        # Closed sockets give their slots back.
        async with _ws(wsc) as ws:
            await _subscribed(ws, member.token)


def _claims(token: str) -> dict:
    """The token's claims, unverified (the test only needs its `exp`)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
