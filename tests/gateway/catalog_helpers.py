"""GraphQL operations of the catalog for gateway tests, and a few helpers around them."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.gateway.gql_helpers import gql

REWARD_FIELDS = """id title description kind pricePoints stockLeft category availableFrom
  availableUntil retiredAt partner { id name }"""
PUBLISH = f"""
mutation($input: PublishRewardInput!) {{ publishReward(input: $input) {{
  __typename ... on PublishRewardSuccess {{ reward {{ {REWARD_FIELDS} }} }}
  ... on ValidationError {{ field }} ... on Error {{ code message }} }} }}
"""
UPDATE = f"""
mutation($input: UpdateRewardInput!) {{ updateReward(input: $input) {{
  __typename ... on UpdateRewardSuccess {{ reward {{ {REWARD_FIELDS} }} }}
  ... on ValidationError {{ field }} ... on Error {{ code message }} }} }}
"""
RETIRE = f"""
mutation($input: RetireRewardInput!) {{ retireReward(input: $input) {{
  __typename ... on RetireRewardSuccess {{ reward {{ {REWARD_FIELDS} }} }}
  ... on Error {{ code message }} }} }}
"""
ADD_CODES = """
mutation($input: AddVoucherCodesInput!) { addVoucherCodes(input: $input) {
  __typename ... on AddVoucherCodesSuccess { added reward { id stockLeft } }
  ... on ValidationError { field } ... on Error { code message } } }
"""
REDEEM = """
mutation($input: RedeemRewardInput!) { redeemReward(input: $input) {
  __typename ... on RedeemRewardSuccess { replayed redemption { id points voucherCode
    transactionId reward { id stockLeft } } }
  ... on InsufficientPointsError { available }
  ... on ValidationError { field } ... on Error { code message } } }
"""
REWARDS = f"""
query($first: Int!, $after: String, $partnerId: ID, $category: String, $maxPoints: Int,
      $affordable: Boolean! = false, $includeRetired: Boolean! = false) {{
  rewards(first: $first, after: $after, partnerId: $partnerId, category: $category,
          maxPoints: $maxPoints, affordable: $affordable, includeRetired: $includeRetired) {{
    edges {{ cursor node {{ {REWARD_FIELDS} }} }}
    pageInfo {{ hasNextPage hasPreviousPage endCursor }} }} }}
"""
MY_REDEMPTIONS = """
query($first: Int!, $after: String) { me { rewardRedemptions(first: $first, after: $after) {
  edges { cursor node { id points voucherCode createdAt reward { id title kind } } }
  pageInfo { hasNextPage endCursor } } } }
"""


def goods(title: str, price: int, **extra: Any) -> dict[str, Any]:
    """A GOODS reward's input."""
    return {"title": title, "kind": "GOODS", "pricePoints": price, **extra}


async def publish(client: httpx.AsyncClient, token: str, input_: dict[str, Any]) -> dict[str, Any]:
    """Publish and return the reward (the call must succeed)."""
    d = (await gql(client, PUBLISH, {"input": input_}, token))["publishReward"]
    assert d["__typename"] == "PublishRewardSuccess", d
    return d["reward"]  # type: ignore[no-any-return]


async def raw(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str | None = None
) -> dict[str, Any]:
    """The whole response body (data and errors)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


CATALOG_TABLES = ("rewards", "voucher_codes", "reward_redemptions")


async def catalog_counts(engine: AsyncEngine) -> dict[str, int]:
    """Rows of the catalog's tables, and the sum of reward stocks (what refusals leave alone)."""
    async with engine.connect() as c:
        counts = {
            t: (await c.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()
            for t in CATALOG_TABLES
        }
        counts["stock"] = (
            await c.execute(text("SELECT coalesce(sum(stock), 0) FROM rewards"))
        ).scalar_one()
        counts["used codes"] = (
            await c.execute(
                text("SELECT count(*) FROM voucher_codes WHERE redemption_id IS NOT NULL")
            )
        ).scalar_one()
    return counts
