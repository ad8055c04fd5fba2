"""Bad input is never a 500 (issue 9, items 15-18): NUL and unpaired surrogates in any string
argument, request bodies that are not a GraphQL request, forged cursors, date-times out of range.
Each is refused as VALIDATION (or a 400 with a JSON error), and nothing is written."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.gateway.conftest import BASE_URL
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

# The JSON escapes as they travel (httpx cannot encode a lone surrogate itself).
BAD = {"nul": "\\u0000", "surrogate": "\\ud800"}
MARK = "BADCHARHERE"


@dataclass
class World:
    op: str
    partner: PartnerHandle
    member: MemberHandle


@pytest.fixture(scope="module")
async def world(app, engine) -> World:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        op = await operator_token(c, engine)
        partner = await setup_partner(c, op, name="Bad input")
        member = await register_and_login(c)
    return World(op, partner, member)


def body_with(query: str, variables: dict[str, Any], bad: str) -> bytes:
    """The request body, with every MARK replaced by the raw JSON escape `bad`."""
    return json.dumps({"query": query, "variables": variables}).replace(MARK, bad).encode()


async def post_raw(client: httpx.AsyncClient, body: bytes, token: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return await client.post("/graphql", content=body, headers=headers)


# Counters of requests, not data: every request counts against its caller's rate limit, a
# refused one too (gateway.ratelimit).
REQUEST_COUNTERS = ("rate_limit_windows",)


async def row_counts(engine) -> dict[str, int]:
    """Rows in every table of the database (but the request counters): what a refused request
    must leave unchanged."""
    async with engine.connect() as c:
        tables = (
            (await c.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))
            .scalars()
            .all()
        )
        union = " UNION ALL ".join(
            f"SELECT '{t}', count(*) FROM \"{t}\"" for t in tables if t not in REQUEST_COUNTERS
        )
        return dict((await c.execute(text(union))).all())  # type: ignore[arg-type]


def mutation(name: str, input_type: str, required: bool = True) -> str:
    bang = "!" if required else ""
    return (
        f"mutation($input: {input_type}{bang}) {{ {name}(input: $input) {{ __typename "
        "... on ValidationError { code message field } ... on Error { code message } } }"
    )


X = f"a{MARK}b"  # an otherwise ordinary value with the bad character inside
CARD = "4000000000000002"
HOLD = str(uuid.uuid4())
AGREEMENT = {"issuePrice": "1", "redemptionPrice": "1", "effectiveFrom": "2020-01-01T00:00:00Z"}
RULE = {"baseRate": "1", "categoryRates": [], "holdDays": 0, "maxRedeemShare": "1"}
EARN_IN = {"cardNumber": CARD, "amount": rub("10.00"), "orderRef": "o-1", "idempotencyKey": "k-1"}
AUTH_IN = {
    "redemptionCode": "123456789012",
    "points": 1,
    "purchaseAmount": rub("10.00"),
    "orderRef": "o-1",
    "idempotencyKey": "k-1",
}

AWARD_IN = {"cardNumber": CARD, "points": 5, "reason": "review", "idempotencyKey": "k-1"}

# (mutation, input type, caller, input, the field the error names)
MUTATION_CASES: list[tuple[str, str, str, dict[str, Any], str]] = [
    (
        "createPartner",
        "CreatePartnerInput",
        "op",
        {"name": X, "category": "c", "currency": "RUB"},
        "name",
    ),
    (
        "createPartner",
        "CreatePartnerInput",
        "op",
        {"name": "n", "category": X, "currency": "RUB"},
        "category",
    ),
    (
        "createPartner",
        "CreatePartnerInput",
        "op",
        {"name": "n", "category": "c", "currency": X},
        "currency",
    ),
    (
        "setAgreement",
        "SetAgreementInput",
        "op",
        {"partnerId": "P", **AGREEMENT, "issuePrice": X},
        "issuePrice",
    ),
    ("setAgreement", "SetAgreementInput", "op", {**AGREEMENT, "partnerId": X}, "partnerId"),
    (
        "setEarnRule",
        "SetEarnRuleInput",
        "op",
        {"partnerId": "P", **RULE, "baseRate": X},
        "baseRate",
    ),
    (
        "setEarnRule",
        "SetEarnRuleInput",
        "op",
        {"partnerId": "P", **RULE, "maxRedeemShare": X},
        "maxRedeemShare",
    ),
    (
        "setEarnRule",
        "SetEarnRuleInput",
        "op",
        {
            "partnerId": "P",
            **RULE,
            "categoryRates": [{"category": "ok", "rate": "1"}, {"category": X, "rate": "2"}],
        },
        "categoryRates[1].category",
    ),
    (
        "setEarnRule",
        "SetEarnRuleInput",
        "op",
        {"partnerId": "P", **RULE, "categoryRates": [{"category": "fuel", "rate": X}]},
        "categoryRates[0].rate",
    ),
    (
        "createPartnerClient",
        "CreatePartnerClientInput",
        "op",
        {"partnerId": "P", "scopes": ["points:earn", X]},
        "scopes[1]",
    ),
    (
        "registerMember",
        "RegisterMemberInput",
        None,
        {"email": f"{X}@example.com", "password": "long-enough", "name": "n"},
        "email",
    ),
    (
        "registerMember",
        "RegisterMemberInput",
        None,
        {"email": "x@example.com", "password": "long-enough", "name": X},
        "name",
    ),
    (
        "registerMember",
        "RegisterMemberInput",
        None,
        {"email": "x@example.com", "password": f"long-{X}", "name": "n"},
        "password",
    ),
    ("earn", "EarnInput", "partner", {**EARN_IN, "orderRef": X}, "orderRef"),
    ("earn", "EarnInput", "partner", {**EARN_IN, "idempotencyKey": X}, "idempotencyKey"),
    ("earn", "EarnInput", "partner", {**EARN_IN, "category": X}, "category"),
    ("earn", "EarnInput", "partner", {**EARN_IN, "cardNumber": X}, "cardNumber"),
    (
        "earn",
        "EarnInput",
        "partner",
        {**EARN_IN, "amount": {"amount": X, "currency": "RUB"}},
        "amount.amount",
    ),
    (
        "earn",
        "EarnInput",
        "partner",
        {**EARN_IN, "amount": {"amount": "1", "currency": X}},
        "amount.currency",
    ),
    (
        "refund",
        "RefundInput",
        "partner",
        {"orderRef": X, "amount": rub("1"), "idempotencyKey": "k"},
        "orderRef",
    ),
    (
        "refund",
        "RefundInput",
        "partner",
        {"orderRef": "o", "amount": rub("1"), "idempotencyKey": X},
        "idempotencyKey",
    ),
    (
        "authorizeRedemption",
        "AuthorizeRedemptionInput",
        "partner",
        {**AUTH_IN, "redemptionCode": X},
        "redemptionCode",
    ),
    (
        "authorizeRedemption",
        "AuthorizeRedemptionInput",
        "partner",
        {**AUTH_IN, "orderRef": X},
        "orderRef",
    ),
    (
        "authorizeRedemption",
        "AuthorizeRedemptionInput",
        "partner",
        {**AUTH_IN, "idempotencyKey": X},
        "idempotencyKey",
    ),
    (
        "captureRedemption",
        "CaptureRedemptionInput",
        "partner",
        {"holdId": X, "points": 1, "idempotencyKey": "k"},
        "holdId",
    ),
    (
        "captureRedemption",
        "CaptureRedemptionInput",
        "partner",
        {"holdId": HOLD, "points": 1, "idempotencyKey": X},
        "idempotencyKey",
    ),
    (
        "voidRedemption",
        "VoidRedemptionInput",
        "partner",
        {"holdId": X, "idempotencyKey": "k"},
        "holdId",
    ),
    (
        "voidRedemption",
        "VoidRedemptionInput",
        "partner",
        {"holdId": HOLD, "idempotencyKey": X},
        "idempotencyKey",
    ),
    ("createRedemptionCode", "CreateRedemptionCodeInput", "member", {"partnerId": X}, "partnerId"),
    (
        "registerMember",
        "RegisterMemberInput",
        None,
        {"email": "x@example.com", "password": "long-enough", "name": "n", "referralCode": X},
        "referralCode",
    ),
    ("awardBonus", "AwardBonusInput", "partner", {**AWARD_IN, "cardNumber": X}, "cardNumber"),
    ("awardBonus", "AwardBonusInput", "partner", {**AWARD_IN, "reason": X}, "reason"),
    (
        "awardBonus",
        "AwardBonusInput",
        "partner",
        {**AWARD_IN, "idempotencyKey": X},
        "idempotencyKey",
    ),
    (
        "transferPoints",
        "TransferPointsInput",
        "member",
        {"toCardNumber": X, "points": 1, "idempotencyKey": "k"},
        "toCardNumber",
    ),
    (
        "transferPoints",
        "TransferPointsInput",
        "member",
        {"toCardNumber": CARD, "points": 1, "idempotencyKey": X},
        "idempotencyKey",
    ),
    (
        "publishReward",
        "PublishRewardInput",
        "partner",
        {"title": X, "kind": "GOODS", "pricePoints": 1},
        "title",
    ),
    (
        "publishReward",
        "PublishRewardInput",
        "op",
        {
            "partnerId": "P",
            "title": "t",
            "kind": "VOUCHER",
            "pricePoints": 1,
            "voucherCodes": ["ok", X],
        },
        "voucherCodes[1]",
    ),
    ("updateReward", "UpdateRewardInput", "partner", {"rewardId": HOLD, "title": X}, "title"),
    ("retireReward", "RetireRewardInput", "op", {"rewardId": X}, "rewardId"),
    ("addVoucherCodes", "AddVoucherCodesInput", "op", {"rewardId": HOLD, "codes": [X]}, "codes[0]"),
    (
        "redeemReward",
        "RedeemRewardInput",
        "member",
        {"rewardId": HOLD, "idempotencyKey": X},
        "idempotencyKey",
    ),
    ("createOffer", "CreateOfferInput", "op", {"name": X, "bonusPoints": 5}, "name"),
    (
        "createOffer",
        "CreateOfferInput",
        "op",
        {"name": "n", "multiplier": "2", "category": X},
        "category",
    ),
    ("endOffer", "EndOfferInput", "op", {"offerId": X}, "offerId"),
    ("activateOffer", "ActivateOfferInput", "member", {"offerId": X}, "offerId"),
    (
        "createPromoCode",
        "CreatePromoCodeInput",
        "op",
        {"offerId": HOLD, "code": X, "maxRedemptions": 1, "validUntil": "2999-01-01T00:00:00Z"},
        "code",
    ),
    ("applyPromoCode", "ApplyPromoCodeInput", "member", {"code": X}, "code"),
    ("closeSettlementPeriod", "CloseSettlementPeriodInput", "op", {"periodId": X}, "periodId"),
    (
        "reconcileStatement",
        "ReconcileStatementInput",
        "partner",
        {"periodId": HOLD, "csv": f"order_ref,kind,points,amount\n{X},earn,1,1\n"},
        "csv",
    ),
    (
        "reconcileStatement",
        "ReconcileStatementInput",
        "partner",
        {"periodId": HOLD, "csv": "x", "filename": X},
        "filename",
    ),
]


def token_of(world: World, caller: str | None) -> str | None:
    return {"op": world.op, "partner": world.partner.token, "member": world.member.token}.get(
        caller or ""
    )


@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize(
    ("name", "input_type", "caller", "input_", "field"),
    MUTATION_CASES,
    ids=[f"{c[0]}-{c[4]}" for c in MUTATION_CASES],
)
async def test_a_nul_or_lone_surrogate_in_any_mutation_string_is_a_typed_validation_error(
    client, engine, world, bad, name, input_type, caller, input_, field
):
    payload = json.loads(json.dumps(input_).replace('"P"', json.dumps(world.partner.id)))
    query = mutation(name, input_type, required=name != "createRedemptionCode")
    before = await row_counts(engine)
    r = await post_raw(
        client, body_with(query, {"input": payload}, BAD[bad]), token_of(world, caller)
    )
    assert r.status_code == 200, r.text
    assert "errors" not in r.json(), r.json()
    result = r.json()["data"][name]
    assert result["__typename"] == "ValidationError", result
    assert result["code"] == "VALIDATION" and result["field"] == field, result
    assert "NUL" in result["message"]
    assert await row_counts(engine) == before  # nothing written, no audit row either


QUERY_CASES = [
    ("query($x: String) { settlementPeriods(after: $x) { edges { cursor } } }", "op", "after"),
    ("query($x: String) { me { activity(after: $x) { edges { cursor } } } }", "member", "after"),
    ("query($x: ID!) { earnRule(partnerId: $x) { baseRate } }", "op", "partnerId"),
    ("query($x: ID!) { agreements(partnerId: $x) { id } }", "op", "partnerId"),
    ("query($x: ID!) { settlementPeriod(id: $x) { id } }", "op", "id"),
    ("query($x: ID!) { reconciliation(id: $x) { id } }", "partner", "id"),
    ("query($x: String) { rewards(category: $x) { edges { cursor } } }", None, "category"),
    ("query($x: String) { rewards(after: $x) { edges { cursor } } }", None, "after"),
    ("query($x: String) { offers(after: $x) { edges { cursor } } }", "member", "after"),
    (
        "query($x: String) { me { rewardRedemptions(after: $x) { edges { cursor } } } }",
        "member",
        "after",
    ),
]


@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize(("query", "caller", "field"), QUERY_CASES)
async def test_a_nul_or_lone_surrogate_in_a_query_argument_is_a_validation_error(
    client, world, bad, query, caller, field
):
    r = await post_raw(client, body_with(query, {"x": X}, BAD[bad]), token_of(world, caller))
    assert r.status_code == 200, r.text
    errors = r.json()["errors"]
    extensions = {k: v for k, v in errors[0]["extensions"].items() if k != "requestId"}
    assert extensions == {"code": "VALIDATION", "field": field}, errors
    assert "Unexpected" not in errors[0]["message"]


@pytest.mark.parametrize(
    ("literal", "bad"),
    [
        ('"aXb"', "\\\\u0000"),  # GraphQL's own escape, \u0000
        ('"aXb"', "\\u0000"),  # a raw NUL in the literal (JSON's escape)
        ('"""aXb"""', "\\u0000"),  # in a block string
    ],
    ids=["graphql-escape", "raw", "block-string"],
)
async def test_a_nul_in_a_string_literal_of_the_document_is_refused_too(
    client, engine, world, literal, bad
):
    doc = (
        f'mutation {{ createPartner(input: {{name: {literal}, category: "c", currency: "RUB"}}) '
        "{ __typename ... on ValidationError { code field } } }"
    ).replace("X", MARK)
    before = await row_counts(engine)
    r = await post_raw(client, body_with(doc, {}, bad), world.op)
    assert r.json()["data"]["createPartner"] == {
        "__typename": "ValidationError",
        "code": "VALIDATION",
        "field": "name",
    }
    assert await row_counts(engine) == before


async def test_a_lone_surrogate_in_the_document_is_a_syntax_error(client, world):
    doc = 'mutation { createPartner(input: {name: "aXb", category: "c", currency: "RUB"}) { __typename } }'
    r = await post_raw(client, body_with(doc.replace("X", MARK), {}, "\\ud800"), world.op)
    assert r.status_code == 200
    assert r.json()["errors"][0]["message"].startswith("Syntax Error")


BATCH_COUNTERS = ("batched_earns", "single_path", "failed_batches")


async def batch_counters(client: httpx.AsyncClient) -> list[int]:
    """The group commit's counters, from /metrics."""
    lines = (await client.get("/metrics")).text.splitlines()
    return [
        int(float(next(x for x in lines if x.startswith(f"coalition_earn_{n}_total ")).split()[1]))
        for n in BATCH_COUNTERS
    ]


async def test_a_bad_earn_does_not_fail_the_batch_of_the_good_ones(client, world):
    """Eight earns at once, one with a NUL in its orderRef: it is refused before the batcher,
    and the seven others commit in batches, none sent to the slow single path."""
    before = await batch_counters(client)
    earns = [
        {
            "cardNumber": world.member.card,
            "amount": rub("10.00"),
            "orderRef": f"batch-{i}-{MARK}" if i == 3 else f"batch-{key()}",
            "idempotencyKey": key(),
        }
        for i in range(8)
    ]
    responses = await asyncio.gather(
        *(
            post_raw(client, body_with(EARN, {"input": e}, BAD["nul"]), world.partner.token)
            for e in earns
        )
    )
    results = [r.json()["data"]["earn"] for r in responses]
    assert results[3]["__typename"] == "ValidationError", results[3]
    assert all(r["__typename"] == "EarnSuccess" for i, r in enumerate(results) if i != 3), results
    after = await batch_counters(client)
    assert [a - b for a, b in zip(after, before, strict=True)] == [7, 0, 0]


# ---------------------------------------------------------------------------------------------
# Item 16: a body that is not a GraphQL request is a 400 with a JSON error


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"null", "application/json"),
        (b'"str"', "application/json"),
        (b"5", "application/json"),
        (b"true", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'["{ __typename }"]', "application/json"),
        (b"[]", "application/json"),
        (b"{bad", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe\xfa", "application/json"),  # not UTF-8
        (b"[" * 20_000 + b"]" * 20_000, "application/json"),  # nested past the parser's depth
        (b'{"query": 5}', "application/json"),
        (b'{"query": ["{ __typename }"]}', "application/json"),
        (b'{"variables": {}}', "application/json"),
        (b'{"query": "{ __typename }", "variables": 5}', "application/json"),
        (b'{"query": "{ __typename }", "variables": [1]}', "application/json"),
        (b'{"query": "{ __typename }", "variables": "x"}', "application/json"),
        (b'{"query": "{ __typename }", "extensions": 5}', "application/json"),
        (b'{"query": "{ __typename }", "operationName": "\\ud800"}', "application/json"),
        (b'{"query": "{ __typename }"}', "text/plain"),
        (b'{"query": "{ __typename }"}', "application/x-www-form-urlencoded"),
        (b'{"query": "{ __typename }"}', ""),
    ],
)
async def test_a_body_that_is_not_a_graphql_request_is_a_400_with_a_json_error(
    app, body, content_type
):
    # Without a token (none is needed to get this far); exceptions surface as a 500 here.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url=BASE_URL
    ) as c:
        r = await c.post("/graphql", content=body, headers={"content-type": content_type})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST" and error["message"]


async def test_get_variables_that_are_not_an_object_are_a_400(app):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url=BASE_URL
    ) as c:
        r = await c.get(
            "/graphql",
            params={"query": "{ __typename }", "variables": "5"},
            headers={"accept": "application/json"},
        )
    assert r.status_code == 400 and r.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


# ---------------------------------------------------------------------------------------------
# Item 17: forged cursors


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


FORGED_CURSORS = {
    "huge": b64(b"k:99999999999999999999999"),
    "past int64": b64(b"k:9223372036854775808"),
    "negative": b64(b"k:-5"),
    "wrong prefix": b64(b"x:5"),
    "no prefix": b64(b"5"),
    "empty value": b64(b"k:"),
    "not a number": b64(b"k:five"),
    "spaces": b64(b"k: 5"),
    "underscores": b64(b"k:1_000"),
    "other digits": b64("k:\u0665".encode()),  # ARABIC-INDIC DIGIT FIVE: int() takes it
    "not UTF-8": b64(b"k:\xff\xfe"),
    "not base64": "!!!not-base64!!!",
    "not ASCII": "é" * 8,
    "too long": b64(b"k:" + b"1" * 100),
}


@pytest.mark.parametrize("cursor", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
@pytest.mark.parametrize(
    ("query", "caller"),
    [
        ("query($c: String) { settlementPeriods(after: $c) { edges { cursor } } }", "op"),
        ("query($c: String) { me { activity(after: $c) { edges { cursor } } } }", "member"),
    ],
    ids=["settlementPeriods", "me.activity"],
)
async def test_a_forged_cursor_is_a_validation_error(client, world, query, caller, cursor):
    r = await client.post(
        "/graphql",
        json={"query": query, "variables": {"c": cursor}},
        headers={"Authorization": f"Bearer {token_of(world, caller)}"},
    )
    assert r.status_code == 200
    errors = r.json()["errors"]
    assert errors[0]["extensions"]["code"] == "VALIDATION", errors
    assert errors[0]["message"] == "malformed cursor"


# Cursors keyed by a (time-ordered) UUID: any 128-bit number is a key, no more.
FORGED_ID_CURSORS = {
    **{k: v for k, v in FORGED_CURSORS.items() if k not in {"huge", "past int64"}},
    "past 128 bits": b64(f"k:{2**128}".encode()),
}


@pytest.mark.parametrize("cursor", FORGED_ID_CURSORS.values(), ids=FORGED_ID_CURSORS.keys())
@pytest.mark.parametrize(
    ("query", "caller"),
    [
        ("query($c: String) { rewards(after: $c) { edges { cursor } } }", None),
        (
            "query($c: String) { me { rewardRedemptions(after: $c) { edges { cursor } } } }",
            "member",
        ),
    ],
    ids=["rewards", "me.rewardRedemptions"],
)
async def test_a_forged_id_cursor_is_a_validation_error(client, world, query, caller, cursor):
    token = token_of(world, caller)
    r = await client.post(
        "/graphql",
        json={"query": query, "variables": {"c": cursor}},
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    assert r.status_code == 200
    errors = r.json()["errors"]
    assert errors[0]["extensions"]["code"] == "VALIDATION", errors
    assert errors[0]["message"] == "malformed cursor"


async def test_the_largest_cursors_are_accepted(client, world):
    """Bounds, not a ban: the int64 maximum pages activity; year 9999 pages periods."""
    me = "query($c: String) { me { activity(after: $c) { edges { cursor } } } }"
    d = await gql(client, me, {"c": b64(b"k:9223372036854775807")}, world.member.token)
    assert d["me"]["activity"]["edges"] is not None
    periods = "query($c: String) { settlementPeriods(after: $c) { edges { cursor } } }"
    d = await gql(client, periods, {"c": b64(b"k:253402214400000000")}, world.op)
    assert d["settlementPeriods"]["edges"] is not None
    rewards = "query($c: String) { rewards(after: $c) { edges { cursor } } }"
    d = await gql(client, rewards, {"c": b64(f"k:{2**128 - 1}".encode())})
    assert d["rewards"]["edges"] is not None


# ---------------------------------------------------------------------------------------------
# Item 18: date-times that are no instant within range

SET_AGREEMENT_Q = mutation("setAgreement", "SetAgreementInput")
RUN_SETTLEMENT_Q = mutation("runSettlement", "RunSettlementInput")

OUT_OF_RANGE = [
    "0001-01-01T00:00:00+14:00",  # overflows on conversion to UTC
    "9999-12-31T23:59:59-14:00",  # overflows the other way
    "9999-12-31T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "2021-01-01T00:00:00",  # no offset: not an instant
]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
async def test_set_agreement_refuses_an_effective_from_out_of_range(client, engine, world, value):
    before = await row_counts(engine)
    d = await gql(
        client,
        SET_AGREEMENT_Q,
        {"input": {**AGREEMENT, "partnerId": world.partner.id, "effectiveFrom": value}},
        world.op,
    )
    result = d["setAgreement"]
    assert result["__typename"] == "ValidationError" and result["field"] == "effectiveFrom"
    assert await row_counts(engine) == before


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("which", ["periodStart", "periodEnd"])
async def test_run_settlement_refuses_a_period_bound_out_of_range(
    client, engine, world, value, which
):
    bounds = {"periodStart": "2024-01-01T00:00:00Z", "periodEnd": "2024-02-01T00:00:00Z"}
    before = await row_counts(engine)
    d = await gql(client, RUN_SETTLEMENT_Q, {"input": {**bounds, which: value}}, world.op)
    result = d["runSettlement"]
    assert result["__typename"] == "ValidationError" and result["field"] == which, result
    assert await row_counts(engine) == before


GRAPHQL_OWN_ERRORS = {
    "an Int above 2^31 in a variable": (
        "query($n: Int!) { me { activity(first: $n) { edges { cursor } } } }",
        {"n": 2**31},
        "VALIDATION",
    ),
    "a string for an Int": (
        "query($n: Int!) { me { activity(first: $n) { edges { cursor } } } }",
        {"n": "ten"},
        "VALIDATION",
    ),
    "an Int above 2^31 written in the query": (
        "{ me { activity(first: 3000000000) { edges { cursor } } } }",
        None,
        "VALIDATION",
    ),
    "a missing variable": (
        "query($n: Int!) { me { activity(first: $n) { edges { cursor } } } }",
        {},
        "VALIDATION",
    ),
    "an unknown field": ("{ me { noSuchField } }", None, "GRAPHQL_VALIDATION_FAILED"),
    "a document that does not parse": ("{ me { ", None, "GRAPHQL_PARSE_FAILED"),
}


@pytest.mark.parametrize(
    ("query", "variables", "code"), GRAPHQL_OWN_ERRORS.values(), ids=GRAPHQL_OWN_ERRORS.keys()
)
async def test_errors_graphql_raises_itself_carry_a_code(client, world, query, variables, code):
    """Not only our resolvers' errors: those of parsing, validation and value coercion have a
    stable code too, and no data is produced."""
    r = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token_of(world, 'member')}"},
    )
    assert r.status_code == 200
    body = r.json()
    assert body.get("data") is None, body
    codes = [e["extensions"]["code"] for e in body["errors"]]
    # A huge literal also makes the query too costly: both errors are reported, each coded.
    assert code in codes and set(codes) <= {code, "QUERY_TOO_COMPLEX"}, body
