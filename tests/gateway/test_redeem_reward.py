"""redeemReward and me { rewardRedemptions } through GraphQL, with exact numbers: the price
taken at once, the stock, the voucher codes (shown to their member only), replays, conflicts
and every refusal changing nothing."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.gateway.catalog_helpers import (
    MY_REDEMPTIONS,
    RETIRE,
    REWARDS,
    catalog_counts,
    goods,
    publish,
    raw,
)
from tests.gateway.conftest import BASE_URL
from tests.gateway.gql_helpers import (
    CREATE_PARTNER,
    EARN,
    PartnerHandle,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

WRITER = ["points:earn", "points:redeem", "catalog:write", "settlement:read"]
REDEEM = """
mutation($input: RedeemRewardInput!) { redeemReward(input: $input) {
  __typename ... on RedeemRewardSuccess { replayed redemption { id points voucherCode
    transactionId reward { id stockLeft } } }
  ... on InsufficientPointsError { available }
  ... on ValidationError { field } ... on Error { code message } } }
"""
BALANCE = "{ me { balance { available } } }"


@dataclass
class World:
    op: str
    shop: PartnerHandle  # delivers the rewards (catalog:write)
    fuel: PartnerHandle  # where members earn


@pytest.fixture(scope="module")
async def world(app, engine) -> World:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        op = await operator_token(c, engine)
        shop = await setup_partner(c, op, name="Reward shop", scopes=WRITER)
        fuel = await setup_partner(c, op, name="Fuel", base_rate="1")
    return World(op, shop, fuel)


async def member_with(client, world: World, points: int):
    m = await register_and_login(client)
    if points:
        d = await gql(
            client,
            EARN,
            {
                "input": {
                    "cardNumber": m.card,
                    "amount": rub(str(points)),
                    "orderRef": key(),
                    "idempotencyKey": key(),
                }
            },
            world.fuel.token,
        )
        assert d["earn"]["transaction"]["points"] == points
    return m


async def redeem(client, token: str | None, reward_id: str, idem: str) -> dict[str, Any]:
    d = await gql(client, REDEEM, {"input": {"rewardId": reward_id, "idempotencyKey": idem}}, token)
    return d["redeemReward"]  # type: ignore[no-any-return]


async def available(client, token: str) -> int:
    return (await gql(client, BALANCE, token=token))["me"]["balance"]["available"]  # type: ignore[no-any-return]


async def reward_txs(engine, member_id: str) -> list[tuple[str, int, str]]:
    """The member's reward transactions: (partner, points, ref)."""
    async with engine.connect() as c:
        rows = await c.execute(
            text(
                "SELECT partner_id::text, points, ref FROM transactions "
                "WHERE kind = 'reward' AND member_id = :m ORDER BY recorded_at"
            ),
            {"m": member_id},
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def stock_left(client, reward_id: str, token: str) -> int | None:
    d = await gql(client, REWARDS, {"first": 100, "includeRetired": True}, token)
    return next(  # type: ignore[no-any-return]
        e["node"]["stockLeft"] for e in d["rewards"]["edges"] if e["node"]["id"] == reward_id
    )


async def test_goods_take_the_price_at_once_and_one_of_the_stock(client, engine, world):
    m = await member_with(client, world, 1000)
    mug = await publish(client, world.shop.token, goods("Mug", 300, stock=2))
    r = await redeem(client, m.token, mug["id"], "mug-1")
    assert r["__typename"] == "RedeemRewardSuccess" and r["replayed"] is False, r
    red = r["redemption"]
    assert (red["points"], red["voucherCode"], red["reward"]) == (
        300,
        None,
        {"id": mug["id"], "stockLeft": 1},
    )
    assert await available(client, m.token) == 700
    assert await reward_txs(engine, m.id) == [(world.shop.id, 300, f"reward:{mug['id']}")]
    # The member's activity shows the spend at the delivering partner.
    d = await gql(
        client,
        "{ me { activity(first: 1) { edges { node { kind points partner { id } } } } } }",
        token=m.token,
    )
    assert d["me"]["activity"]["edges"][0]["node"] == {
        "kind": "reward",
        "points": -300,
        "partner": {"id": world.shop.id},
    }

    # A replay: the same redemption, nothing taken again.
    again = await redeem(client, m.token, mug["id"], "mug-1")
    assert again["replayed"] is True and again["redemption"]["id"] == red["id"]
    assert again["redemption"]["transactionId"] == red["transactionId"]
    # The same key for another reward: a conflict, nothing taken.
    cap = await publish(client, world.shop.token, goods("Cap", 100, stock=5))
    conflict = await redeem(client, m.token, cap["id"], "mug-1")
    assert (conflict["__typename"], conflict["code"]) == (
        "IdempotencyConflictError",
        "IDEMPOTENCY_CONFLICT",
    )
    assert await available(client, m.token) == 700
    assert await stock_left(client, mug["id"], world.shop.token) == 1
    assert await stock_left(client, cap["id"], world.shop.token) == 5
    assert len(await reward_txs(engine, m.id)) == 1

    # Another key: the last of the stock, then none.
    assert (await redeem(client, m.token, mug["id"], "mug-2"))["redemption"]["reward"][
        "stockLeft"
    ] == 0
    before = await catalog_counts(engine)
    out = await redeem(client, m.token, mug["id"], "mug-3")
    assert (out["__typename"], out["code"]) == ("OutOfStockError", "OUT_OF_STOCK")
    assert await available(client, m.token) == 400  # 1000 - 2 x 300: the third took nothing
    assert len(await reward_txs(engine, m.id)) == 2
    assert await catalog_counts(engine) == before
    # The refused key stays free: after a restock, the same key succeeds.
    await gql(
        client,
        "mutation($i: UpdateRewardInput!) { updateReward(input: $i) { __typename } }",
        {"i": {"rewardId": mug["id"], "stock": 1}},
        world.shop.token,
    )
    assert (await redeem(client, m.token, mug["id"], "mug-3"))["replayed"] is False
    assert await available(client, m.token) == 100


async def test_insufficient_points_change_nothing_and_free_the_key(client, engine, world):
    m = await member_with(client, world, 250)
    lamp = await publish(client, world.shop.token, goods("Lamp", 300, stock=1))
    before = await catalog_counts(engine)
    r = await redeem(client, m.token, lamp["id"], "lamp")
    assert (r["__typename"], r["code"], r["available"]) == (
        "InsufficientPointsError",
        "INSUFFICIENT_POINTS",
        250,
    )
    assert await available(client, m.token) == 250
    assert await catalog_counts(engine) == before
    assert await reward_txs(engine, m.id) == []
    assert await stock_left(client, lamp["id"], world.shop.token) == 1
    # Pending points do not count; available ones do: 50 more, then the same key succeeds.
    await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": m.card,
                "amount": rub("50"),
                "orderRef": key(),
                "idempotencyKey": key(),
            }
        },
        world.fuel.token,
    )
    r = await redeem(client, m.token, lamp["id"], "lamp")
    assert r["__typename"] == "RedeemRewardSuccess" and r["redemption"]["points"] == 300
    assert await available(client, m.token) == 0


async def test_voucher_codes_go_to_one_member_each_and_are_shown_to_them_only(
    client, engine, world
):
    v = await publish(
        client,
        world.shop.token,
        {
            "title": "Cinema ticket",
            "kind": "VOUCHER",
            "pricePoints": 100,
            "voucherCodes": ["SECRET-CODE-1", "SECRET-CODE-2"],
        },
    )
    assert v["stockLeft"] == 2
    m1 = await member_with(client, world, 500)
    m2 = await member_with(client, world, 500)
    m3 = await member_with(client, world, 500)
    r1 = await redeem(client, m1.token, v["id"], "ticket")
    r2 = await redeem(client, m2.token, v["id"], "ticket")  # keys are per member
    assert r1["redemption"]["voucherCode"] == "SECRET-CODE-1"
    assert r2["redemption"]["voucherCode"] == "SECRET-CODE-2"
    assert r2["redemption"]["reward"]["stockLeft"] == 0
    r3 = await redeem(client, m3.token, v["id"], "ticket")
    assert r3["code"] == "OUT_OF_STOCK"
    assert await available(client, m3.token) == 500
    # A replay hands the same code again, to the same member.
    assert (await redeem(client, m1.token, v["id"], "ticket"))["redemption"][
        "voucherCode"
    ] == "SECRET-CODE-1"

    async def history(token: str) -> list[tuple[str | None, str]]:
        d = await gql(client, MY_REDEMPTIONS, {"first": 10}, token)
        return [
            (e["node"]["voucherCode"], e["node"]["reward"]["id"])
            for e in d["me"]["rewardRedemptions"]["edges"]
        ]

    assert await history(m1.token) == [("SECRET-CODE-1", v["id"])]
    assert await history(m2.token) == [("SECRET-CODE-2", v["id"])]
    assert await history(m3.token) == []
    # Nowhere else: not in the catalog for anyone, not to the partner, not to the operator.
    for token in (None, m3.token, world.shop.token, world.op):
        for args in ({}, {"includeRetired": True}):
            if args and token in (None, m3.token):
                continue
            body = await raw(client, REWARDS, {"first": 100, **args}, token)
            assert "SECRET-CODE" not in json.dumps(body)
    for token in (world.shop.token, world.op):  # a partner or operator has no `me`
        body = await raw(client, MY_REDEMPTIONS, {"first": 10}, token)
        assert body["data"] == {"me": None} and body["errors"][0]["extensions"]["code"] == (
            "FORBIDDEN"
        )
        assert "SECRET-CODE" not in json.dumps(body)


async def test_rewards_not_on_offer_are_not_found_and_change_nothing(client, engine, world):
    m = await member_with(client, world, 1000)
    now = datetime.now(UTC)
    retired = await publish(client, world.shop.token, goods("Old", 10))
    await gql(client, RETIRE, {"input": {"rewardId": retired["id"]}}, world.shop.token)
    later = await publish(
        client,
        world.shop.token,
        goods("Later", 10, availableFrom=(now + timedelta(days=1)).isoformat()),
    )
    gone = await publish(
        client,
        world.shop.token,
        goods(
            "Gone",
            10,
            availableFrom=(now - timedelta(days=2)).isoformat(),
            availableUntil=(now - timedelta(days=1)).isoformat(),
        ),
    )
    before = await catalog_counts(engine)
    for rid in (retired["id"], later["id"], gone["id"], str(uuid.uuid4()), "not-an-id"):
        r = await redeem(client, m.token, rid, key())
        assert (r["__typename"], r["code"]) == ("NotFoundError", "NOT_FOUND"), rid
    assert await catalog_counts(engine) == before
    assert await available(client, m.token) == 1000
    assert await reward_txs(engine, m.id) == []


async def test_a_partner_without_an_agreement_cannot_deliver(client, engine, world):
    d = await gql(
        client,
        CREATE_PARTNER,
        {"input": {"name": "No deal", "category": "shop", "currency": "RUB"}},
        world.op,
    )
    pid = d["createPartner"]["partner"]["id"]
    r = await publish(client, world.op, goods("Unpaid", 10, partnerId=pid))
    m = await member_with(client, world, 100)
    before = await catalog_counts(engine)
    out = await redeem(client, m.token, r["id"], key())
    assert (out["__typename"], out["code"]) == ("NoAgreementError", "NO_AGREEMENT")
    assert await catalog_counts(engine) == before
    assert await available(client, m.token) == 100


async def test_only_a_member_redeems(client, engine, world):
    r = await publish(client, world.shop.token, goods("Pen", 1))
    before = await catalog_counts(engine)
    for token in (None, world.shop.token, world.op):
        out = await redeem(client, token, r["id"], key())
        assert (out["__typename"], out["code"]) == ("ForbiddenError", "FORBIDDEN")
    assert await catalog_counts(engine) == before


async def test_bad_keys_are_validation_errors(client, engine, world):
    m = await member_with(client, world, 100)
    r = await publish(client, world.shop.token, goods("Sticker", 1))
    before = await catalog_counts(engine)
    for bad in ("", " ", "k" * 201, "a\x00b"):
        out = await redeem(client, m.token, r["id"], bad)
        assert out["code"] == "VALIDATION", (bad, out)
    assert await catalog_counts(engine) == before
    assert await available(client, m.token) == 100


async def test_unlimited_goods_and_charity_and_the_history_pages(client, engine, world):
    m = await member_with(client, world, 1000)
    tree = await publish(
        client,
        world.shop.token,
        {"title": "Plant a tree", "kind": "CHARITY", "pricePoints": 100},
    )
    bag = await publish(client, world.shop.token, goods("Bag", 200))
    ids = []
    for rid, idem in ((tree["id"], "t1"), (bag["id"], "b1"), (tree["id"], "t2")):
        r = await redeem(client, m.token, rid, idem)
        assert r["redemption"]["reward"]["stockLeft"] is None  # unlimited stays unlimited
        ids.append(r["redemption"]["id"])
    assert await available(client, m.token) == 600
    assert [p for _, p, _ in await reward_txs(engine, m.id)] == [100, 200, 100]
    first = await gql(client, MY_REDEMPTIONS, {"first": 2}, m.token)
    page = first["me"]["rewardRedemptions"]
    assert [e["node"]["id"] for e in page["edges"]] == [ids[2], ids[1]]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = await gql(
        client, MY_REDEMPTIONS, {"first": 2, "after": page["pageInfo"]["endCursor"]}, m.token
    )
    page = rest["me"]["rewardRedemptions"]
    assert [e["node"]["id"] for e in page["edges"]] == [ids[0]]
    assert page["pageInfo"]["hasNextPage"] is False
    assert page["edges"][0]["node"]["reward"] == {
        "id": tree["id"],
        "title": "Plant a tree",
        "kind": "CHARITY",
    }
    # A retired reward stays in its redeemers' history.
    await gql(client, RETIRE, {"input": {"rewardId": bag["id"]}}, world.shop.token)
    d = await gql(client, MY_REDEMPTIONS, {"first": 10}, m.token)
    assert len(d["me"]["rewardRedemptions"]["edges"]) == 3


async def test_a_replay_answers_the_same_after_the_reward_is_retired_or_repriced(
    client, engine, world
):
    """Guards the stored-result check before the reward's rules (loyalty.rewards.redeem_in): a
    retry answers as the original did, whatever the reward has become since."""
    m = await member_with(client, world, 1000)
    v = await publish(
        client,
        world.shop.token,
        {"title": "Gift card", "kind": "VOUCHER", "pricePoints": 400, "voucherCodes": ["G-1"]},
    )
    first = await redeem(client, m.token, v["id"], "gift")
    assert first["redemption"]["voucherCode"] == "G-1"
    d = await gql(
        client,
        "mutation($i: UpdateRewardInput!) { updateReward(input: $i) { __typename } }",
        {"i": {"rewardId": v["id"], "pricePoints": 999}},
        world.shop.token,
    )
    assert d["updateReward"]["__typename"] == "UpdateRewardSuccess"
    await gql(client, RETIRE, {"input": {"rewardId": v["id"]}}, world.shop.token)
    again = await redeem(client, m.token, v["id"], "gift")
    assert again["__typename"] == "RedeemRewardSuccess", again
    assert again["replayed"] is True
    assert {
        k: again["redemption"][k] for k in ("id", "points", "voucherCode", "transactionId")
    } == {k: first["redemption"][k] for k in ("id", "points", "voucherCode", "transactionId")}
    assert await available(client, m.token) == 600
    # A new key for the retired reward: not found.
    assert (await redeem(client, m.token, v["id"], "gift-2"))["code"] == "NOT_FOUND"
