"""The access matrix: every operation x every kind of caller, through HTTP with real tokens.

Callers: anonymous, member, another member, partner A, partner B, a partner client lacking the
scope, operator, an expired token, a token signed by an unknown key, a malformed token.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from catalog import offers as catalog_offers
from catalog import promo_codes
from catalog import service as catalog
from catalog.service import RewardDraft
from core import clock
from ledger import service as ledger
from members import codes
from tests.gateway import oauth_helpers as oh
from tests.gateway.catalog_helpers import ADD_CODES, PUBLISH, REDEEM, RETIRE, REWARDS, UPDATE
from tests.gateway.gql_helpers import (
    AUTHORIZE,
    CAPTURE,
    CREATE_CLIENT,
    CREATE_CODE,
    CREATE_PARTNER,
    EARN,
    REFUND,
    REGISTER,
    SET_AGREEMENT,
    SET_EARN_RULE,
    VOID,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

PARTNERS_Q = "{ partners { id name } }"
ME_Q = "{ me { id cardNumber balance { available } } }"
EARN_RULE_Q = "query($p: ID!) { earnRule(partnerId: $p) { baseRate } }"
AGREEMENTS_Q = "query($p: ID!) { agreements(partnerId: $p) { id } }"
PERIODS_Q = (
    "{ settlementPeriods(first: 5) { edges { node { id statements { net { amount } } } } } }"
)
SET_RULES_Q = """mutation($input: SetBonusRulesInput!) { setBonusRules(input: $input) { __typename
  ... on Error { code message } } }"""
RULES_Q = "{ bonusRules { signupPoints referralPoints } }"
AWARD_Q = """mutation($input: AwardBonusInput!) { awardBonus(input: $input) { __typename
  ... on AwardBonusSuccess { bonus { id } } ... on Error { code message } } }"""
TRANSFER_Q = """mutation($input: TransferPointsInput!) { transferPoints(input: $input) { __typename
  ... on TransferPointsSuccess { transfer { id } } ... on Error { code message } } }"""
OFFER_RESULT = """{ __typename ... on Error { code message } } }"""
CREATE_OFFER_Q = "mutation($input: CreateOfferInput!) { createOffer(input: $input) " + OFFER_RESULT
END_OFFER_Q = "mutation($input: EndOfferInput!) { endOffer(input: $input) " + OFFER_RESULT
ACTIVATE_Q = "mutation($input: ActivateOfferInput!) { activateOffer(input: $input) " + OFFER_RESULT
CREATE_PROMO_Q = (
    "mutation($input: CreatePromoCodeInput!) { createPromoCode(input: $input) " + OFFER_RESULT
)
APPLY_PROMO_Q = (
    "mutation($input: ApplyPromoCodeInput!) { applyPromoCode(input: $input) " + OFFER_RESULT
)
OFFERS_Q = "{ offers(first: 5) { edges { node { id activated } } } }"
SET_TIERS_Q = """mutation($input: SetTiersInput!) { setTiers(input: $input) { __typename
  ... on Error { code message } } }"""
TIERS_Q = "{ tiers { tiers { name threshold { amount } multiplier } } }"
REVIEW_Q = """mutation($input: RunTierReviewInput!) { runTierReview(input: $input) { __typename
  ... on RunTierReviewSuccess { review { reviewed } } ... on Error { code message } } }"""
TIER_STATUS_Q = "{ me { tier tierStatus { name qualifyingSpend { amount } next { name } } } }"
RUN_Q = """mutation($input: RunSettlementInput!) { runSettlement(input: $input) { __typename
  ... on RunSettlementSuccess { period { id } } ... on Error { code message } } }"""

CALLERS = [
    "anonymous",
    "member",
    "other_member",
    "partner_a",
    "partner_b",
    "partner_no_scope",
    "operator",
    "expired",
    "unknown_key",
    "malformed",
]
BAD_TOKENS = {"expired", "unknown_key", "malformed"}


def _b64(part: str) -> dict[str, Any]:
    import base64

    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.fixture
async def world(client, engine, monkeypatch):
    op = await operator_token(client, engine)
    scopes = ["points:earn", "points:redeem", "settlement:read", "catalog:write"]
    a = await setup_partner(client, op, name="Matrix A", base_rate="1", scopes=scopes)
    b = await setup_partner(client, op, name="Matrix B", base_rate="1", scopes=scopes)
    c = await setup_partner(client, op, name="Matrix C", scopes=["settlement:read"])
    m1 = await register_and_login(client)
    m2 = await register_and_login(client)
    # M1 has points earned at A, on order "A-base".
    await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": m1.card,
                "amount": rub("100000"),
                "orderRef": "A-base",
                "idempotencyKey": key(),
            }
        },
        a.token,
    )
    # A token that expired: issued with the clock 11 minutes back.
    real = clock.utcnow
    monkeypatch.setattr(clock, "utcnow", lambda: real() - timedelta(minutes=11))
    expired = (await oh.client_credentials_token(client, _Creds(a.client_id, a.client_secret)))[
        "access_token"
    ]
    monkeypatch.setattr(clock, "utcnow", real)
    stranger = RSAKey.generate_key(2048, private=True, auto_kid=True)
    claims = _b64(a.token.split(".")[1])
    unknown = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": stranger.kid}, claims, stranger)
    tokens = {
        "anonymous": None,
        "member": m1.token,
        "other_member": m2.token,
        "partner_a": a.token,
        "partner_b": b.token,
        "partner_no_scope": c.token,
        "operator": op,
        "expired": expired,
        "unknown_key": unknown,
        "malformed": "not.a.jwt",
    }
    return {"a": a, "b": b, "m1": m1, "m2": m2, "tokens": tokens, "op": op}


class _Creds:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret


async def _call(
    client, query: str, variables: dict[str, Any], token: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    return r.status_code, r.json()


def _outcome(status: int, body: dict[str, Any]) -> str:
    if status == 401:
        return "unauthenticated"
    assert status == 200, body
    if body.get("errors"):
        codes_ = {e.get("extensions", {}).get("code") for e in body["errors"]}
        assert codes_ == {"FORBIDDEN"}, body  # never a masked 500 or anything else
        return "forbidden"
    (value,) = body["data"].values()
    if value is None or value == []:
        return "hidden"
    if isinstance(value, dict) and value.get("__typename", "").endswith("Success"):
        return "ok"
    if isinstance(value, dict) and "code" in value:
        return {
            "FORBIDDEN": "forbidden",
            "NOT_FOUND": "not_found",
            "HOLD_NOT_FOUND": "not_found",
        }.get(value["code"], f"error:{value['code']}")
    return "ok"


async def test_access_matrix(client, engine, world):
    a, m1 = world["a"], world["m1"]
    a_id = uuid.UUID(a.id)

    async def fresh_code(partner_id: str | None = None) -> str:
        async with engine.begin() as conn:
            return (
                await codes.create(
                    conn,
                    member_id=uuid.UUID(m1.id),
                    partner_id=uuid.UUID(partner_id) if partner_id else None,
                )
            ).code

    async def fresh_hold_of_a() -> str:
        async with engine.begin() as conn:
            h = await ledger.authorize(
                conn,
                actor=a.client_id,
                idempotency_key=key(),
                member_id=uuid.UUID(m1.id),
                partner_id=a_id,
                points=1,
                ref="A-pay",
            )
        return str(h.hold_id)

    async def fresh_reward_of_a(kind: str = "GOODS") -> str:
        async with engine.begin() as conn:
            r = await catalog.publish(
                conn,
                partner_id=a_id,
                # 5 points: more than the 1 point the member gives M2 in transferPoints' case.
                draft=RewardDraft("Matrix prize", "", kind, 5, None, None, None, None),
                voucher_codes=[key()] if kind == "VOUCHER" else [],
                actor="test",
            )
        return str(r.id)

    async def fresh_offer_of_a(*, coupon: bool = False) -> str:
        async with engine.begin() as conn:
            o = await catalog_offers.create(
                conn,
                partner_id=a_id,
                draft=catalog_offers.OfferDraft(
                    "Matrix x2",
                    "",
                    "2",
                    None,
                    None,
                    clock.utcnow(),
                    None,
                    coupon,
                    None,
                    False,
                    None,
                ),
                actor="test",
                at=clock.utcnow(),
            )
        return str(o.id)

    async def fresh_promo_of_a() -> str:
        code = f"M-{uuid.uuid4().hex[:12]}".upper()
        async with engine.begin() as conn:
            await promo_codes.create_promo_code(
                conn,
                offer_id=uuid.UUID(await fresh_offer_of_a(coupon=True)),
                owner=None,
                code=code,
                max_redemptions=100,
                valid_until=clock.utcnow() + timedelta(days=1),
                actor="test",
                at=clock.utcnow(),
            )
        return code

    async def ops() -> dict[str, tuple[str, dict[str, Any]]]:
        return {
            "createOffer": (CREATE_OFFER_Q, {"input": {"name": "o", "bonusPoints": 5}}),
            "createOffer(for A)": (
                CREATE_OFFER_Q,
                {"input": {"partnerId": a.id, "name": "o", "multiplier": "2"}},
            ),
            "endOffer(A's)": (END_OFFER_Q, {"input": {"offerId": await fresh_offer_of_a()}}),
            "activateOffer(A's coupon)": (
                ACTIVATE_Q,
                {"input": {"offerId": await fresh_offer_of_a(coupon=True)}},
            ),
            "createPromoCode(A's offer)": (
                CREATE_PROMO_Q,
                {
                    "input": {
                        "offerId": await fresh_offer_of_a(coupon=True),
                        "code": f"C-{uuid.uuid4().hex[:12]}",
                        "maxRedemptions": 1,
                        "validUntil": "2999-01-01T00:00:00Z",
                    }
                },
            ),
            "applyPromoCode": (APPLY_PROMO_Q, {"input": {"code": await fresh_promo_of_a()}}),
            "offers": (OFFERS_Q, {}),
            "publishReward": (
                PUBLISH,
                {"input": {"title": "t", "kind": "GOODS", "pricePoints": 1}},
            ),
            "publishReward(for A)": (
                PUBLISH,
                {"input": {"partnerId": a.id, "title": "t", "kind": "GOODS", "pricePoints": 1}},
            ),
            "updateReward(A's)": (
                UPDATE,
                {"input": {"rewardId": await fresh_reward_of_a(), "pricePoints": 2}},
            ),
            "retireReward(A's)": (RETIRE, {"input": {"rewardId": await fresh_reward_of_a()}}),
            "addVoucherCodes(A's)": (
                ADD_CODES,
                {"input": {"rewardId": await fresh_reward_of_a("VOUCHER"), "codes": [key()]}},
            ),
            "redeemReward(A's)": (
                REDEEM,
                {
                    "input": {
                        "rewardId": await fresh_reward_of_a("VOUCHER"),
                        "idempotencyKey": key(),
                    }
                },
            ),
            "rewards": (REWARDS, {"first": 5}),
            "rewards(includeRetired)": (REWARDS, {"first": 5, "includeRetired": True}),
            "rewards(affordable)": (REWARDS, {"first": 5, "affordable": True}),
            "createPartner": (
                CREATE_PARTNER,
                {"input": {"name": "X", "category": "c", "currency": "RUB"}},
            ),
            "setAgreement": (
                SET_AGREEMENT,
                {
                    "input": {
                        "partnerId": a.id,
                        "issuePrice": "1",
                        "redemptionPrice": "1",
                        "effectiveFrom": "2020-01-01T00:00:00Z",
                    }
                },
            ),
            "setEarnRule": (SET_EARN_RULE, {"input": {"partnerId": a.id, "baseRate": "1"}}),
            "createPartnerClient": (
                CREATE_CLIENT,
                {"input": {"partnerId": a.id, "scopes": ["points:earn"]}},
            ),
            "registerMember": (
                REGISTER,
                {
                    "input": {
                        "email": f"{key()}@example.com",
                        "password": "password-123",
                        "name": "N",
                    }
                },
            ),
            "earn": (
                EARN,
                {
                    "input": {
                        "cardNumber": m1.card,
                        "amount": rub("10"),
                        "orderRef": key(),
                        "idempotencyKey": key(),
                    }
                },
            ),
            "refund(A's order)": (
                REFUND,
                {"input": {"orderRef": "A-base", "amount": rub("1"), "idempotencyKey": key()}},
            ),
            "authorizeRedemption": (
                AUTHORIZE,
                {
                    "input": {
                        "redemptionCode": await fresh_code(),
                        "points": 1,
                        "purchaseAmount": rub("10"),
                        "orderRef": key(),
                        "idempotencyKey": key(),
                    }
                },
            ),
            "authorize(code bound to A)": (
                AUTHORIZE,
                {
                    "input": {
                        "redemptionCode": await fresh_code(a.id),
                        "points": 1,
                        "purchaseAmount": rub("10"),
                        "orderRef": key(),
                        "idempotencyKey": key(),
                    }
                },
            ),
            "authorize(guessed code)": (
                AUTHORIZE,
                {
                    "input": {
                        "redemptionCode": "123456789012",
                        "points": 1,
                        "purchaseAmount": rub("10"),
                        "orderRef": key(),
                        "idempotencyKey": key(),
                    }
                },
            ),
            "captureRedemption(A's hold)": (
                CAPTURE,
                {
                    "input": {
                        "holdId": await fresh_hold_of_a(),
                        "points": 1,
                        "idempotencyKey": key(),
                    }
                },
            ),
            "voidRedemption(A's hold)": (
                VOID,
                {"input": {"holdId": await fresh_hold_of_a(), "idempotencyKey": key()}},
            ),
            "createRedemptionCode": (CREATE_CODE, {"input": {"maxPoints": 5}}),
            "setBonusRules": (SET_RULES_Q, {"input": {"signupPoints": 0, "referralPoints": 0}}),
            "bonusRules": (RULES_Q, {}),
            "awardBonus": (
                AWARD_Q,
                {
                    "input": {
                        "cardNumber": m1.card,
                        "points": 1,
                        "reason": "matrix",
                        "idempotencyKey": key(),
                    }
                },
            ),
            # To M2's card: M1 gives a point, M2 would give it to itself.
            "transferPoints": (
                TRANSFER_Q,
                {"input": {"toCardNumber": world["m2"].card, "points": 1, "idempotencyKey": key()}},
            ),
            "me": (ME_Q, {}),
            # An empty ladder and a review of long ago: allowed, nothing else changes.
            "setTiers": (SET_TIERS_Q, {"input": {"tiers": []}}),
            "tiers": (TIERS_Q, {}),
            "runTierReview": (REVIEW_Q, {"input": {"asOf": "2001-01-01T00:00:00Z"}}),
            "me(tierStatus)": (TIER_STATUS_Q, {}),
            "partners": (PARTNERS_Q, {}),
            "earnRule(A)": (EARN_RULE_Q, {"p": a.id}),
            "agreements(A)": (AGREEMENTS_Q, {"p": a.id}),
            "settlementPeriods": (PERIODS_Q, {}),
            "runSettlement": (
                RUN_Q,
                {
                    "input": {
                        "periodStart": "2001-01-01T00:00:00Z",
                        "periodEnd": "2001-01-02T00:00:00Z",
                    }
                },
            ),
        }

    ok, partners_ok = "ok", {"partner_a": "ok", "partner_b": "ok"}
    expected: dict[str, dict[str, str]] = {
        "createPartner": {"operator": ok},
        "setAgreement": {"operator": ok},
        "setEarnRule": {"operator": ok},
        "createPartnerClient": {"operator": ok},
        "registerMember": {c: ok for c in CALLERS},
        "earn": partners_ok,
        "refund(A's order)": {"partner_a": ok, "partner_b": "not_found"},
        "authorizeRedemption": partners_ok,
        "authorize(code bound to A)": {
            "partner_a": ok,
            "partner_b": "error:INVALID_REDEMPTION_CODE",
        },
        "authorize(guessed code)": {
            "partner_a": "error:INVALID_REDEMPTION_CODE",
            "partner_b": "error:INVALID_REDEMPTION_CODE",
        },
        "captureRedemption(A's hold)": {"partner_a": ok, "partner_b": "not_found"},
        "voidRedemption(A's hold)": {"partner_a": ok, "partner_b": "not_found"},
        "createRedemptionCode": {"member": ok, "other_member": ok},
        "setBonusRules": {"operator": ok},
        "bonusRules": {"operator": ok},
        "awardBonus": partners_ok,
        "transferPoints": {"member": ok, "other_member": "error:VALIDATION"},
        "me": {"member": ok, "other_member": ok},
        "partners": {
            c: ok
            for c in (
                "member",
                "other_member",
                "partner_a",
                "partner_b",
                "partner_no_scope",
                "operator",
            )
        },
        "earnRule(A)": {  # members: the app shows what each partner earns
            "operator": ok,
            "partner_a": ok,
            "partner_b": "hidden",
            "partner_no_scope": "hidden",
            "member": ok,
            "other_member": ok,
        },
        "agreements(A)": {
            "operator": ok,
            "partner_a": ok,
            "partner_b": "hidden",
            "partner_no_scope": "hidden",
            "member": "hidden",
            "other_member": "hidden",
        },
    }
    expected["settlementPeriods"] = {
        c: ok for c in ("operator", "partner_a", "partner_b", "partner_no_scope")
    }  # partners see their own view (every partner client here holds settlement:read)
    expected["runSettlement"] = {"operator": ok}
    expected["setTiers"] = {"operator": ok}
    expected["runTierReview"] = {"operator": ok}
    expected["tiers"] = {c: ok for c in CALLERS}  # the member app shows the ladder
    expected["me(tierStatus)"] = {"member": ok, "other_member": ok}
    # The catalog: a partner with catalog:write edits its own rewards, the operator any
    # partner's (naming it); another partner is not told a reward exists.
    editors = {"operator": ok, "partner_a": ok, "partner_b": "not_found"}
    expected["publishReward"] = {
        "operator": "error:VALIDATION",  # partnerId is required of the operator
        "partner_a": ok,
        "partner_b": ok,
    }
    expected["publishReward(for A)"] = {"operator": ok, "partner_a": ok}
    for name in ("updateReward(A's)", "retireReward(A's)", "addVoucherCodes(A's)"):
        expected[name] = editors
    expected["redeemReward(A's)"] = {
        "member": ok,
        "other_member": "error:INSUFFICIENT_POINTS",  # M2 has no points
    }
    expected["rewards"] = {c: ok for c in CALLERS}
    expected["rewards(includeRetired)"] = {"operator": ok, "partner_a": ok, "partner_b": ok}
    expected["rewards(affordable)"] = {"member": ok, "other_member": ok}
    # Offers: the same policy as the catalog (the operator's own offers are coalition-wide).
    expected["createOffer"] = {"operator": ok, "partner_a": ok, "partner_b": ok}
    expected["createOffer(for A)"] = {"operator": ok, "partner_a": ok, "partner_b": "forbidden"}
    expected["endOffer(A's)"] = editors
    expected["createPromoCode(A's offer)"] = editors
    expected["activateOffer(A's coupon)"] = {"member": ok, "other_member": ok}
    expected["applyPromoCode"] = {"member": ok, "other_member": ok}
    expected["offers"] = {
        c: ok for c in ("member", "other_member", "operator", "partner_a", "partner_b")
    }
    wrong = []
    for caller in CALLERS:
        token = world["tokens"][caller]
        for name, (query, variables) in (await ops()).items():
            got = _outcome(*await _call(client, query, variables, token))
            want = (
                "unauthenticated"
                if caller in BAD_TOKENS
                else expected[name].get(caller, "forbidden")
            )
            if got != want:
                wrong.append(f"{name} as {caller}: got {got}, expected {want}")
    assert not wrong, "\n".join(wrong)


async def test_a_partner_sees_only_itself_and_a_member_only_their_own_data(client, world):
    a, m1, m2 = world["a"], world["m1"], world["m2"]
    _, body = await _call(client, PARTNERS_Q, {}, a.token)
    assert [p["id"] for p in body["data"]["partners"]] == [a.id]
    _, body1 = await _call(client, ME_Q, {}, m1.token)
    _, body2 = await _call(client, ME_Q, {}, m2.token)
    assert (
        body1["data"]["me"]["cardNumber"] == m1.card
        and body1["data"]["me"]["balance"]["available"] > 0
    )
    assert (
        body2["data"]["me"]["cardNumber"] == m2.card
        and body2["data"]["me"]["balance"]["available"] == 0
    )
