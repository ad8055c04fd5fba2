"""The member's activity shows bonuses (with their reason), reward spends and transfers (in or
out, from the member's point of view), whoever issued the points, the operator included."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import service as ledger
from tests.gateway.gql_helpers import ME, gql, operator_token, register_and_login, setup_partner

ACTIVITY = """
query { me { balance { available }
  activity(first: 10) { edges { node { kind points orderRef reason partner { id } } } } } }
"""


async def test_bonus_reward_and_transfer_in_the_activity(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    op = await operator_token(client, engine)
    shop = await setup_partner(client, op, name="Shop")
    anna, ben = await register_and_login(client), await register_and_login(client)
    a, b, s = uuid.UUID(anna.id), uuid.UUID(ben.id), uuid.UUID(shop.id)

    def common(k: str) -> dict[str, str]:
        return {"actor": "test", "key_space": "test", "idempotency_key": k, "digest": k}

    async with engine.begin() as c:
        await ledger.award_bonus(
            c,
            ledger.BonusRequest(
                **common("b1"), member_id=a, issuer_id=None, points=100, reason="signup"
            ),
        )
        await ledger.award_bonus(
            c,
            ledger.BonusRequest(
                **common("b2"), member_id=a, issuer_id=s, points=20, reason="review"
            ),
        )
        await ledger.redeem_reward_points(
            c,
            ledger.RewardSpendRequest(
                **common("r1"), member_id=a, partner_id=s, points=30, ref="reward:1"
            ),
        )
        await ledger.transfer_points(
            c,
            ledger.TransferRequest(
                **common("t1"), from_member_id=a, to_member_id=b, points=40, daily_limit=None
            ),
        )

    me = (await gql(client, ACTIVITY, token=anna.token))["me"]
    assert me["balance"]["available"] == 50
    assert [e["node"] for e in me["activity"]["edges"]] == [
        {"kind": "transfer_out", "points": -40, "orderRef": None, "reason": None, "partner": None},
        {
            "kind": "reward",
            "points": -30,
            "orderRef": "reward:1",
            "reason": None,
            "partner": {"id": shop.id},
        },
        {
            "kind": "bonus",
            "points": 20,
            "orderRef": None,
            "reason": "review",
            "partner": {"id": shop.id},
        },
        {"kind": "bonus", "points": 100, "orderRef": None, "reason": "signup", "partner": None},
    ]
    me = (await gql(client, ME, {"first": 5}, token=ben.token))["me"]
    assert me["balance"]["available"] == 40
    assert [e["node"]["kind"] for e in me["activity"]["edges"]] == ["transfer_in"]
