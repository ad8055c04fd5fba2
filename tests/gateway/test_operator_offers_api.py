"""A coalition-wide offer through GraphQL: the operator's +100 applies to an earn at a partner
with its own x2; the earn's breakdown names the operator's line (fundedBy OPERATOR), the lines
sum to its points on the earn, its replay and in the member's activity, which shows the earn
once; a refund of a quarter reverses a quarter of the whole earn.

The module has a database of its own (tests/gateway/conftest.py): a coalition-wide offer applies
to every partner's earns."""

from __future__ import annotations

from typing import Any

from tests.gateway.gql_helpers import REFUND, gql, operator_token, register_and_login, rub
from tests.gateway.gql_helpers import setup_partner as partner
from tests.gateway.test_earn_breakdown import EARN
from tests.gateway.test_offers_api import CREATE, WRITER
from tests.ledger.invariants import assert_invariants

ACTIVITY = """{ me { balance { available } activity(first: 10) { edges { node { kind points
  transactionId breakdown { source points fundedBy offer { id } } } } } } }"""


async def test_a_coalition_wide_offer_in_the_earn_the_activity_and_a_refund(client, engine) -> None:
    op = await operator_token(client, engine)
    p = await partner(client, op, name="Wide shop", scopes=WRITER)  # 1 point per 10 RUB
    m = await register_and_login(client)
    d = await gql(client, CREATE, {"input": {"name": "x2", "multiplier": "2"}}, p.token)
    x2 = d["createOffer"]["offer"]["id"]
    d = await gql(
        client,
        CREATE,
        {"input": {"name": "Coalition week", "bonusPoints": 100, "stackable": True}},
        op,
    )
    assert d["createOffer"]["offer"]["coalitionWide"] is True, d
    wide = d["createOffer"]["offer"]["id"]

    async def earn() -> dict[str, Any]:
        variables = {
            "input": {
                "cardNumber": m.card,
                "amount": rub("1500"),
                "orderRef": "w1",
                "idempotencyKey": "w1",
            }
        }
        d = await gql(client, EARN, variables, p.token)
        assert d["earn"]["__typename"] == "EarnSuccess", d
        return d["earn"]

    first = await earn()
    lines = [
        {"source": "BASE", "points": 150, "fundedBy": "PARTNER", "offer": None},
        {"source": "OFFER", "points": 150, "fundedBy": "PARTNER", "offer": {"id": x2}},
        {"source": "OFFER", "points": 100, "fundedBy": "OPERATOR", "offer": {"id": wide}},
    ]
    assert first["transaction"]["points"] == 400
    assert first["transaction"]["breakdown"] == lines
    again = await earn()  # read back from the ledger
    assert again["replayed"] is True and again["transaction"] == first["transaction"]
    me = (await gql(client, ACTIVITY, {}, m.token))["me"]
    assert me["balance"]["available"] == 400
    assert [e["node"] for e in me["activity"]["edges"]] == [
        {
            "kind": "earn",
            "points": 400,
            "transactionId": first["transaction"]["id"],
            "breakdown": lines,
        }
    ]
    d = await gql(
        client,
        REFUND,
        {"input": {"orderRef": "w1", "amount": rub("375"), "idempotencyKey": "r1"}},
        p.token,
    )
    assert d["refund"]["refund"]["pointsReversed"] == 100, d
    me = (await gql(client, ACTIVITY, {}, m.token))["me"]
    assert me["balance"]["available"] == 300
    assert [(e["node"]["kind"], e["node"]["points"]) for e in me["activity"]["edges"]] == [
        ("reversal", -100),
        ("earn", 400),
    ]
    await assert_invariants(engine)
