"""The earn breakdown through GraphQL: the earn's lines (BASE, TIER) summing to its points, the
same lines on a replay and in the member's activity; an earn of a BASE line alone reads back as
one BASE line.

The module has a database of its own (tests/gateway/conftest.py): the ladder is global."""

from __future__ import annotations

from typing import Any

from tests.gateway.gql_helpers import (
    gql,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

EARN = """
mutation($input: EarnInput!) { earn(input: $input) { __typename
  ... on EarnSuccess { replayed transaction { id points status
      breakdown { source points fundedBy offer { id } } } }
  ... on Error { code message } } }
"""
SET_TIERS = """
mutation($input: SetTiersInput!) { setTiers(input: $input) { __typename } }
"""
ACTIVITY = """{ me { activity(first: 10) { edges { node { kind points transactionId
  breakdown { source points fundedBy offer { id } } } } } } }"""


def lines(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"source": s, "points": p, "fundedBy": "PARTNER", "offer": None} for s, p in pairs]


async def test_lines_of_an_earn_its_replay_and_the_activity(client, engine) -> None:
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Breakdown shop")  # 1 point per 10 RUB
    m = await register_and_login(client)

    async def earn(amount: str, ref: str, idem: str) -> dict[str, Any]:
        d = await gql(
            client,
            EARN,
            {
                "input": {
                    "cardNumber": m.card,
                    "amount": rub(amount),
                    "orderRef": ref,
                    "idempotencyKey": idem,
                }
            },
            p.token,
        )
        assert d["earn"]["__typename"] == "EarnSuccess", d
        return d["earn"]

    plain = await earn("150", "o1", "k1")
    assert plain["transaction"]["breakdown"] == lines(("BASE", 15))
    tiers = [{"name": "Silver", "threshold": rub("100"), "multiplier": "2.5"}]
    d = await gql(client, SET_TIERS, {"input": {"tiers": tiers}}, op)
    assert d["setTiers"]["__typename"] == "SetTiersSuccess", d
    crossing = await earn("10", "o2", "k2")  # reaches Silver: still untiered
    assert crossing["transaction"]["breakdown"] == lines(("BASE", 1))
    # 1237.00 at 0.1 = 123.7: BASE 123 + TIER floor(123.7 x 1.5) = 185 -> 308.
    tiered = await earn("1237.00", "o3", "k3")
    assert tiered["transaction"]["points"] == 308
    assert tiered["transaction"]["breakdown"] == lines(("BASE", 123), ("TIER", 185))
    replay = await earn("1237.00", "o3", "k3")
    assert replay["replayed"] is True
    assert replay["transaction"] == tiered["transaction"]
    shown = {
        e["node"]["transactionId"]: e["node"]["breakdown"]
        for e in (await gql(client, ACTIVITY, {}, m.token))["me"]["activity"]["edges"]
        if e["node"]["kind"] == "earn"
    }
    assert shown[tiered["transaction"]["id"]] == lines(("BASE", 123), ("TIER", 185))
    assert shown[plain["transaction"]["id"]] == lines(("BASE", 15))


async def test_an_activated_coupon_through_graphql(client, engine) -> None:
    """The x5 coupon (DOMAIN.md's Payback example): 150 before the member activates it, 150 +
    600 after, the OFFER line naming the offer, funded by the partner."""
    from tests.gateway.test_offers_api import ACTIVATE, CREATE, WRITER

    op = await operator_token(client, engine)
    d = await gql(client, SET_TIERS, {"input": {"tiers": []}}, op)  # no TIER line here
    assert d["setTiers"]["__typename"] == "SetTiersSuccess", d
    p = await setup_partner(client, op, name="Coupon shop", scopes=WRITER)
    m = await register_and_login(client)
    d = await gql(
        client,
        CREATE,
        {"input": {"name": "x5", "multiplier": "5", "requiresActivation": True}},
        p.token,
    )
    assert d["createOffer"]["__typename"] == "CreateOfferSuccess", d
    x5 = d["createOffer"]["offer"]["id"]

    async def earn(ref: str) -> dict[str, Any]:
        d = await gql(
            client,
            EARN,
            {
                "input": {
                    "cardNumber": m.card,
                    "amount": rub("1500"),
                    "orderRef": ref,
                    "idempotencyKey": ref,
                }
            },
            p.token,
        )
        assert d["earn"]["__typename"] == "EarnSuccess", d
        return d["earn"]["transaction"]

    assert (await earn("c1"))["breakdown"] == lines(("BASE", 150))
    d = await gql(client, ACTIVATE, {"input": {"offerId": x5}}, m.token)
    assert d["activateOffer"]["__typename"] == "ActivateOfferSuccess", d
    after = await earn("c2")
    assert after["points"] == 750
    assert after["breakdown"] == [
        *lines(("BASE", 150)),
        {"source": "OFFER", "points": 600, "fundedBy": "PARTNER", "offer": {"id": x5}},
    ]
    # A replay reads the same lines back from the ledger.
    again = await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": m.card,
                "amount": rub("1500"),
                "orderRef": "c2",
                "idempotencyKey": "c2",
            }
        },
        p.token,
    )
    assert again["earn"]["replayed"] is True
    assert again["earn"]["transaction"] == after
