"""The operator's console views through GraphQL: a partner's clients (list, rotate, disable),
a member looked up by card or email, the liability over time and the service's health."""

from __future__ import annotations

import httpx

from tests.gateway import oauth_helpers as oh
from tests.gateway.gql_helpers import (
    EARN,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

CLIENTS_Q = """query($p: ID!) { partnerClients(partnerId: $p) {
  clientId name scopes disabledAt previousSecretExpiresAt } }"""
ROTATE = """mutation($input: RotatePartnerClientSecretInput!) {
  rotatePartnerClientSecret(input: $input) { __typename
  ... on RotatePartnerClientSecretSuccess { clientId clientSecret scopes }
  ... on Error { code message } } }"""
DISABLE = """mutation($input: DisablePartnerClientInput!) {
  disablePartnerClient(input: $input) { __typename
  ... on DisablePartnerClientSuccess { client { clientId disabledAt } }
  ... on Error { code message } } }"""
LOOKUP = """query($card: String, $email: String) { memberLookup(cardNumber: $card, email: $email) {
  id cardNumber email balance { available pending } activity(first: 5) {
  edges { node { kind points orderRef } } } } }"""
HISTORY = "{ liabilityHistory(first: 3) { periodEnd totalPoints lines { points issuer { id } } } }"
HEALTH = """{ operatorHealth { lastExpiry { at points }
  requests { route requests clientErrors serverErrors } } }"""


async def token_status(client: httpx.AsyncClient, client_id: str, secret: str) -> int:
    r = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=oh.basic_auth(client_id, secret),
    )
    return r.status_code


async def test_partner_clients_rotate_and_disable(client, engine):
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Clients Co")
    d = await gql(client, CLIENTS_Q, {"p": p.id}, op)
    [listed] = d["partnerClients"]
    assert listed["clientId"] == p.client_id and listed["disabledAt"] is None
    assert "clientSecret" not in listed

    d = await gql(client, ROTATE, {"input": {"clientId": p.client_id, "graceHours": 0}}, op)
    rotated = d["rotatePartnerClientSecret"]
    assert rotated["__typename"] == "RotatePartnerClientSecretSuccess", rotated
    assert rotated["clientSecret"] != p.client_secret
    assert await token_status(client, p.client_id, rotated["clientSecret"]) == 200
    assert await token_status(client, p.client_id, p.client_secret) == 401

    d = await gql(client, DISABLE, {"input": {"clientId": p.client_id}}, op)
    assert d["disablePartnerClient"]["client"]["disabledAt"] is not None
    assert await token_status(client, p.client_id, rotated["clientSecret"]) == 401
    d = await gql(client, ROTATE, {"input": {"clientId": p.client_id}}, op)
    assert d["rotatePartnerClientSecret"]["code"] == "VALIDATION"

    # Only partner clients: not the operator's own, nor the public app or console.
    for other in ("coalition-app", "coalition-console", "no-such-client"):
        d = await gql(client, DISABLE, {"input": {"clientId": other}}, op)
        assert d["disablePartnerClient"]["code"] == "NOT_FOUND", other


async def test_only_the_operator_reaches_the_console_views(client, engine):
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Nosy Co")
    member = await register_and_login(client)
    for token in (p.token, member.token, None):
        for query, variables in (
            (CLIENTS_Q, {"p": p.id}),
            (LOOKUP, {"card": member.card}),
            (HISTORY, {}),
            (HEALTH, {}),
        ):
            r = await client.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}"} if token else {},
            )
            body = r.json()
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", (query, body)
        for mutation, field in (
            (ROTATE, "rotatePartnerClientSecret"),
            (DISABLE, "disablePartnerClient"),
        ):
            r = await client.post(
                "/graphql",
                json={"query": mutation, "variables": {"input": {"clientId": p.client_id}}},
                headers={"Authorization": f"Bearer {token}"} if token else {},
            )
            assert r.json()["data"][field]["code"] == "FORBIDDEN"
    assert await token_status(client, p.client_id, p.client_secret) == 200


async def test_member_lookup_by_card_or_email_with_history(client, engine):
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Lookup Co", base_rate="1")
    member = await register_and_login(client)
    d = await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": member.card,
                "amount": rub("250.00"),
                "category": "shop",
                "orderRef": "L-1",
                "idempotencyKey": key(),
            }
        },
        p.token,
    )
    assert d["earn"]["__typename"] == "EarnSuccess", d
    by_card = (await gql(client, LOOKUP, {"card": member.card}, op))["memberLookup"]
    by_email = (await gql(client, LOOKUP, {"email": member.email.upper()}, op))["memberLookup"]
    assert by_card == by_email and by_card["id"] == member.id
    assert by_card["balance"]["available"] == 250
    assert by_card["activity"]["edges"][0]["node"] == {
        "kind": "earn",
        "points": 250,
        "orderRef": "L-1",
    }
    assert (await gql(client, LOOKUP, {"email": "nobody@example.com"}, op))["memberLookup"] is None
    r = await client.post(
        "/graphql",
        json={"query": LOOKUP, "variables": {"card": "1234"}},
        headers={"Authorization": f"Bearer {op}"},
    )
    assert r.json()["errors"][0]["extensions"]["code"] == "VALIDATION"
    r = await client.post(
        "/graphql",
        json={"query": LOOKUP, "variables": {}},
        headers={"Authorization": f"Bearer {op}"},
    )
    assert r.json()["errors"][0]["extensions"]["code"] == "VALIDATION"


async def test_liability_history_and_health(client, engine):
    op = await operator_token(client, engine)
    d = await gql(client, HISTORY, {}, op)
    assert isinstance(d["liabilityHistory"], list)
    d = await gql(client, HEALTH, {}, op)
    routes = {r["route"]: r for r in d["operatorHealth"]["requests"]}
    assert routes["/graphql"]["requests"] >= 1
    assert routes["/oauth/token"]["requests"] >= 1
