"""The member app over HTTP (the browser tests drive it in Chromium, tests/browser): its page
and assets, the Content-Security-Policy it lives under, its QR route, and what it reads that
the API added for it (`me { pendingPoints }`, `earnRule` for members)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import httpx

from gateway.memberapp.routes import ASSETS
from tests.gateway.gql_helpers import (
    EARN,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

PENDING = "{ me { balance { pending } pendingPoints { points availableAt } } }"
EARN_RULE = "query($p: ID!) { earnRule(partnerId: $p) { baseRate holdDays } }"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
ASSET_LINK = re.compile(r'(?:src|href)="(/app/assets/[^"]+)"')


async def test_the_app_and_its_callback_are_served_under_a_strict_policy(client):
    for path in ("/app", "/app/", "/app/callback?code=x&state=y"):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["referrer-policy"] == "no-referrer"  # the callback's code stays here
        assert not INLINE_SCRIPT.search(r.text), "an inline script would be refused by the CSP"
    for asset in ASSET_LINK.findall((await client.get("/app")).text):
        assert (await client.get(asset)).status_code == 200, asset


async def test_the_assets_have_no_inline_handlers_or_styles():
    for path in ASSETS.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "innerHTML" not in text, path  # text is never parsed as HTML
        if path.suffix == ".html":
            assert " style=" not in text and " onclick=" not in text, path
            assert "<style" not in text, path


async def test_qr_needs_a_member_token(client, engine):
    r = await client.post("/app/qr", json={"text": "123456789012"})
    assert r.status_code == 401
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="QR partner")
    r = await client.post(
        "/app/qr",
        json={"text": "123456789012"},
        headers={"Authorization": f"Bearer {partner.token}"},
    )
    assert r.status_code == 401, r.text
    r = await client.post(
        "/app/qr", json={"text": "1"}, headers={"Authorization": "Bearer not-a-token"}
    )
    assert r.status_code == 401


async def test_qr_draws_the_code_as_svg_and_refuses_anything_else(client):
    member = await register_and_login(client)
    auth = {"Authorization": f"Bearer {member.token}"}
    r = await client.post("/app/qr", json={"text": "123456789012"}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert r.headers["cache-control"] == "no-store"
    assert r.text.startswith("<svg") and "<path" in r.text
    for body in (
        b'{"text": ""}',
        b'{"text": "' + b"1" * 65 + b'"}',
        b'{"text": "a\\nb"}',
        b'{"text": 5}',
        b"[1]",
        b"not json",
    ):
        r = await client.post(
            "/app/qr", content=body, headers={**auth, "Content-Type": "application/json"}
        )
        assert r.status_code == 400, body
        assert r.json()["error"]["code"] == "VALIDATION"
    r = await client.post(
        "/app/qr",
        content=b'{"text": "' + b"1" * 2000 + b'"}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 413


async def test_pending_points_come_with_the_date_each_part_becomes_available(client, engine):
    op = await operator_token(client, engine)
    week = await setup_partner(client, op, name="Week hold", base_rate="1", hold_days=7)
    month = await setup_partner(client, op, name="Month hold", base_rate="1", hold_days=30)
    now = await setup_partner(client, op, name="No hold", base_rate="1", hold_days=0)
    member = await register_and_login(client)
    for partner, amount in ((week, "100.00"), (week, "50.00"), (month, "30.00"), (now, "5.00")):
        d = await gql(
            client,
            EARN,
            {
                "input": {
                    "cardNumber": member.card,
                    "amount": rub(amount),
                    "category": "shop",
                    "orderRef": key(),
                    "idempotencyKey": key(),
                }
            },
            partner.token,
        )
        assert d["earn"]["__typename"] == "EarnSuccess", d
    me = (await gql(client, PENDING, token=member.token))["me"]
    parts = me["pendingPoints"]
    assert sum(p["points"] for p in parts) == me["balance"]["pending"] == 180
    days = [datetime.fromisoformat(p["availableAt"]) for p in parts]
    assert days == sorted(days)
    assert [p["points"] for p in parts][-1] == 30
    assert days[-1] - days[0] > timedelta(days=20)


async def test_a_member_reads_each_partners_earn_rule(client, engine):
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Rates", base_rate="0.5", hold_days=3)
    member = await register_and_login(client)
    d = await gql(client, EARN_RULE, {"p": partner.id}, member.token)
    assert d["earnRule"]["holdDays"] == 3 and float(d["earnRule"]["baseRate"]) == 0.5


async def test_an_anonymous_caller_reads_no_earn_rule(client: httpx.AsyncClient, engine):
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Hidden rates")
    r = await client.post("/graphql", json={"query": EARN_RULE, "variables": {"p": partner.id}})
    body = r.json()
    assert body.get("data") is None or body["data"].get("earnRule") is None, body
