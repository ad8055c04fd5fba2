"""Offers and promo codes through GraphQL: creating (with the bad inputs refused, typed),
ending, listing per caller, activating, promo codes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.gql_helpers import gql, operator_token, register_and_login, setup_partner

WRITER = ["points:earn", "catalog:write"]
OFFER = "id name multiplier bonusPoints coalitionWide activated endedAt partner { id }"
ERR = "... on ValidationError { field } ... on Error { code message }"
CREATE = f"""mutation($input: CreateOfferInput!) {{ createOffer(input: $input) {{ __typename
  ... on CreateOfferSuccess {{ offer {{ {OFFER} }} }} {ERR} }} }}"""
END = f"""mutation($input: EndOfferInput!) {{ endOffer(input: $input) {{ __typename
  ... on EndOfferSuccess {{ offer {{ {OFFER} }} }} {ERR} }} }}"""
ACTIVATE = f"""mutation($input: ActivateOfferInput!) {{ activateOffer(input: $input) {{ __typename
  ... on ActivateOfferSuccess {{ offer {{ {OFFER} }} }} {ERR} }} }}"""
CREATE_PROMO = f"""mutation($input: CreatePromoCodeInput!) {{ createPromoCode(input: $input) {{
  __typename ... on CreatePromoCodeSuccess {{ promoCode {{ code maxRedemptions redemptions }} }}
  {ERR} }} }}"""
APPLY = f"""mutation($input: ApplyPromoCodeInput!) {{ applyPromoCode(input: $input) {{ __typename
  ... on ApplyPromoCodeSuccess {{ offer {{ id }} }} {ERR} }} }}"""
OFFERS = f"query($after: String) {{ offers(first: 2, after: $after) {{ edges {{ node {{ {OFFER} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"


@pytest.fixture
async def world(client, engine):
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Offers A", base_rate="0.1", scopes=WRITER)
    b = await setup_partner(client, op, name="Offers B", base_rate="0.1", scopes=WRITER)
    m = await register_and_login(client)
    return {"op": op, "a": a, "b": b, "m": m}


async def create(client, token: str, **fields: Any) -> dict[str, Any]:
    return (await gql(client, CREATE, {"input": {"name": "Offer", **fields}}, token))["createOffer"]


async def all_offers(client, token: str) -> list[dict[str, Any]]:
    found, after = [], None
    while True:
        page = (await gql(client, OFFERS, {"after": after}, token))["offers"]
        found += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]


async def test_bad_offers_are_typed_errors(client, world) -> None:
    a, b = world["a"], world["b"]
    cases = [
        ({"multiplier": "1"}, "multiplier"),
        ({"multiplier": "0.99"}, "multiplier"),
        ({"multiplier": "2", "bonusPoints": 5}, "multiplier"),
        ({}, "multiplier"),
        ({"bonusPoints": 2_000_000_000}, "bonusPoints"),
        ({"bonusPoints": -1}, "bonusPoints"),
        ({"bonusPoints": 5, "maxUsesPerMember": 2_000_000_000}, "maxUsesPerMember"),
        (
            {
                "bonusPoints": 5,
                "startsAt": "2027-01-02T00:00:00Z",
                "endsAt": "2027-01-01T00:00:00Z",
            },
            "endsAt",
        ),
        ({"bonusPoints": 5, "partnerId": "not-an-id"}, "partnerId"),
    ]
    for fields, field in cases:
        out = await create(client, a.token, **fields)
        assert (out["__typename"], out.get("field")) == ("ValidationError", field), fields
    out = await create(client, a.token, bonusPoints=5, partnerId=b.id)
    assert out["__typename"] == "ForbiddenError"
    r = await client.post(
        "/graphql",
        json={"query": CREATE, "variables": {"input": {"name": "x", "bonusPoints": 2**40}}},
        headers={"Authorization": f"Bearer {a.token}"},
    )
    assert r.json()["errors"][0]["extensions"]["code"]  # a GraphQL Int: coded, never a 500
    assert await all_offers(client, a.token) == []


async def test_owners_end_offers_and_each_caller_lists_its_own(client, world) -> None:
    a, b, op, m = world["a"], world["b"], world["op"], world["m"]
    mine = (await create(client, a.token, multiplier="2.5"))["offer"]
    assert mine["multiplier"] == "2.5" and mine["partner"]["id"] == a.id
    assert not mine["coalitionWide"] and mine["activated"] is None
    wide = (await create(client, op, bonusPoints=100))["offer"]
    assert wide["coalitionWide"] and wide["partner"] is None
    theirs = (await create(client, op, partnerId=b.id, bonusPoints=7))["offer"]
    assert [o["id"] for o in await all_offers(client, a.token)] == [mine["id"]]
    ours = {theirs["id"], wide["id"], mine["id"]}
    assert [o["id"] for o in await all_offers(client, op) if o["id"] in ours] == [
        theirs["id"],
        wide["id"],
        mine["id"],
    ]
    member = [o for o in await all_offers(client, m.token) if o["id"] in ours]
    assert [(o["id"], o["activated"]) for o in member] == [
        (theirs["id"], False),
        (wide["id"], False),
        (mine["id"], False),
    ]
    out = (await gql(client, END, {"input": {"offerId": mine["id"]}}, b.token))["endOffer"]
    assert out["code"] == "NOT_FOUND"
    out = (await gql(client, END, {"input": {"offerId": wide["id"]}}, a.token))["endOffer"]
    assert out["code"] == "NOT_FOUND"
    out = (await gql(client, END, {"input": {"offerId": mine["id"]}}, a.token))["endOffer"]
    assert out["offer"]["endedAt"] is not None
    assert mine["id"] not in {o["id"] for o in await all_offers(client, m.token)}


async def test_activation_and_promo_codes(client, world) -> None:
    a, op, m = world["a"], world["op"], world["m"]
    other = await register_and_login(client)
    coupon = (await create(client, a.token, multiplier="5", requiresActivation=True))["offer"]
    plain = (await create(client, a.token, multiplier="2"))["offer"]
    for _ in range(2):  # idempotent
        out = await gql(client, ACTIVATE, {"input": {"offerId": coupon["id"]}}, m.token)
        assert out["activateOffer"]["offer"]["activated"] is True
    out = await gql(client, ACTIVATE, {"input": {"offerId": plain["id"]}}, m.token)
    assert out["activateOffer"]["__typename"] == "ValidationError"
    out = await gql(client, ACTIVATE, {"input": {"offerId": "nope"}}, m.token)
    assert out["activateOffer"]["code"] == "NOT_FOUND"
    listed = {o["id"]: o["activated"] for o in await all_offers(client, m.token)}
    assert (listed[coupon["id"]], listed[plain["id"]]) == (True, False)

    async def promo(token: str, offer_id: str, code: str, uses: int = 1) -> dict[str, Any]:
        variables = {
            "input": {
                "offerId": offer_id,
                "code": code,
                "maxRedemptions": uses,
                "validUntil": "2999-01-01T00:00:00Z",
            }
        }
        return (await gql(client, CREATE_PROMO, variables, token))["createPromoCode"]

    second = (await create(client, a.token, bonusPoints=50, requiresActivation=True))["offer"]
    made = await promo(a.token, second["id"], "welcome10", 1)
    assert made["promoCode"] == {"code": "WELCOME10", "maxRedemptions": 1, "redemptions": 0}
    assert (await promo(op, second["id"], "WELCOME10"))["field"] == "code"  # taken
    assert (await promo(a.token, second["id"], "x"))["field"] == "code"
    assert (await promo(a.token, second["id"], "OK-CODE", 0))["field"] == "maxRedemptions"
    assert (await promo(world["b"].token, second["id"], "B-CODE"))["code"] == "NOT_FOUND"
    applied = await gql(client, APPLY, {"input": {"code": "Welcome10"}}, m.token)
    assert applied["applyPromoCode"]["offer"]["id"] == second["id"]
    for who in (m, other):  # already applied; used up
        out = await gql(client, APPLY, {"input": {"code": "WELCOME10"}}, who.token)
        assert out["applyPromoCode"]["__typename"] == "InvalidPromoCodeError"
        assert out["applyPromoCode"]["code"] == "INVALID_PROMO_CODE"
    out = await gql(client, APPLY, {"input": {"code": "NOPE"}}, other.token)
    assert out["applyPromoCode"]["code"] == "INVALID_PROMO_CODE"
    listed = {o["id"]: o["activated"] for o in await all_offers(client, m.token)}
    assert listed[second["id"]] is True
