"""The rewards catalog through GraphQL: who may publish, change and retire rewards, what bad
input gets, and browsing (filters, windows, retirement, pagination), with exact results."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.gateway.catalog_helpers import (
    ADD_CODES,
    PUBLISH,
    RETIRE,
    REWARDS,
    UPDATE,
    catalog_counts,
    goods,
    publish,
    raw,
)
from tests.gateway.gql_helpers import (
    EARN,
    MemberHandle,
    PartnerHandle,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

WRITER = ["points:earn", "points:redeem", "catalog:write", "settlement:read"]


@dataclass
class World:
    op: str
    a: PartnerHandle  # catalog:write
    b: PartnerHandle  # catalog:write
    c: PartnerHandle  # no catalog:write
    member: MemberHandle


@pytest.fixture(scope="module")
async def world(app, engine) -> World:
    import httpx

    from tests.gateway.conftest import BASE_URL

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        op = await operator_token(c, engine)
        a = await setup_partner(c, op, name="Catalog A", base_rate="1", scopes=WRITER)
        b = await setup_partner(c, op, name="Catalog B", base_rate="1", scopes=WRITER)
        no_scope = await setup_partner(c, op, name="Catalog C", scopes=["points:earn"])
        member = await register_and_login(c)
    return World(op, a, b, no_scope, member)


async def call(client, query: str, input_: dict[str, Any], token: str | None) -> dict[str, Any]:
    (value,) = (await gql(client, query, {"input": input_}, token)).values()
    return value  # type: ignore[no-any-return]


async def test_a_partner_publishes_its_own_rewards_only(client, engine, world):
    mine = await publish(client, world.a.token, goods("A's mug", 300, stock=5))
    assert mine["partner"] == {"id": world.a.id, "name": "Catalog A"}
    assert (mine["kind"], mine["pricePoints"], mine["stockLeft"]) == ("GOODS", 300, 5)
    named = await publish(client, world.a.token, goods("A's cap", 200, partnerId=world.a.id))
    assert named["partner"]["id"] == world.a.id

    before = await catalog_counts(engine)
    refusals = {
        "A naming B": (world.a.token, {"partnerId": world.b.id}),
        "A naming an unknown partner": (world.a.token, {"partnerId": str(uuid.uuid4())}),
        "no catalog:write": (world.c.token, {}),
        "member": (world.member.token, {}),
        "anonymous": (None, {}),
    }
    for name, (token, extra) in refusals.items():
        r = await call(client, PUBLISH, goods("Sneaky", 10, **extra), token)
        assert (r["__typename"], r["code"]) == ("ForbiddenError", "FORBIDDEN"), name
    r = await call(client, PUBLISH, goods("Whose?", 10), world.op)
    assert (r["code"], r["field"]) == ("VALIDATION", "partnerId")
    r = await call(client, PUBLISH, goods("Nobody's", 10, partnerId=str(uuid.uuid4())), world.op)
    assert (r["__typename"], r["code"]) == ("NotFoundError", "PARTNER_NOT_FOUND")
    assert await catalog_counts(engine) == before

    by_op = await publish(client, world.op, goods("B's tote", 150, partnerId=world.b.id))
    assert by_op["partner"]["id"] == world.b.id


async def test_only_the_owner_or_the_operator_changes_or_retires_a_reward(client, engine, world):
    reward = await publish(client, world.a.token, goods("A's lamp", 900, stock=3, category="home"))
    voucher = await publish(
        client, world.a.token, {"title": "A's voucher", "kind": "VOUCHER", "pricePoints": 50}
    )
    rid = reward["id"]

    async def stored() -> dict[str, Any]:
        page = await gql(
            client,
            REWARDS,
            {"first": 100, "includeRetired": True, "partnerId": world.a.id},
            world.op,
        )
        return next(e["node"] for e in page["rewards"]["edges"] if e["node"]["id"] == rid)

    untouched = await stored()
    before = await catalog_counts(engine)
    for name, token in {
        "B": world.b.token,
        "C": world.c.token,
        "member": world.member.token,
    }.items():
        upd = await call(client, UPDATE, {"rewardId": rid, "pricePoints": 1}, token)
        ret = await call(client, RETIRE, {"rewardId": rid}, token)
        add = await call(client, ADD_CODES, {"rewardId": voucher["id"], "codes": ["X1"]}, token)
        expected = "NOT_FOUND" if name == "B" else "FORBIDDEN"  # B is not told it exists
        assert (upd["code"], ret["code"], add["code"]) == (expected,) * 3, name
    for unknown in (str(uuid.uuid4()), "not-an-id"):
        assert (await call(client, UPDATE, {"rewardId": unknown, "title": "x"}, world.a.token))[
            "code"
        ] == "NOT_FOUND"
        assert (await call(client, RETIRE, {"rewardId": unknown}, world.op))["code"] == "NOT_FOUND"
    assert await catalog_counts(engine) == before
    assert await stored() == untouched

    r = await call(client, UPDATE, {"rewardId": rid, "pricePoints": 850, "stock": 7}, world.a.token)
    assert r["__typename"] == "UpdateRewardSuccess", r
    assert (r["reward"]["pricePoints"], r["reward"]["stockLeft"]) == (850, 7)
    assert (r["reward"]["title"], r["reward"]["category"]) == ("A's lamp", "home")  # kept
    r = await call(client, UPDATE, {"rewardId": rid, "category": None, "title": "Lamp"}, world.op)
    assert (r["reward"]["title"], r["reward"]["category"]) == ("Lamp", None)
    r = await call(client, UPDATE, {"rewardId": rid, "stock": None}, world.op)
    assert r["reward"]["stockLeft"] is None  # unlimited now

    r = await call(client, RETIRE, {"rewardId": rid}, world.a.token)
    assert r["__typename"] == "RetireRewardSuccess" and r["reward"]["retiredAt"]
    again = await call(client, RETIRE, {"rewardId": rid}, world.op)
    assert again["reward"]["retiredAt"] == r["reward"]["retiredAt"]  # retiring twice: no change
    r = await call(client, UPDATE, {"rewardId": rid, "title": "Back?"}, world.a.token)
    assert (r["code"], r["field"]) == ("VALIDATION", "rewardId")

    r = await call(client, ADD_CODES, {"rewardId": voucher["id"], "codes": ["V1", "V2"]}, world.op)
    assert (r["added"], r["reward"]["stockLeft"]) == (2, 2)


async def test_bad_input_is_a_typed_validation_error_and_changes_nothing(client, engine, world):
    voucher = await publish(
        client,
        world.a.token,
        {"title": "Pool", "kind": "VOUCHER", "pricePoints": 10, "voucherCodes": ["P-1", "P-2"]},
    )
    assert voucher["stockLeft"] == 2
    box = await publish(client, world.a.token, goods("Box", 10, stock=1))
    start = datetime(2030, 1, 1, tzinfo=UTC)
    publish_cases = {
        "zero price": (goods("x", 0), "pricePoints"),
        "negative price": (goods("x", -5), "pricePoints"),
        "price over the ledger's limit": (goods("x", 1_000_000_001), "pricePoints"),
        "negative stock": (goods("x", 10, stock=-1), "stock"),
        "stock on a voucher": (
            {"title": "x", "kind": "VOUCHER", "pricePoints": 10, "stock": 5},
            "stock",
        ),
        "codes on goods": (goods("x", 10, voucherCodes=["a"]), "voucherCodes"),
        "unknown kind": ({"title": "x", "kind": "FOOD", "pricePoints": 10}, "kind"),
        "empty title": (goods("  ", 10), "title"),
        "huge title": (goods("t" * 201, 10), "title"),
        "empty category": (goods("x", 10, category=" "), "category"),
        "window end before start": (
            goods(
                "x",
                10,
                availableFrom=start.isoformat(),
                availableUntil=(start - timedelta(days=1)).isoformat(),
            ),
            "availableUntil",
        ),
        "empty window": (
            goods("x", 10, availableFrom=start.isoformat(), availableUntil=start.isoformat()),
            "availableUntil",
        ),
        "duplicate codes": (
            {"title": "x", "kind": "VOUCHER", "pricePoints": 10, "voucherCodes": ["d", "d"]},
            "voucherCodes[1]",
        ),
        "NUL in a code": (
            {"title": "x", "kind": "VOUCHER", "pricePoints": 10, "voucherCodes": ["ok", "a\x00"]},
            "voucherCodes[1]",
        ),
    }
    add_cases = {
        "no codes": ({"rewardId": voucher["id"], "codes": []}, "codes"),
        "101-character code": ({"rewardId": voucher["id"], "codes": ["c" * 101]}, "codes[0]"),
        "empty code": ({"rewardId": voucher["id"], "codes": ["ok", " "]}, "codes[1]"),
        "twice in the list": ({"rewardId": voucher["id"], "codes": ["n", "n"]}, "codes[1]"),
        "already in the pool": ({"rewardId": voucher["id"], "codes": ["new", "P-1"]}, "codes"),
        "codes for goods": ({"rewardId": box["id"], "codes": ["g"]}, "rewardId"),
    }
    update_cases = {
        "zero price": ({"rewardId": box["id"], "pricePoints": 0}, "pricePoints"),
        "null price": ({"rewardId": box["id"], "pricePoints": None}, "pricePoints"),
        "null title": ({"rewardId": box["id"], "title": None}, "title"),
        "negative stock": ({"rewardId": box["id"], "stock": -1}, "stock"),
        "stock on a voucher": ({"rewardId": voucher["id"], "stock": 3}, "stock"),
        "end before the start it has": (
            {"rewardId": box["id"], "availableFrom": start.isoformat()},
            None,  # fine on its own: the end is set just below
        ),
    }
    before = await catalog_counts(engine)
    for name, (input_, field) in publish_cases.items():
        r = await call(client, PUBLISH, input_, world.a.token)
        assert (r["__typename"], r["code"], r["field"]) == (
            "ValidationError",
            "VALIDATION",
            field,
        ), name
    for name, (input_, field) in add_cases.items():
        r = await call(client, ADD_CODES, input_, world.a.token)
        assert (r["code"], r["field"]) == ("VALIDATION", field), (name, r)
    # A list past the request body's limit (64 KiB) is refused before GraphQL reads it; the
    # catalog's own cap (10000 codes per call) is in tests/catalog.
    r = await client.post(
        "/graphql",
        json={
            "query": ADD_CODES,
            "variables": {"input": {"rewardId": voucher["id"], "codes": ["c"] * 30_000}},
        },
        headers={"Authorization": f"Bearer {world.a.token}"},
    )
    assert r.status_code == 413 and r.json()["errors"][0]["extensions"]["code"] == (
        "PAYLOAD_TOO_LARGE"
    )
    assert await catalog_counts(engine) == before
    for name, (input_, field) in update_cases.items():
        r = await call(client, UPDATE, input_, world.a.token)
        if field is None:
            assert r["__typename"] == "UpdateRewardSuccess", (name, r)
        else:
            assert (r["code"], r["field"]) == ("VALIDATION", field), (name, r)
    r = await call(
        client,
        UPDATE,
        {"rewardId": box["id"], "availableUntil": (start - timedelta(hours=1)).isoformat()},
        world.a.token,
    )
    assert (r["code"], r["field"]) == ("VALIDATION", "availableUntil")  # checked against the start

    # Past GraphQL's 32-bit Int: refused by GraphQL itself (a request error, not a 500), and
    # nothing is written.
    before = await catalog_counts(engine)
    for input_ in (goods("x", 2**31), goods("x", 10, stock=2**40)):
        body = await raw(client, PUBLISH, {"input": input_}, world.a.token)
        assert body.get("data") is None and body["errors"], body
        assert "32-bit" in body["errors"][0]["message"]
    assert await catalog_counts(engine) == before


async def test_browsing_filters_windows_and_pages(client, world):
    now = datetime.now(UTC)
    op = world.op
    p = await setup_partner(client, op, name="Browse P", scopes=WRITER)
    q = await setup_partner(client, op, name="Browse Q", scopes=WRITER)
    cat = f"cat-{key()}"
    live = [
        await publish(client, p.token, goods(f"P{i}", 100 * i, stock=i, category=cat))
        for i in range(1, 6)
    ]
    retired = await publish(client, p.token, goods("P retired", 10, category=cat))
    await call(client, RETIRE, {"rewardId": retired["id"]}, p.token)
    future = await publish(
        client, p.token, goods("P later", 10, availableFrom=(now + timedelta(days=1)).isoformat())
    )
    past = await publish(
        client,
        p.token,
        goods(
            "P gone",
            10,
            availableFrom=(now - timedelta(days=2)).isoformat(),
            availableUntil=(now - timedelta(days=1)).isoformat(),
        ),
    )
    current = await publish(
        client,
        p.token,
        goods(
            "P now",
            700,
            availableFrom=(now - timedelta(days=1)).isoformat(),
            availableUntil=(now + timedelta(days=1)).isoformat(),
        ),
    )
    q_item = await publish(client, q.token, goods("Q1", 250, category=cat))

    async def ids(token: str | None = None, **args: Any) -> list[str]:
        d = await gql(client, REWARDS, {"first": 100, **args}, token)
        return [e["node"]["id"] for e in d["rewards"]["edges"]]

    newest_first = [current["id"], *[r["id"] for r in reversed(live)]]
    assert await ids(partnerId=p.id) == newest_first  # anonymous; no retired, none outside
    assert await ids(world.member.token, partnerId=p.id) == newest_first
    assert await ids(partnerId=p.id, maxPoints=300) == [live[2]["id"], live[1]["id"], live[0]["id"]]
    assert await ids(category=cat) == [q_item["id"], *[r["id"] for r in reversed(live)]]
    assert await ids(category=cat, maxPoints=250) == [q_item["id"], live[1]["id"], live[0]["id"]]
    assert await ids(partnerId=q.id, category="other") == []
    everything = [current, past, future, retired, *reversed(live)]
    assert await ids(p.token, partnerId=p.id, includeRetired=True) == [r["id"] for r in everything]
    assert await ids(p.token, includeRetired=True) == [r["id"] for r in everything]  # its own
    assert await ids(op, partnerId=p.id, includeRetired=True) == [r["id"] for r in everything]

    # Pages of 2 over P's 6 live rewards: 2, 2, 2, then the end.
    seen, after, pages = [], None, []
    while True:
        d = await gql(client, REWARDS, {"first": 2, "after": after, "partnerId": p.id})
        conn = d["rewards"]
        pages.append((len(conn["edges"]), conn["pageInfo"]["hasNextPage"]))
        seen += [e["node"]["id"] for e in conn["edges"]]
        assert conn["pageInfo"]["hasPreviousPage"] == (after is not None)
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert pages == [(2, True), (2, True), (2, False)] and seen == newest_first

    node = (await gql(client, REWARDS, {"first": 1, "partnerId": q.id}))["rewards"]["edges"][0]
    assert node["node"] == {
        **q_item,
        "partner": {"id": q.id, "name": "Browse Q"},
    }
    assert (node["node"]["stockLeft"], node["node"]["retiredAt"]) == (None, None)

    # Affordable: the member's available points (250) buy P1, P2 and Q1.
    await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": world.member.card,
                "amount": rub("250"),
                "orderRef": key(),
                "idempotencyKey": key(),
            }
        },
        world.a.token,
    )
    assert await ids(world.member.token, category=cat, affordable=True) == [
        q_item["id"],
        live[1]["id"],
        live[0]["id"],
    ]
    assert await ids(world.member.token, category=cat, affordable=True, maxPoints=150) == [
        live[0]["id"]
    ]


@pytest.mark.parametrize(
    ("caller", "args", "code"),
    [
        ("anonymous", {"affordable": True}, "FORBIDDEN"),
        ("partner", {"affordable": True}, "FORBIDDEN"),
        ("anonymous", {"includeRetired": True}, "FORBIDDEN"),
        ("member", {"includeRetired": True}, "FORBIDDEN"),
        ("no_scope", {"includeRetired": True}, "FORBIDDEN"),
        ("partner", {"includeRetired": True, "partnerId": "B"}, "FORBIDDEN"),
        ("anonymous", {"first": 0}, "VALIDATION"),
        ("anonymous", {"first": 101}, "VALIDATION"),
        ("anonymous", {"maxPoints": -1}, "VALIDATION"),
        ("anonymous", {"partnerId": "nope"}, "VALIDATION"),
        ("anonymous", {"after": "bm9wZQ=="}, "VALIDATION"),
    ],
)
async def test_browsing_refusals(client, world, caller, args, code):
    token = {
        "anonymous": None,
        "partner": world.a.token,
        "member": world.member.token,
        "no_scope": world.c.token,
    }[caller]
    if args.get("partnerId") == "B":
        args = {**args, "partnerId": world.b.id}
    body = await raw(client, REWARDS, {"first": 10, **args}, token)
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == code, body
