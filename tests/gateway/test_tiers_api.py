"""Tiers through GraphQL: the operator's ladder and review, the member's standing, bad input.

The module has a database of its own (tests/gateway/conftest.py): the ladder is global."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.gateway.gql_helpers import (
    EARN,
    REFUND,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

SET_TIERS = """
mutation($input: SetTiersInput!) { setTiers(input: $input) { __typename
  ... on SetTiersSuccess { ladder { tiers { name threshold { amount currency } multiplier } } }
  ... on ValidationError { code field } ... on Error { code message } } }
"""
TIERS = "{ tiers { tiers { name threshold { amount currency } multiplier } recordedAt } }"
REVIEW = """
mutation($input: RunTierReviewInput!) { runTierReview(input: $input) { __typename
  ... on RunTierReviewSuccess { review { reviewed upgraded downgraded } }
  ... on ValidationError { code field } ... on Error { code message } } }
"""
STATUS = """{ me { tier tierStatus { name multiplier qualifyingSpend { amount currency }
  next { name threshold { amount } } } } }"""

LADDER = [
    {"name": "Silver", "threshold": rub("20000"), "multiplier": "1.25"},
    {"name": "Gold", "threshold": rub("60000"), "multiplier": "1.5"},
    {"name": "Platinum", "threshold": rub("150000"), "multiplier": "2"},
]


def tier(name: str, amount: str, multiplier: str = "1.5", currency: str = "RUB") -> dict[str, Any]:
    return {
        "name": name,
        "threshold": {"amount": amount, "currency": currency},
        "multiplier": multiplier,
    }


async def test_ladder_status_and_review(client, engine) -> None:
    op = await operator_token(client, engine)
    r = (await gql(client, SET_TIERS, {"input": {"tiers": LADDER}}, op))["setTiers"]
    assert r["__typename"] == "SetTiersSuccess", r
    assert [
        (t["name"], t["threshold"]["amount"], t["multiplier"]) for t in r["ladder"]["tiers"]
    ] == [
        ("Silver", "20000.00", "1.25"),
        ("Gold", "60000.00", "1.5"),
        ("Platinum", "150000.00", "2"),
    ]
    assert (await gql(client, TIERS))["tiers"]["tiers"] == r["ladder"]["tiers"]  # no token

    m = await register_and_login(client)
    me = (await gql(client, STATUS, {}, m.token))["me"]
    assert me == {
        "tier": None,
        "tierStatus": {
            "name": None,
            "multiplier": "1",
            "qualifyingSpend": {"amount": "0.00", "currency": "RUB"},
            "next": {"name": "Silver", "threshold": {"amount": "20000.00"}},
        },
    }

    p = await setup_partner(client, op, name="Tier shop")
    orders = []
    for amount in ("50000.00", "15000.00"):
        orders.append(key())
        d = await gql(
            client,
            EARN,
            {
                "input": {
                    "cardNumber": m.card,
                    "amount": rub(amount),
                    "orderRef": orders[-1],
                    "idempotencyKey": key(),
                }
            },
            p.token,
        )
        assert d["earn"]["__typename"] == "EarnSuccess", d
    d = await gql(
        client,
        REFUND,
        {"input": {"orderRef": orders[1], "amount": rub("15000.00"), "idempotencyKey": key()}},
        p.token,
    )
    assert d["refund"]["__typename"] == "RefundSuccess", d
    # The earns upgraded at once (50000: Silver, 65000: Gold); the refund lowers nothing.
    assert (await gql(client, STATUS, {}, m.token))["me"]["tier"] == "Gold"

    as_of = datetime.now(UTC).isoformat()
    r = (await gql(client, REVIEW, {"input": {"asOf": as_of}}, op))["runTierReview"]
    assert r["__typename"] == "RunTierReviewSuccess", r
    assert r["review"]["upgraded"] == 0 and r["review"]["downgraded"] == 1
    me = (await gql(client, STATUS, {}, m.token))["me"]
    assert me == {
        "tier": "Silver",
        "tierStatus": {
            "name": "Silver",
            "multiplier": "1.25",
            "qualifyingSpend": {"amount": "50000.00", "currency": "RUB"},
            "next": {"name": "Gold", "threshold": {"amount": "60000.00"}},
        },
    }
    again = (await gql(client, REVIEW, {"input": {"asOf": as_of}}, op))["runTierReview"]
    assert again["review"]["upgraded"] == again["review"]["downgraded"] == 0


@pytest.mark.parametrize(
    ("tiers", "field"),
    [
        ([tier("A", "100", "0.5")], "tiers.0"),
        ([tier("A", "100", "NaN")], "tiers.0"),
        ([tier("A", "100", "1e400")], "tiers.0"),
        ([tier("A", "100"), tier("B", "50")], "tiers.1.threshold"),
        ([tier("A", "100"), tier("A", "200")], "tiers.1.name"),
        ([tier("", "100")], "tiers.0.name"),
        ([tier("A\u0000", "100")], None),  # NUL: refused before the resolver
        ([tier("A", "0")], "tiers.0.threshold"),
        ([tier("A", "-5")], None),
        ([tier("A", "100", currency="USD")], "tiers.0.threshold"),
        ([tier(f"T{i}", str(100 + i)) for i in range(21)], "tiers"),
    ],
)
async def test_bad_ladders_are_refused_and_change_nothing(client, engine, tiers, field) -> None:
    op = await operator_token(client, engine)
    before = (await gql(client, TIERS))["tiers"]
    r = (await gql(client, SET_TIERS, {"input": {"tiers": tiers}}, op))["setTiers"]
    assert r["__typename"] == "ValidationError", r
    if field is not None:
        assert r["field"] == field
    assert (await gql(client, TIERS))["tiers"] == before


@pytest.mark.parametrize(
    "as_of",
    [
        (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "2026-01-01T00:00:00",  # no offset
    ],
)
async def test_a_future_or_naive_review_instant_is_refused(client, engine, as_of) -> None:
    op = await operator_token(client, engine)
    r = (await gql(client, REVIEW, {"input": {"asOf": as_of}}, op))["runTierReview"]
    assert r["__typename"] == "ValidationError", r
