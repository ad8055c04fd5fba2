"""The whole journey through HTTP with real tokens: operator sets up partners A and B, a member
registers and logs in (authorization code + PKCE through the HTML form), A earns, the member
issues codes, B authorizes, captures part, voids another, refunds; replays and conflicts."""

from __future__ import annotations

from sqlalchemy import text

from tests.gateway.gql_helpers import (
    AUTHORIZE,
    CAPTURE,
    CREATE_CODE,
    EARN,
    ME,
    REFUND,
    VOID,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)


async def balance(client, member) -> dict:
    return (await gql(client, ME, {"first": 50}, member.token))["me"]["balance"]


async def test_journey(client, engine):
    op = await operator_token(client, engine)
    a = await setup_partner(
        client,
        op,
        name="A Fuel",
        base_rate="0.1",
        category_rates=[{"category": "fuel", "rate": "0.2"}],
    )
    b = await setup_partner(client, op, name="B Cinema", base_rate="0.05", max_redeem_share="0.5")
    m = await register_and_login(client)
    assert (await balance(client, m)) == {
        "available": 0,
        "pending": 0,
        "onHold": 0,
        "total": 0,
        "debt": 0,
    }

    # A earns: 1500 RUB of fuel at 0.2 points per rouble = 300 points.
    earn_input = {
        "cardNumber": m.card,
        "amount": rub("1500.00"),
        "category": "fuel",
        "orderRef": "A-1",
        "idempotencyKey": key(),
    }
    first = (await gql(client, EARN, {"input": earn_input}, a.token))["earn"]
    assert first["__typename"] == "EarnSuccess" and first["transaction"]["points"] == 300
    assert first["transaction"]["status"] == "available" and first["replayed"] is False
    replay = (await gql(client, EARN, {"input": earn_input}, a.token))["earn"]
    assert replay["transaction"] == first["transaction"] and replay["replayed"] is True
    conflict = (
        await gql(client, EARN, {"input": {**earn_input, "amount": rub("10.00")}}, a.token)
    )["earn"]
    assert conflict["code"] == "IDEMPOTENCY_CONFLICT"
    # A second earn on the same order with a fresh key is refused.
    dup = (await gql(client, EARN, {"input": {**earn_input, "idempotencyKey": key()}}, a.token))[
        "earn"
    ]
    assert dup["code"] == "VALIDATION"
    assert (await balance(client, m))["available"] == 300

    # The member lets B take up to 200 points; B authorizes 150 on a 1000 RUB bill.
    code = (
        await gql(client, CREATE_CODE, {"input": {"maxPoints": 200, "partnerId": b.id}}, m.token)
    )["createRedemptionCode"]["code"]
    auth_input = {
        "redemptionCode": code,
        "points": 150,
        "purchaseAmount": rub("1000.00"),
        "orderRef": "B-1",
        "idempotencyKey": key(),
    }
    held = (await gql(client, AUTHORIZE, {"input": auth_input}, b.token))["authorizeRedemption"]
    assert held["__typename"] == "AuthorizeRedemptionSuccess" and held["hold"]["points"] == 150
    assert (await balance(client, m)) == {
        "available": 150,
        "pending": 0,
        "onHold": 150,
        "total": 300,
        "debt": 0,
    }
    again = (await gql(client, AUTHORIZE, {"input": auth_input}, b.token))["authorizeRedemption"]
    assert again["hold"]["id"] == held["hold"]["id"] and again["replayed"] is True
    # The code is used up: a new authorization with it is refused.
    reuse = await gql(
        client, AUTHORIZE, {"input": {**auth_input, "idempotencyKey": key()}}, b.token
    )
    assert reuse["authorizeRedemption"]["code"] == "INVALID_REDEMPTION_CODE"

    # B captures 100 of the 150: 50 go back to the member.
    cap_input = {"holdId": held["hold"]["id"], "points": 100, "idempotencyKey": key()}
    cap = (await gql(client, CAPTURE, {"input": cap_input}, b.token))["captureRedemption"]
    assert cap["__typename"] == "CaptureRedemptionSuccess" and cap["releasedPoints"] == 50
    assert (await gql(client, CAPTURE, {"input": cap_input}, b.token))["captureRedemption"][
        "replayed"
    ] is True
    again = await gql(client, CAPTURE, {"input": {**cap_input, "idempotencyKey": key()}}, b.token)
    assert again["captureRedemption"]["code"] == "HOLD_NOT_ACTIVE"
    assert (await balance(client, m)) == {
        "available": 200,
        "pending": 0,
        "onHold": 0,
        "total": 200,
        "debt": 0,
    }

    # Another code, another hold, voided.
    code2 = (await gql(client, CREATE_CODE, {"input": {}}, m.token))["createRedemptionCode"]["code"]
    held2 = (
        await gql(
            client,
            AUTHORIZE,
            {
                "input": {
                    "redemptionCode": code2,
                    "points": 80,
                    "purchaseAmount": rub("400.00"),
                    "orderRef": "B-2",
                    "idempotencyKey": key(),
                }
            },
            b.token,
        )
    )["authorizeRedemption"]
    assert (await balance(client, m))["onHold"] == 80
    void_input = {"holdId": held2["hold"]["id"], "idempotencyKey": key()}
    voided = (await gql(client, VOID, {"input": void_input}, b.token))["voidRedemption"]
    assert voided["hold"]["status"] == "voided"
    assert (await gql(client, VOID, {"input": void_input}, b.token))["voidRedemption"][
        "replayed"
    ] is True
    assert (await balance(client, m)) == {
        "available": 200,
        "pending": 0,
        "onHold": 0,
        "total": 200,
        "debt": 0,
    }

    # B refunds half of its bill: half of the 100 captured points return to the member.
    ref = (
        await gql(
            client,
            REFUND,
            {"input": {"orderRef": "B-1", "amount": rub("500.00"), "idempotencyKey": key()}},
            b.token,
        )
    )["refund"]
    assert ref["__typename"] == "RefundSuccess" and ref["refund"]["pointsReturned"] == 50
    # A refunds its whole order: 300 points reversed; the member has 250, so 50 become debt.
    ref_a = (
        await gql(
            client,
            REFUND,
            {"input": {"orderRef": "A-1", "amount": rub("1500.00"), "idempotencyKey": key()}},
            a.token,
        )
    )["refund"]
    assert ref_a["refund"]["pointsReversed"] == 300
    assert (await balance(client, m)) == {
        "available": 0,
        "pending": 0,
        "onHold": 0,
        "total": 0,
        "debt": 50,
    }
    # Over-refunding is refused, and B cannot refund A's order.
    over = (
        await gql(
            client,
            REFUND,
            {"input": {"orderRef": "A-1", "amount": rub("1.00"), "idempotencyKey": key()}},
            a.token,
        )
    )["refund"]
    assert over["code"] == "VALIDATION"
    foreign = (
        await gql(
            client,
            REFUND,
            {"input": {"orderRef": "A-1", "amount": rub("1.00"), "idempotencyKey": key()}},
            b.token,
        )
    )["refund"]
    assert foreign["code"] == "NOT_FOUND"

    # The activity is a Relay connection, newest first, with partners resolved.
    me = (await gql(client, ME, {"first": 2}, m.token))["me"]
    page1 = me["activity"]
    assert len(page1["edges"]) == 2 and page1["pageInfo"]["hasNextPage"] is True
    page2 = (
        await gql(client, ME, {"first": 50, "after": page1["pageInfo"]["endCursor"]}, m.token)
    )["me"]["activity"]
    kinds = [e["node"]["kind"] for e in page1["edges"] + page2["edges"]]
    assert kinds[-1] == "earn" and kinds.count("capture") == 1 and "reversal" in kinds
    assert {e["node"]["partner"]["name"] for e in page1["edges"] + page2["edges"]} == {
        "A Fuel",
        "B Cinema",
    }

    # The ledger agrees: every transaction sums to zero.
    async with engine.connect() as conn:
        bad = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT transaction_id FROM entries GROUP BY 1 HAVING sum(amount) <> 0) x"
                )
            )
        ).scalar_one()
    assert bad == 0


async def test_share_of_bill_payable_in_points_is_enforced(client, engine):
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Earner", base_rate="1")
    b = await setup_partner(client, op, name="Capped", max_redeem_share="0.2")
    m = await register_and_login(client)
    await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": m.card,
                "amount": rub("1000"),
                "orderRef": "o1",
                "idempotencyKey": key(),
            }
        },
        a.token,
    )
    code = (await gql(client, CREATE_CODE, {"input": {}}, m.token))["createRedemptionCode"]["code"]
    inp = {
        "redemptionCode": code,
        "points": 201,
        "purchaseAmount": rub("1000.00"),
        "orderRef": "x",
        "idempotencyKey": key(),
    }
    r = (await gql(client, AUTHORIZE, {"input": inp}, b.token))["authorizeRedemption"]
    assert r["code"] == "LIMIT_EXCEEDED"
    # A refused authorization does not use the code up.
    ok = await gql(
        client, AUTHORIZE, {"input": {**inp, "points": 200, "idempotencyKey": key()}}, b.token
    )
    assert ok["authorizeRedemption"]["__typename"] == "AuthorizeRedemptionSuccess"


async def test_refused_authorization_keeps_the_code(client, engine):
    op = await operator_token(client, engine)
    b = await setup_partner(client, op, name="Shop")
    m = await register_and_login(client)
    code = (await gql(client, CREATE_CODE, {"input": {"maxPoints": 10}}, m.token))[
        "createRedemptionCode"
    ]["code"]
    inp = {
        "redemptionCode": code,
        "points": 5,
        "purchaseAmount": rub("100"),
        "orderRef": "o",
        "idempotencyKey": key(),
    }
    r = (await gql(client, AUTHORIZE, {"input": inp}, b.token))["authorizeRedemption"]
    assert r["code"] == "INSUFFICIENT_POINTS"
    r = await gql(
        client, AUTHORIZE, {"input": {**inp, "points": 11, "idempotencyKey": key()}}, b.token
    )
    assert r["authorizeRedemption"]["code"] == "LIMIT_EXCEEDED"
    async with engine.connect() as conn:
        used = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM redemption_codes WHERE member_id = :m AND used_at IS NOT NULL"
                ),
                {"m": m.id},
            )
        ).scalar_one()
    assert used == 0
