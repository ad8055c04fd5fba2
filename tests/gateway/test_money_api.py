"""Issue 9 items 5 and 6 through the API: money travels with its currency's minor units, more
digits are refused, and currencies are ISO 4217's (codes and minor units), not any three
letters."""

from __future__ import annotations

import secrets

import pytest

from core.settings import Settings
from tests.gateway.gql_helpers import (
    CREATE_PARTNER,
    EARN,
    REFUND,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

REFUND_AMOUNT = """
mutation($input: RefundInput!) { refund(input: $input) {
  __typename ... on RefundSuccess { replayed refund { pointsReversed amount { amount currency } } }
  ... on Error { code message } } }
"""


async def _earn(client, partner, card: str, amount: dict[str, str], ref: str) -> dict:
    variables = {
        "input": {"cardNumber": card, "amount": amount, "orderRef": ref, "idempotencyKey": key()}
    }
    return (await gql(client, EARN, variables, partner.token))["earn"]


async def test_amounts_keep_minor_units_and_extra_digits_are_refused(client, engine) -> None:
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Money " + secrets.token_hex(3))
    m = await register_and_login(client)

    bad = await _earn(client, partner, m.card, rub("100.000"), "O-0")
    assert bad["__typename"] == "ValidationError" and bad["code"] == "VALIDATION", bad
    assert "decimal places" in bad["message"]
    for i, amount in enumerate(["100", "100.5", "100.50"]):
        ok = await _earn(client, partner, m.card, rub(amount), f"O-{i + 1}")
        assert ok["__typename"] == "EarnSuccess", ok
    ok = await _earn(client, partner, m.card, rub("1000.00"), "BIG")
    assert ok["__typename"] == "EarnSuccess", ok

    # The refund and its replay: "1000.00", never the stored NUMERIC(20,4) "1000.0000".
    refund = {"orderRef": "BIG", "amount": rub("1000"), "idempotencyKey": key()}
    first = (await gql(client, REFUND_AMOUNT, {"input": refund}, partner.token))["refund"]
    again = (await gql(client, REFUND_AMOUNT, {"input": refund}, partner.token))["refund"]
    assert first["__typename"] == again["__typename"] == "RefundSuccess", (first, again)
    assert again["replayed"] is True
    assert first["refund"]["amount"] == again["refund"]["amount"] == rub("1000.00")

    # Error messages show amounts with the currency's digits too.
    refund = {"orderRef": "O-3", "amount": rub("200"), "idempotencyKey": key()}
    over = (await gql(client, REFUND, {"input": refund}, partner.token))["refund"]
    assert over["code"] == "VALIDATION", over
    assert "100.50 RUB remain refundable" in over["message"], over["message"]


async def test_currencies_are_iso_4217_codes(client, engine) -> None:
    op = await operator_token(client, engine)
    for currency in ["XYZ", "ABC", "DEM", "XAU"]:
        d = await gql(
            client,
            CREATE_PARTNER,
            {
                "input": {
                    "name": "P " + secrets.token_hex(3),
                    "category": "shop",
                    "currency": currency,
                }
            },
            op,
        )
        r = d["createPartner"]
        assert r["__typename"] == "ValidationError" and r["code"] == "VALIDATION", r
        assert "ISO 4217" in r["message"]
    for currency, expected in [("clp", "CLP"), ("ISK", "ISK"), ("BHD", "BHD")]:
        d = await gql(
            client,
            CREATE_PARTNER,
            {
                "input": {
                    "name": "P " + secrets.token_hex(3),
                    "category": "shop",
                    "currency": currency,
                }
            },
            op,
        )
        assert d["createPartner"]["partner"]["currency"] == expected, d

    # Any money input: an unknown code is VALIDATION, before the partner's currency is compared.
    partner = await setup_partner(client, op, name="Cur " + secrets.token_hex(3))
    m = await register_and_login(client)
    bad = await _earn(client, partner, m.card, {"amount": "10", "currency": "XYZ"}, "X-1")
    assert bad["code"] == "VALIDATION" and "ISO 4217" in bad["message"], bad


def test_settlement_currency_is_checked_at_start() -> None:
    assert Settings(settlement_currency="isk").settlement_currency == "ISK"
    for bad in ["XYZ", "XAU"]:
        with pytest.raises(ValueError, match="ISO 4217"):
            Settings(settlement_currency=bad)
