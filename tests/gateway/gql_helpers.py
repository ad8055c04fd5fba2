"""GraphQL helpers for gateway tests: operations as module-level strings, a caller, a world."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.gateway import oauth_helpers as oh

CREATE_PARTNER = """
mutation($input: CreatePartnerInput!) { createPartner(input: $input) {
  __typename ... on CreatePartnerSuccess { partner { id name currency } } ... on Error { code message } } }
"""
SET_AGREEMENT = """
mutation($input: SetAgreementInput!) { setAgreement(input: $input) {
  __typename ... on SetAgreementSuccess { agreement { id issuePrice { amount currency } } }
  ... on Error { code message } } }
"""
SET_EARN_RULE = """
mutation($input: SetEarnRuleInput!) { setEarnRule(input: $input) {
  __typename ... on SetEarnRuleSuccess { earnRule { baseRate holdDays maxRedeemShare } }
  ... on Error { code message } } }
"""
CREATE_CLIENT = """
mutation($input: CreatePartnerClientInput!) { createPartnerClient(input: $input) {
  __typename ... on CreatePartnerClientSuccess { clientId clientSecret scopes }
  ... on Error { code message } } }
"""
REGISTER = """
mutation($input: RegisterMemberInput!) { registerMember(input: $input) {
  __typename ... on RegisterMemberSuccess { member { id cardNumber } } ... on Error { code message } } }
"""
EARN = """
mutation($input: EarnInput!) { earn(input: $input) {
  __typename ... on EarnSuccess { replayed transaction { id points status availableAt } }
  ... on Error { code message } } }
"""
REFUND = """
mutation($input: RefundInput!) { refund(input: $input) {
  __typename ... on RefundSuccess { replayed refund { id pointsReversed pointsReturned } }
  ... on Error { code message } } }
"""
AUTHORIZE = """
mutation($input: AuthorizeRedemptionInput!) { authorizeRedemption(input: $input) {
  __typename ... on AuthorizeRedemptionSuccess { replayed hold { id points expiresAt status } }
  ... on Error { code message } } }
"""
CAPTURE = """
mutation($input: CaptureRedemptionInput!) { captureRedemption(input: $input) {
  __typename ... on CaptureRedemptionSuccess { replayed releasedPoints transaction { id points } }
  ... on Error { code message } } }
"""
VOID = """
mutation($input: VoidRedemptionInput!) { voidRedemption(input: $input) {
  __typename ... on VoidRedemptionSuccess { replayed hold { id status } } ... on Error { code message } } }
"""
CREATE_CODE = """
mutation($input: CreateRedemptionCodeInput) { createRedemptionCode(input: $input) {
  __typename ... on CreateRedemptionCodeSuccess { code expiresAt } ... on Error { code message } } }
"""
ME = """
query($first: Int!, $after: String) { me { id cardNumber tier balance { available pending onHold total debt }
  expiringPoints
  activity(first: $first, after: $after) { edges { cursor node { kind points orderRef partner { id name } } }
    pageInfo { hasNextPage endCursor } } } }
"""


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


async def operator_token(client: httpx.AsyncClient, engine: AsyncEngine) -> str:
    creds = await oh.make_operator_client(engine)
    return (await oh.client_credentials_token(client, creds))["access_token"]  # type: ignore[no-any-return]


@dataclass
class PartnerHandle:
    id: str
    client_id: str
    client_secret: str
    token: str


async def setup_partner(
    client: httpx.AsyncClient,
    op: str,
    *,
    name: str,
    base_rate: str = "0.1",
    category_rates: list[dict[str, str]] | None = None,
    hold_days: int = 0,
    max_redeem_share: str = "1",
    scopes: list[str] | None = None,
) -> PartnerHandle:
    """A partner made entirely through the operator API, with a client and a token."""
    d = await gql(
        client, CREATE_PARTNER, {"input": {"name": name, "category": "shop", "currency": "RUB"}}, op
    )
    pid = d["createPartner"]["partner"]["id"]
    d = await gql(
        client,
        SET_AGREEMENT,
        {
            "input": {
                "partnerId": pid,
                "issuePrice": "1.20",
                "redemptionPrice": "0.95",
                "effectiveFrom": "2020-01-01T00:00:00Z",
            }
        },
        op,
    )
    assert d["setAgreement"]["__typename"] == "SetAgreementSuccess", d
    d = await gql(
        client,
        SET_EARN_RULE,
        {
            "input": {
                "partnerId": pid,
                "baseRate": base_rate,
                "categoryRates": category_rates or [],
                "holdDays": hold_days,
                "maxRedeemShare": max_redeem_share,
            }
        },
        op,
    )
    assert d["setEarnRule"]["__typename"] == "SetEarnRuleSuccess", d
    d = await gql(
        client,
        CREATE_CLIENT,
        {
            "input": {
                "partnerId": pid,
                "scopes": scopes or ["points:earn", "points:redeem", "settlement:read"],
            }
        },
        op,
    )
    c = d["createPartnerClient"]
    token = (await oh.client_credentials_token(client, _Creds(c["clientId"], c["clientSecret"])))[
        "access_token"
    ]
    return PartnerHandle(pid, c["clientId"], c["clientSecret"], token)


@dataclass
class _Creds:
    client_id: str
    client_secret: str


@dataclass
class MemberHandle:
    id: str
    card: str
    email: str
    password: str
    token: str


async def register_and_login(client: httpx.AsyncClient) -> MemberHandle:
    """registerMember (anonymous), then log in through the HTML form with PKCE."""
    email, password = f"m-{secrets.token_hex(5)}@example.com", "s3cret-pass-" + secrets.token_hex(3)
    d = await gql(
        client, REGISTER, {"input": {"email": email, "password": password, "name": "Mia"}}
    )
    m = d["registerMember"]["member"]
    tokens = await oh.member_tokens(client, email=email, password=password)
    return MemberHandle(m["id"], m["cardNumber"], email, password, tokens["access_token"])


def key() -> str:
    return "k-" + secrets.token_hex(8)


def rub(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "RUB"}
