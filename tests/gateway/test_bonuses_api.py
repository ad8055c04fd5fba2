"""Bonuses, referrals and transfers through GraphQL: the operator's rules, registration with a
referral code, `me { referralCode }`, a partner's `awardBonus`, a member's `transferPoints`, and
what both sides see in `me { activity }`."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.gateway import oauth_helpers as oh
from tests.gateway.gql_helpers import (
    CREATE_CLIENT,
    CREATE_PARTNER,
    EARN,
    SET_AGREEMENT,
    MemberHandle,
    PartnerHandle,
    gql,
    key,
    operator_token,
    rub,
    setup_partner,
)

SET_RULES = """
mutation($input: SetBonusRulesInput!) { setBonusRules(input: $input) { __typename
  ... on SetBonusRulesSuccess { bonusRules { signupPoints referralPoints recordedAt } }
  ... on ValidationError { code field } ... on Error { code message } } }
"""
RULES = "{ bonusRules { signupPoints referralPoints recordedAt } }"
REGISTER = """
mutation($input: RegisterMemberInput!) { registerMember(input: $input) { __typename
  ... on RegisterMemberSuccess { member { id cardNumber } }
  ... on ValidationError { code field } ... on Error { code message } } }
"""
AWARD = """
mutation($input: AwardBonusInput!) { awardBonus(input: $input) { __typename
  ... on AwardBonusSuccess { replayed bonus { id points reason } }
  ... on ValidationError { code field } ... on Error { code message } } }
"""
TRANSFER = """
mutation($input: TransferPointsInput!) { transferPoints(input: $input) { __typename
  ... on TransferPointsSuccess { replayed transfer { id points } }
  ... on ValidationError { code field } ... on Error { code message } } }
"""
ME = """
{ me { referralCode balance { available }
  activity(first: 20) { edges { node { kind points reason counterpartyCard orderRef
    partner { name } } } } } }
"""


async def join(
    client: httpx.AsyncClient, referral_code: str | None = None
) -> tuple[dict[str, Any], MemberHandle | None]:
    """registerMember (with a referral code if given), then a login when it succeeded."""
    email, password = f"b-{secrets.token_hex(5)}@example.com", "bonus-pass-" + secrets.token_hex(3)
    member_input: dict[str, Any] = {"email": email, "password": password, "name": "B"}
    if referral_code is not None:
        member_input["referralCode"] = referral_code
    result = (await gql(client, REGISTER, {"input": member_input}))["registerMember"]
    if result["__typename"] != "RegisterMemberSuccess":
        return result, None
    m = result["member"]
    tokens = await oh.member_tokens(client, email=email, password=password)
    return result, MemberHandle(m["id"], m["cardNumber"], email, password, tokens["access_token"])


async def member(client: httpx.AsyncClient, referral_code: str | None = None) -> MemberHandle:
    result, handle = await join(client, referral_code)
    assert handle is not None, result
    return handle


async def me(client: httpx.AsyncClient, m: MemberHandle) -> dict[str, Any]:
    return (await gql(client, ME, {}, m.token))["me"]  # type: ignore[no-any-return]


async def earn(client: httpx.AsyncClient, p: PartnerHandle, card: str, amount: str) -> None:
    d = await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": card,
                "amount": rub(amount),
                "orderRef": key(),
                "idempotencyKey": key(),
            }
        },
        p.token,
    )
    assert d["earn"]["__typename"] == "EarnSuccess", d


class _Creds:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret


@pytest.fixture
async def op(client, engine) -> str:
    return await operator_token(client, engine)


async def set_rules(client: httpx.AsyncClient, op: str, signup: int, referral: int) -> None:
    d = await gql(
        client, SET_RULES, {"input": {"signupPoints": signup, "referralPoints": referral}}, op
    )
    assert d["setBonusRules"]["__typename"] == "SetBonusRulesSuccess", d


async def test_the_operator_sets_and_reads_the_bonus_rules(client, op):
    d = await gql(client, SET_RULES, {"input": {"signupPoints": 100, "referralPoints": 500}}, op)
    rules = d["setBonusRules"]["bonusRules"]
    assert (rules["signupPoints"], rules["referralPoints"]) == (100, 500) and rules["recordedAt"]
    assert (await gql(client, RULES, {}, op))["bonusRules"] == rules
    d = await gql(client, SET_RULES, {"input": {"signupPoints": -1, "referralPoints": 500}}, op)
    refused = d["setBonusRules"]
    assert (refused["__typename"], refused["field"]) == ("ValidationError", "signupPoints")
    assert (await gql(client, RULES, {}, op))["bonusRules"] == rules


async def test_a_referred_member_and_the_referrer_get_the_bonus_after_the_first_earn(client, op):
    await set_rules(client, op, signup=100, referral=500)
    partner = await setup_partner(client, op, name="Referral station", base_rate="1")
    referrer = await member(client)
    code = (await me(client, referrer))["referralCode"]
    assert len(code) == 8
    friend = await member(client, referral_code=code)
    assert (await me(client, friend))["balance"]["available"] == 100  # the sign-up bonus
    assert (await me(client, referrer))["balance"]["available"] == 100

    await earn(client, partner, friend.card, "250")
    await earn(client, partner, friend.card, "50")
    mine, theirs = await me(client, friend), await me(client, referrer)
    assert mine["balance"]["available"] == 100 + 250 + 50 + 500
    assert theirs["balance"]["available"] == 100 + 500
    bonus_lines = [
        (n["kind"], n["points"], n["reason"], n["partner"], n["orderRef"])
        for n in (e["node"] for e in mine["activity"]["edges"])
        if n["kind"] == "bonus"
    ]
    assert bonus_lines == [
        ("bonus", 500, "referral", None, None),
        ("bonus", 100, "signup", None, None),
    ]


@pytest.mark.parametrize("code", ["ZZZZZZZZ", "nope", ""])
async def test_registration_with_an_unknown_referral_code_creates_nothing(client, engine, op, code):
    async with engine.connect() as conn:
        before = (await conn.execute(text("SELECT count(*) FROM members"))).scalar_one()
    result, handle = await join(client, referral_code=code or " ")
    if not code:  # a blank code is no code
        assert handle is not None
        return
    assert handle is None
    assert (result["__typename"], result["field"]) == ("ValidationError", "referralCode")
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM members"))).scalar_one() == before


async def test_a_partner_awards_its_own_bonus(client, op):
    await set_rules(client, op, signup=0, referral=0)
    partner = await setup_partner(client, op, name="Reviewed cinema")
    m = await member(client)
    award = {"cardNumber": m.card, "points": 40, "reason": " Film review ", "idempotencyKey": "r1"}
    d = (await gql(client, AWARD, {"input": award}, partner.token))["awardBonus"]
    assert d["__typename"] == "AwardBonusSuccess" and not d["replayed"], d
    assert (d["bonus"]["points"], d["bonus"]["reason"]) == (40, "Film review")
    again = (await gql(client, AWARD, {"input": award}, partner.token))["awardBonus"]
    assert again["replayed"] and again["bonus"]["id"] == d["bonus"]["id"]
    conflict = (await gql(client, AWARD, {"input": {**award, "points": 41}}, partner.token))[
        "awardBonus"
    ]
    assert conflict["code"] == "IDEMPOTENCY_CONFLICT"
    for bad, field in [({"points": 0}, "points"), ({"reason": ""}, "reason")]:
        refused = (await gql(client, AWARD, {"input": {**award, **bad}}, partner.token))[
            "awardBonus"
        ]
        assert (refused["code"], refused["field"]) == ("VALIDATION", field)
    unknown = {**award, "cardNumber": "7000000000000005", "idempotencyKey": "r2"}
    assert (await gql(client, AWARD, {"input": unknown}, partner.token))["awardBonus"]["code"] in {
        "MEMBER_NOT_FOUND"
    }
    mine = await me(client, m)
    assert mine["balance"]["available"] == 40
    (line,) = (e["node"] for e in mine["activity"]["edges"])
    assert (line["kind"], line["points"], line["reason"], line["partner"]) == (
        "bonus",
        40,
        "Film review",
        {"name": "Reviewed cinema"},
    )


async def test_a_partner_without_an_agreement_in_force_cannot_award(client, op):
    await set_rules(client, op, signup=0, referral=0)
    d = await gql(
        client,
        CREATE_PARTNER,
        {"input": {"name": "Future", "category": "c", "currency": "RUB"}},
        op,
    )
    pid = d["createPartner"]["partner"]["id"]
    agreement = {
        "partnerId": pid,
        "issuePrice": "1",
        "redemptionPrice": "1",
        "effectiveFrom": "2999-01-01T00:00:00Z",
    }
    await gql(client, SET_AGREEMENT, {"input": agreement}, op)
    c = (
        await gql(
            client, CREATE_CLIENT, {"input": {"partnerId": pid, "scopes": ["points:earn"]}}, op
        )
    )["createPartnerClient"]
    token = (await oh.client_credentials_token(client, _Creds(c["clientId"], c["clientSecret"])))[
        "access_token"
    ]
    m = await member(client)
    award = {"cardNumber": m.card, "points": 40, "reason": "Review", "idempotencyKey": key()}
    d = (await gql(client, AWARD, {"input": award}, token))["awardBonus"]
    assert d["code"] == "NO_AGREEMENT"
    assert (await me(client, m))["balance"]["available"] == 0


async def test_a_transfer_shows_on_both_sides(client, op):
    await set_rules(client, op, signup=0, referral=0)
    partner = await setup_partner(client, op, name="Family fuel", base_rate="1")
    giver, receiver = await member(client), await member(client)
    await earn(client, partner, giver.card, "1000")
    send = {"toCardNumber": receiver.card, "points": 300, "idempotencyKey": "gift-1"}
    d = (await gql(client, TRANSFER, {"input": send}, giver.token))["transferPoints"]
    assert d["__typename"] == "TransferPointsSuccess" and d["transfer"]["points"] == 300, d
    again = (await gql(client, TRANSFER, {"input": send}, giver.token))["transferPoints"]
    assert again["replayed"] and again["transfer"]["id"] == d["transfer"]["id"]
    mine, theirs = await me(client, giver), await me(client, receiver)
    assert (mine["balance"]["available"], theirs["balance"]["available"]) == (700, 300)
    out = mine["activity"]["edges"][0]["node"]
    into = theirs["activity"]["edges"][0]["node"]
    assert (out["kind"], out["points"], out["counterpartyCard"]) == (
        "transfer_out",
        -300,
        "*" * 12 + receiver.card[-4:],
    )
    assert (into["kind"], into["points"], into["counterpartyCard"]) == (
        "transfer_in",
        300,
        "*" * 12 + giver.card[-4:],
    )


async def test_refused_transfers_are_typed_and_change_nothing(client, engine, op):
    await set_rules(client, op, signup=0, referral=0)  # the receiver holds no points
    partner = await setup_partner(client, op, name="Refusing fuel", base_rate="1")
    giver, receiver = await member(client), await member(client)
    await earn(client, partner, giver.card, "20000")
    cases = [
        ({"toCardNumber": giver.card, "points": 5}, "VALIDATION"),
        ({"points": 0}, "VALIDATION"),
        ({"points": -3}, "VALIDATION"),
        ({"toCardNumber": "123"}, "VALIDATION"),
        ({"toCardNumber": "7000000000000005"}, "MEMBER_NOT_FOUND"),
        ({"points": 10_001}, "LIMIT_EXCEEDED"),  # TRANSFER_DAILY_LIMIT: 10,000 by default
    ]
    before = (await me(client, giver))["balance"], (await me(client, receiver))["balance"]
    for change, code in cases:
        send = {"toCardNumber": receiver.card, "points": 5, "idempotencyKey": key(), **change}
        d = (await gql(client, TRANSFER, {"input": send}, giver.token))["transferPoints"]
        assert d["code"] == code, (change, d)
    poor = {"toCardNumber": giver.card, "points": 5, "idempotencyKey": key()}
    d = (await gql(client, TRANSFER, {"input": poor}, receiver.token))["transferPoints"]
    assert d["code"] == "INSUFFICIENT_POINTS"
    r = await client.post(
        "/graphql",
        json={
            "query": TRANSFER,
            "variables": {
                "input": {"toCardNumber": receiver.card, "points": 2**40, "idempotencyKey": key()}
            },
        },
        headers={"Authorization": f"Bearer {giver.token}"},
    )
    assert r.status_code == 200 and r.json()["errors"]  # not an Int: refused before it runs
    after = (await me(client, giver))["balance"], (await me(client, receiver))["balance"]
    assert after == before
