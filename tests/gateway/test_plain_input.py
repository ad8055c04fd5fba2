"""`plain_input`: inputs built straight from graphql-core's coerced values give what
Strawberry's own conversion gives, and types it cannot build plainly are refused."""

from __future__ import annotations

import pytest
import strawberry

from gateway.graphql import types as T
from gateway.graphql.points.inputs import EarnInput
from gateway.graphql.schema import build_schema


def build(cls: type, value: dict) -> object:
    return cls.__strawberry_definition__.from_input(cls, value, None)  # type: ignore[attr-defined]


def test_earn_input_is_built_like_strawberry_builds_it():
    money = {"amount": "1234.50", "currency": "RUB"}
    full = {
        "cardNumber": "7000000000000005",
        "amount": money,
        "category": "fuel",
        "orderRef": "A-1",
        "idempotencyKey": "k",
    }
    assert build(EarnInput, full) == EarnInput(
        card_number="7000000000000005",
        amount=T.MoneyInput(amount="1234.50", currency="RUB"),
        category="fuel",
        order_ref="A-1",
        idempotency_key="k",
    )
    omitted = {k: v for k, v in full.items() if k != "category"}
    assert build(EarnInput, omitted).category is None  # the field's default
    assert build(EarnInput, {**full, "category": None}).category is None


async def test_the_schema_uses_it_for_earn_arguments():
    seen = []

    @strawberry.type
    class Query:
        @strawberry.field
        def echo(self, input: EarnInput) -> str:
            seen.append(input)
            return input.amount.parse().currency

    schema = strawberry.Schema(query=Query)
    result = await schema.execute(
        'query { echo(input: {cardNumber: "7000000000000005", amount: {amount: "10", '
        'currency: "EUR"}, orderRef: "o", idempotencyKey: "k"}) }'
    )
    assert result.errors is None and result.data == {"echo": "EUR"}
    assert isinstance(seen[0], EarnInput) and isinstance(seen[0].amount, T.MoneyInput)
    assert build_schema(introspection=False) is not None


def test_inputs_that_are_not_plain_are_refused():
    @T.plain_input
    @strawberry.input
    class WithList:
        tags: list[str]

    with pytest.raises(TypeError, match="not a plain input field"):
        build(WithList, {"tags": ["a"]})
