"""Issue 9, money items 1-3, through HTTP with real tokens: no points without an agreement in
force; one idempotency key space per partner (all of its OAuth clients); a retry replays the
original result even after the operator changed the partner's rules."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from core.clock import utcnow
from ledger import service as ledger
from partners.errors import NoAgreement
from partners.service import PartnerConfig, PartnerRecord
from tests.gateway import oauth_helpers as oh
from tests.gateway.gql_helpers import (
    AUTHORIZE,
    CAPTURE,
    CREATE_CLIENT,
    CREATE_CODE,
    CREATE_PARTNER,
    EARN,
    REFUND,
    SET_AGREEMENT,
    SET_EARN_RULE,
    VOID,
    PartnerHandle,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)


class _Creds:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret


async def second_client(client, op: str, partner: PartnerHandle) -> PartnerHandle:
    """Another OAuth client of the same partner, with its own token."""
    d = await gql(
        client,
        CREATE_CLIENT,
        {"input": {"partnerId": partner.id, "scopes": ["points:earn", "points:redeem"]}},
        op,
    )
    c = d["createPartnerClient"]
    token = (await oh.client_credentials_token(client, _Creds(c["clientId"], c["clientSecret"])))[
        "access_token"
    ]
    return PartnerHandle(partner.id, c["clientId"], c["clientSecret"], token)


async def bare_partner(client, op: str, name: str) -> PartnerHandle:
    """A partner with an earn rule and a client but no agreement."""
    d = await gql(
        client, CREATE_PARTNER, {"input": {"name": name, "category": "shop", "currency": "RUB"}}, op
    )
    pid = d["createPartner"]["partner"]["id"]
    d = await gql(client, SET_EARN_RULE, {"input": {"partnerId": pid, "baseRate": "1"}}, op)
    assert d["setEarnRule"]["__typename"] == "SetEarnRuleSuccess", d
    return await second_client(client, op, PartnerHandle(pid, "", "", ""))


async def set_agreement(client, op: str, partner_id: str, effective_from: str) -> None:
    d = await gql(
        client,
        SET_AGREEMENT,
        {
            "input": {
                "partnerId": partner_id,
                "issuePrice": "1.00",
                "redemptionPrice": "0.90",
                "effectiveFrom": effective_from,
            }
        },
        op,
    )
    assert d["setAgreement"]["__typename"] == "SetAgreementSuccess", d


async def set_rule(client, op: str, partner_id: str, **fields) -> None:
    d = await gql(client, SET_EARN_RULE, {"input": {"partnerId": partner_id, **fields}}, op)
    assert d["setEarnRule"]["__typename"] == "SetEarnRuleSuccess", d


async def rows(engine, sql: str, **params) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


async def code_for(client, member, partner_id: str) -> str:
    d = await gql(client, CREATE_CODE, {"input": {"partnerId": partner_id}}, member.token)
    return d["createRedemptionCode"]["code"]


# ---------------------------------------------------------------------------------------------
# 1. Points nobody pays for


async def test_earn_without_an_agreement_is_refused_and_writes_nothing(client, engine):
    op = await operator_token(client, engine)
    p = await bare_partner(client, op, "No Deal")
    m = await register_and_login(client)
    k = key()
    earn_input = {
        "cardNumber": m.card,
        "amount": rub("100.00"),
        "orderRef": "ND-1",
        "idempotencyKey": k,
    }
    r = (await gql(client, EARN, {"input": earn_input}, p.token))["earn"]
    assert r["__typename"] == "NoAgreementError" and r["code"] == "NO_AGREEMENT", r
    assert (
        await rows(engine, "SELECT count(*) FROM transactions WHERE partner_id = :p", p=p.id) == 0
    )
    assert await rows(engine, "SELECT count(*) FROM idempotency_keys WHERE key = :k", k=k) == 0

    # An agreement that takes effect only tomorrow does not put the partner in business today.
    tomorrow = (utcnow() + timedelta(days=1)).isoformat()
    await set_agreement(client, op, p.id, tomorrow)
    r = (await gql(client, EARN, {"input": earn_input}, p.token))["earn"]
    assert r["code"] == "NO_AGREEMENT", r
    assert (
        await rows(engine, "SELECT count(*) FROM transactions WHERE partner_id = :p", p=p.id) == 0
    )

    # One in force now: the same request goes through (the key was never used).
    await set_agreement(client, op, p.id, "2020-01-01T00:00:00Z")
    r = (await gql(client, EARN, {"input": earn_input}, p.token))["earn"]
    assert r["__typename"] == "EarnSuccess" and r["transaction"]["points"] == 100, r
    assert r["replayed"] is False


def test_a_cached_agreement_is_judged_at_the_events_time():
    """The cached config may hold an agreement that starts after the cache was filled: it is in
    force for events from its effective time on, not before, and not from the fill."""
    filled = utcnow()
    cfg = PartnerConfig(
        PartnerRecord(uuid.uuid4(), "P", "shop", "RUB", 0), None, filled + timedelta(minutes=1)
    )
    with pytest.raises(NoAgreement):
        cfg.require_agreement(filled)
    cfg.require_agreement(filled + timedelta(minutes=1))
    cfg.require_agreement(filled + timedelta(days=400))
    with pytest.raises(NoAgreement):
        PartnerConfig(cfg.partner, None).require_agreement(filled)


async def test_redemption_without_an_agreement_is_refused(client, engine):
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Issuer", base_rate="1")
    b = await bare_partner(client, op, "Taker Without Deal")
    m = await register_and_login(client)
    r = await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": m.card,
                "amount": rub("500.00"),
                "orderRef": "I-1",
                "idempotencyKey": key(),
            }
        },
        a.token,
    )
    assert r["earn"]["transaction"]["points"] == 500

    code = await code_for(client, m, b.id)
    auth = {
        "redemptionCode": code,
        "points": 50,
        "purchaseAmount": rub("100.00"),
        "orderRef": "T-1",
        "idempotencyKey": key(),
    }
    r = (await gql(client, AUTHORIZE, {"input": auth}, b.token))["authorizeRedemption"]
    assert r["code"] == "NO_AGREEMENT", r
    assert await rows(engine, "SELECT count(*) FROM holds WHERE partner_id = :p", p=b.id) == 0
    # The refusal did not use the member's code up: it works once B has an agreement.
    await set_agreement(client, op, b.id, "2020-01-01T00:00:00Z")
    r = (await gql(client, AUTHORIZE, {"input": auth}, b.token))["authorizeRedemption"]
    assert r["__typename"] == "AuthorizeRedemptionSuccess", r

    # A hold of a partner whose agreement starts only tomorrow cannot be captured today.
    c = await bare_partner(client, op, "Future Deal")
    await set_agreement(client, op, c.id, (utcnow() + timedelta(days=1)).isoformat())
    async with engine.begin() as conn:  # a hold from before the check existed
        h = await ledger.authorize(
            conn,
            actor=c.client_id,
            idempotency_key=key(),
            member_id=uuid.UUID(m.id),
            partner_id=uuid.UUID(c.id),
            points=10,
            ref="F-1",
        )
    cap = {"holdId": str(h.hold_id), "points": 10, "idempotencyKey": key()}
    r = (await gql(client, CAPTURE, {"input": cap}, c.token))["captureRedemption"]
    assert r["code"] == "NO_AGREEMENT", r
    assert (
        await rows(engine, "SELECT count(*) FROM transactions WHERE partner_id = :p", p=c.id) == 0
    )
    # Releasing it is always possible.
    r = (
        await gql(
            client, VOID, {"input": {"holdId": str(h.hold_id), "idempotencyKey": key()}}, c.token
        )
    )["voidRedemption"]
    assert r["__typename"] == "VoidRedemptionSuccess", r


# ---------------------------------------------------------------------------------------------
# 2. One idempotency key space per partner


async def test_a_partners_clients_share_one_key_space(client, engine):
    op = await operator_token(client, engine)
    p1 = await setup_partner(client, op, name="Two Tills", base_rate="0.1")
    p2 = await second_client(client, op, p1)
    m = await register_and_login(client)

    k = key()
    earn_input = {
        "cardNumber": m.card,
        "amount": rub("1000.00"),
        "orderRef": "TT-1",
        "idempotencyKey": k,
    }
    first = (await gql(client, EARN, {"input": earn_input}, p1.token))["earn"]
    assert first["__typename"] == "EarnSuccess" and first["replayed"] is False
    # The same request through the partner's other client is the replay.
    again = (await gql(client, EARN, {"input": earn_input}, p2.token))["earn"]
    assert again["__typename"] == "EarnSuccess", again
    assert again["transaction"] == first["transaction"] and again["replayed"] is True
    # Another request under the same key, through the other client, is a conflict.
    other = {**earn_input, "orderRef": "TT-2", "amount": rub("5.00")}
    conflict = (await gql(client, EARN, {"input": other}, p2.token))["earn"]
    assert conflict["code"] == "IDEMPOTENCY_CONFLICT", conflict
    # Who did it stays on record: the earn's transaction names the client that sent it.
    async with engine.connect() as conn:
        actor = (
            await conn.execute(
                text("SELECT actor FROM transactions WHERE id = :t"),
                {"t": first["transaction"]["id"]},
            )
        ).scalar_one()
        claimed_by = (
            await conn.execute(text("SELECT actor FROM idempotency_keys WHERE key = :k"), {"k": k})
        ).scalar_one()
    assert actor == p1.client_id and claimed_by == p1.client_id

    # Authorize through client 1, the retry through client 2 replays it.
    code = await code_for(client, m, p1.id)
    auth = {
        "redemptionCode": code,
        "points": 40,
        "purchaseAmount": rub("200.00"),
        "orderRef": "TT-3",
        "idempotencyKey": key(),
    }
    held = (await gql(client, AUTHORIZE, {"input": auth}, p1.token))["authorizeRedemption"]
    assert held["__typename"] == "AuthorizeRedemptionSuccess", held
    retry = (await gql(client, AUTHORIZE, {"input": auth}, p2.token))["authorizeRedemption"]
    assert retry["__typename"] == "AuthorizeRedemptionSuccess", retry
    assert retry["hold"] == held["hold"] and retry["replayed"] is True

    # Client 2 captures the hold client 1 authorized (holds belong to the partner); client 1's
    # retry of that capture replays it.
    cap = {"holdId": held["hold"]["id"], "points": 30, "idempotencyKey": key()}
    captured = (await gql(client, CAPTURE, {"input": cap}, p2.token))["captureRedemption"]
    assert captured["__typename"] == "CaptureRedemptionSuccess", captured
    assert captured["releasedPoints"] == 10
    retry = (await gql(client, CAPTURE, {"input": cap}, p1.token))["captureRedemption"]
    assert retry["__typename"] == "CaptureRedemptionSuccess", retry
    assert retry["transaction"] == captured["transaction"] and retry["replayed"] is True

    # Void and refund retries cross clients the same way.
    code = await code_for(client, m, p1.id)
    held = (
        await gql(
            client,
            AUTHORIZE,
            {
                "input": {
                    **auth,
                    "redemptionCode": code,
                    "orderRef": "TT-4",
                    "idempotencyKey": key(),
                }
            },
            p2.token,
        )
    )["authorizeRedemption"]
    void = {"holdId": held["hold"]["id"], "idempotencyKey": key()}
    voided = (await gql(client, VOID, {"input": void}, p1.token))["voidRedemption"]
    assert voided["__typename"] == "VoidRedemptionSuccess" and voided["replayed"] is False
    retry = (await gql(client, VOID, {"input": void}, p2.token))["voidRedemption"]
    assert retry["__typename"] == "VoidRedemptionSuccess" and retry["replayed"] is True

    refund = {"orderRef": "TT-1", "amount": rub("100.00"), "idempotencyKey": key()}
    done = (await gql(client, REFUND, {"input": refund}, p1.token))["refund"]
    assert done["__typename"] == "RefundSuccess" and done["refund"]["pointsReversed"] == 10
    retry = (await gql(client, REFUND, {"input": refund}, p2.token))["refund"]
    assert retry["refund"] == done["refund"] and retry["replayed"] is True


async def test_key_spaces_of_different_partners_stay_apart(client, engine):
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Space A", base_rate="1")
    b = await setup_partner(client, op, name="Space B", base_rate="1")
    m = await register_and_login(client)
    k = key()
    for p, ref in ((a, "SA-1"), (b, "SB-1")):
        r = (
            await gql(
                client,
                EARN,
                {
                    "input": {
                        "cardNumber": m.card,
                        "amount": rub("10.00"),
                        "orderRef": ref,
                        "idempotencyKey": k,
                    }
                },
                p.token,
            )
        )["earn"]
        assert r["__typename"] == "EarnSuccess" and r["replayed"] is False, r


# ---------------------------------------------------------------------------------------------
# 3. A retry after a rule change replays


async def test_a_retry_after_a_rule_change_replays_the_original(client, engine):
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Repricer", base_rate="0.1", hold_days=0)
    m = await register_and_login(client)
    earn_input = {
        "cardNumber": m.card,
        "amount": rub("1000.00"),
        "category": "misc",
        "orderRef": "RP-1",
        "idempotencyKey": key(),
    }
    first = (await gql(client, EARN, {"input": earn_input}, p.token))["earn"]
    assert first["transaction"]["points"] == 100 and first["transaction"]["status"] == "available"

    await set_rule(client, op, p.id, baseRate="0.5", holdDays=14)
    again = (await gql(client, EARN, {"input": earn_input}, p.token))["earn"]
    assert again["__typename"] == "EarnSuccess", again
    assert again["transaction"] == first["transaction"] and again["replayed"] is True
    # A new order earns at the new terms.
    fresh = (
        await gql(
            client,
            EARN,
            {"input": {**earn_input, "orderRef": "RP-2", "idempotencyKey": key()}},
            p.token,
        )
    )["earn"]
    assert fresh["transaction"]["points"] == 500 and fresh["transaction"]["status"] == "pending"

    # Even a rule under which the purchase would earn nothing replays what was earned.
    await set_rule(client, op, p.id, baseRate="0")
    again = (await gql(client, EARN, {"input": earn_input}, p.token))["earn"]
    assert again["__typename"] == "EarnSuccess", again
    assert again["transaction"] == first["transaction"] and again["replayed"] is True
    # ... and a different request under the key is still a conflict.
    other = (await gql(client, EARN, {"input": {**earn_input, "amount": rub("999.00")}}, p.token))[
        "earn"
    ]
    assert other["code"] == "IDEMPOTENCY_CONFLICT", other

    # A refund's retry after a rule change replays too.
    refund = {"orderRef": "RP-1", "amount": rub("500.00"), "idempotencyKey": key()}
    done = (await gql(client, REFUND, {"input": refund}, p.token))["refund"]
    assert done["refund"]["pointsReversed"] == 50
    await set_rule(client, op, p.id, baseRate="2", holdDays=3)
    retry = (await gql(client, REFUND, {"input": refund}, p.token))["refund"]
    assert retry["refund"] == done["refund"] and retry["replayed"] is True


async def test_an_authorization_retry_after_a_rule_change_replays(client, engine):
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name="Share Cutter", base_rate="1", max_redeem_share="1")
    m = await register_and_login(client)
    r = await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": m.card,
                "amount": rub("500.00"),
                "orderRef": "SC-1",
                "idempotencyKey": key(),
            }
        },
        p.token,
    )
    assert r["earn"]["transaction"]["points"] == 500
    auth = {
        "redemptionCode": await code_for(client, m, p.id),
        "points": 100,
        "purchaseAmount": rub("100.00"),
        "orderRef": "SC-2",
        "idempotencyKey": key(),
    }
    held = (await gql(client, AUTHORIZE, {"input": auth}, p.token))["authorizeRedemption"]
    assert held["__typename"] == "AuthorizeRedemptionSuccess", held
    # Now at most 10 % of a bill may be paid with points: the retry still gets its hold.
    await set_rule(client, op, p.id, baseRate="1", maxRedeemShare="0.1", holdDays=5)
    retry = (await gql(client, AUTHORIZE, {"input": auth}, p.token))["authorizeRedemption"]
    assert retry["__typename"] == "AuthorizeRedemptionSuccess", retry
    assert retry["hold"] == held["hold"] and retry["replayed"] is True
    # A new authorization follows the new share.
    fresh = (
        await gql(
            client,
            AUTHORIZE,
            {
                "input": {
                    **auth,
                    "redemptionCode": await code_for(client, m, p.id),
                    "orderRef": "SC-3",
                    "idempotencyKey": key(),
                }
            },
            p.token,
        )
    )["authorizeRedemption"]
    assert fresh["code"] == "LIMIT_EXCEEDED", fresh
