"""The outbox events other than `earn.recorded` (`ledger.outbox`): each operation done through
its use case writes exactly one event of its type, with its data, for its partner, in its own
transaction; none for a partner without a webhook for the type, none for another partner, none
when the operation is refused or rolled back."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import utcnow
from core.errors import ValidationError
from ledger import service as ledger
from ledger.errors import HoldNotActive, IdempotencyConflict, InsufficientPoints
from loyalty import bonuses, earn, redeem, refund, register, webhooks
from loyalty.runtime import Services
from settlement import runs
from settlement import service as settlement
from tests.loyalty.conftest import partner_in_force, unhashed

REDEMPTION = ["redemption.authorized", "redemption.captured", "redemption.voided"]


@pytest.fixture
def rt(services: Services) -> Services:
    """The use cases' runtime, webhooks to 127.0.0.1 allowed (never called: nothing dispatches)."""
    return dataclasses.replace(
        services, settings=services.settings.model_copy(update={"webhook_allow_insecure": True})
    )


@pytest.fixture
async def fresh_rt(fresh_services: Services) -> AsyncIterator[Services]:
    yield dataclasses.replace(
        fresh_services,
        settings=fresh_services.settings.model_copy(update={"webhook_allow_insecure": True}),
    )


async def _partner(rt: Services, events: list[str]) -> uuid.UUID:
    """A partner in force with one webhook for `events` (none when empty)."""
    p = await partner_in_force(rt, f"Hooked {uuid.uuid4().hex[:8]}")
    if events:
        await webhooks.create(
            rt, partner_id=p, url="http://127.0.0.1:9/hook", events=events, actor="test"
        )
    return p


async def _member(rt: Services) -> tuple[uuid.UUID, str]:
    m = await register.register(
        rt,
        email=f"{uuid.uuid4().hex[:12]}@example.com",
        password="a long password",
        name="M",
        hashing=unhashed,
    )
    return m.id, m.card_number


async def _events(
    engine: AsyncEngine, partner: uuid.UUID, type: str | None = None
) -> list[dict[str, Any]]:
    """The partner's outbox events (of `type`), in order: {type, member, data}."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT type, member_id, data FROM outbox_events WHERE partner_id = :p "
                "AND (CAST(:t AS text) IS NULL OR type = :t) ORDER BY seq"
            ),
            {"p": partner, "t": type},
        )
        return [{"type": r.type, "member": r.member_id, "data": r.data} for r in rows]


async def _earn(rt: Services, partner: uuid.UUID, card: str, ref: str, amount: str = "100.00"):
    return await earn.earn(
        rt,
        actor="test",
        key_space=ledger.partner_key_space(partner),
        partner_id=partner,
        card_number=card,
        amount=amount,
        currency="RUB",
        category=None,
        order_ref=ref,
        idempotency_key=f"earn-{ref}",
    )


async def _authorize(
    rt: Services, partner: uuid.UUID, member: uuid.UUID, points: int, ref: str
) -> redeem.Held:
    code, _ = await redeem.issue_code(rt, member_id=member, max_points=None, partner_id=None)
    return await redeem.authorize(
        rt,
        actor="test",
        key_space=ledger.partner_key_space(partner),
        partner_id=partner,
        redemption_code=code.code,
        points=points,
        purchase_amount="100.00",
        currency="RUB",
        order_ref=ref,
        idempotency_key=f"auth-{uuid.uuid4()}",
    )


async def _capture(rt: Services, partner: uuid.UUID, hold_id: str, points: int):
    return await redeem.capture(
        rt,
        actor="test",
        key_space=ledger.partner_key_space(partner),
        partner_id=partner,
        hold_id=hold_id,
        points=points,
        idempotency_key=f"cap-{uuid.uuid4()}",
    )


async def _void(rt: Services, partner: uuid.UUID, hold_id: str):
    return await redeem.void(
        rt,
        actor="test",
        key_space=ledger.partner_key_space(partner),
        partner_id=partner,
        hold_id=hold_id,
        idempotency_key=f"void-{uuid.uuid4()}",
    )


async def test_redemption_events_authorized_captured_voided(rt: Services) -> None:
    p = await _partner(rt, REDEMPTION)
    other = await _partner(rt, ["earn.recorded"])  # a webhook, but not for these types
    member, card = await _member(rt)
    await _earn(rt, p, card, f"e-{uuid.uuid4()}")

    held = await _authorize(rt, p, member, 30, "bill-1")
    [ev] = await _events(rt.engine, p, "redemption.authorized")
    assert ev["member"] == member
    d = ev["data"]
    assert d["holdId"] == held.hold_id and d["memberId"] == str(member)
    assert (d["orderRef"], d["points"]) == ("bill-1", 30)
    assert d["purchaseAmount"] == {"amount": "100.00", "currency": "RUB"}
    assert d["expiresAt"] and d["effectiveAt"]

    captured = await _capture(rt, p, held.hold_id, 20)
    [ev] = await _events(rt.engine, p, "redemption.captured")
    assert ev["data"] == {
        **ev["data"],
        "holdId": held.hold_id,
        "transactionId": str(captured.transaction_id),
        "memberId": str(member),
        "orderRef": "bill-1",
        "points": 20,
        "released": 10,
    }
    # A refused capture (the hold is captured already) writes nothing.
    with pytest.raises(HoldNotActive):
        await _capture(rt, p, held.hold_id, 5)
    with pytest.raises(HoldNotActive):
        await _void(rt, p, held.hold_id)

    second = await _authorize(rt, p, member, 15, "bill-2")
    await _void(rt, p, second.hold_id)
    [ev] = await _events(rt.engine, p, "redemption.voided")
    assert ev["member"] == member
    assert ev["data"] == {
        **ev["data"],
        "holdId": second.hold_id,
        "memberId": str(member),
        "orderRef": "bill-2",
        "released": 15,
    }
    # A refused authorization (not enough points) writes nothing.
    with pytest.raises(InsufficientPoints):
        await _authorize(rt, p, member, 100, "bill-3")
    assert [e["type"] for e in await _events(rt.engine, p)] == [
        "redemption.authorized",
        "redemption.captured",
        "redemption.authorized",
        "redemption.voided",
    ]
    assert len(await _events(rt.engine, p, "redemption.authorized")) == 2

    # Another partner's holds: none of them in `p`'s events; none for `other` (no webhook for
    # these types; its earn webhook does not make it receive them).
    h = await _authorize(rt, other, member, 10, "other-1")
    await _capture(rt, other, h.hold_id, 10)
    h = await _authorize(rt, other, member, 5, "other-2")
    await _void(rt, other, h.hold_id)
    assert await _events(rt.engine, other) == []
    assert len(await _events(rt.engine, p)) == 4


async def test_no_redemption_event_for_a_rolled_back_transaction(rt: Services) -> None:
    p = await _partner(rt, REDEMPTION)
    member, card = await _member(rt)
    await _earn(rt, p, card, f"e-{uuid.uuid4()}")
    async with rt.engine.connect() as conn:
        tx = await conn.begin()
        h = await ledger.authorize(
            conn,
            actor="test",
            idempotency_key="rb-auth",
            key_space=ledger.partner_key_space(p),
            member_id=member,
            partner_id=p,
            points=10,
            ref="rb",
        )
        await ledger.capture(
            conn,
            actor="test",
            idempotency_key="rb-cap",
            key_space=ledger.partner_key_space(p),
            partner_id=p,
            hold_id=h.hold_id,
            points=10,
        )
        inside = await conn.execute(
            text("SELECT count(*) FROM outbox_events WHERE partner_id = :p"), {"p": p}
        )
        assert inside.scalar_one() == 2  # written with the hold and the capture
        await tx.rollback()
    assert await _events(rt.engine, p) == []


async def _refund(rt: Services, partner: uuid.UUID, ref: str, amount: str, key: str):
    return await refund.refund(
        rt,
        actor="test",
        partner_id=partner,
        order_ref=ref,
        amount=amount,
        currency="RUB",
        idempotency_key=key,
    )


async def test_refund_recorded_once_per_refund(rt: Services) -> None:
    p = await _partner(rt, ["refund.recorded"])
    quiet = await _partner(rt, ["earn.recorded", "redemption.captured"])
    member, card = await _member(rt)
    ref = f"order-{uuid.uuid4()}"
    earned = await _earn(rt, p, card, ref)

    r = await _refund(rt, p, ref, "40.00", "rf-1")
    [ev] = await _events(rt.engine, p, "refund.recorded")
    assert ev["member"] == member
    assert ev["data"] == {
        **ev["data"],
        "refundId": str(r.id),
        "memberId": str(member),
        "orderRef": ref,
        "amount": {"amount": "40.00", "currency": "RUB"},
        "pointsReversed": 40,
        "pointsReturned": 0,
        "returnTransactionId": None,
    }
    reversal = ev["data"]["reversalTransactionId"]
    assert reversal and reversal != str(earned.transaction_id)
    # A replay, and a refused refund (more than the order), write nothing.
    assert (await _refund(rt, p, ref, "40.00", "rf-1")).replayed
    with pytest.raises(ValidationError):
        await _refund(rt, p, ref, "70.00", "rf-2")
    with pytest.raises(IdempotencyConflict):
        await _refund(rt, p, ref, "10.00", "rf-1")
    assert len(await _events(rt.engine, p, "refund.recorded")) == 1

    # A purchase paid with points, refunded: the points returned, in one event of the refund.
    paid = f"paid-{uuid.uuid4()}"
    h = await _authorize(rt, p, member, 30, paid)
    await _capture(rt, p, h.hold_id, 30)
    r2 = await _refund(rt, p, paid, "100.00", "rf-3")
    events = await _events(rt.engine, p, "refund.recorded")
    assert len(events) == 2 and events[1]["member"] == member
    assert events[1]["data"] == {
        **events[1]["data"],
        "refundId": str(r2.id),
        "orderRef": paid,
        "pointsReversed": 0,
        "pointsReturned": 30,
        "reversalTransactionId": None,
    }
    assert events[1]["data"]["returnTransactionId"]
    assert [e["type"] for e in await _events(rt.engine, p)] == ["refund.recorded"] * 2

    # A partner without a webhook for refunds: none for it (nor for `p`).
    other_ref = f"q-{uuid.uuid4()}"
    await _earn(rt, quiet, card, other_ref)
    await _refund(rt, quiet, other_ref, "100.00", "rf-q")
    assert await _events(rt.engine, quiet, "refund.recorded") == []
    assert len(await _events(rt.engine, p)) == 2


async def test_bonus_awarded_for_a_partners_own_bonus_only(rt: Services) -> None:
    p = await _partner(rt, ["bonus.awarded"])
    quiet = await _partner(rt, ["earn.recorded"])
    member, card = await _member(rt)

    async def award(partner: uuid.UUID, points: int, key: str):
        return await bonuses.award(
            rt,
            actor="test",
            key_space=ledger.partner_key_space(partner),
            partner_id=partner,
            card_number=card,
            points=points,
            reason="review",
            idempotency_key=key,
        )

    b = await award(p, 25, "b-1")
    [ev] = await _events(rt.engine, p, "bonus.awarded")
    assert ev["member"] == member
    assert ev["data"] == {
        **ev["data"],
        "transactionId": str(b.transaction_id),
        "memberId": str(member),
        "points": 25,
        "reason": "review",
        "ref": None,
    }
    assert ev["data"]["effectiveAt"] and ev["data"]["expiresAt"]
    # A replay and a refused award (another request under the key) write nothing.
    assert (await award(p, 25, "b-1")).replayed
    with pytest.raises(IdempotencyConflict):
        await award(p, 26, "b-1")
    # Another partner's bonus (no webhook for the type): none, for it or for `p`.
    await award(quiet, 5, "b-q")
    assert await _events(rt.engine, quiet) == []
    # An operator's bonus (sign-up, referral: `loyalty.bonuses`) is no partner's: no event,
    # whoever has webhooks. (Keyed apart from the sign-up: the rules in force may have paid one.)
    async with rt.engine.begin() as conn:
        op = await ledger.award_bonus(
            conn,
            ledger.BonusRequest(
                actor="system:signup",
                key_space=ledger.OPERATOR_KEY_SPACE,
                idempotency_key=f"test-operator-bonus:{member}",
                digest="operator",
                member_id=member,
                issuer_id=None,
                points=7,
                reason="signup",
            ),
        )
    async with rt.engine.connect() as conn:
        n = await conn.execute(
            text("SELECT count(*) FROM outbox_events WHERE data->>'transactionId' = :t"),
            {"t": str(op.transaction_id)},
        )
        assert n.scalar_one() == 0
    assert len(await _events(rt.engine, p)) == 1

    # Rolled back: nothing.
    async with rt.engine.connect() as conn:
        tx = await conn.begin()
        await ledger.award_bonus(
            conn,
            ledger.BonusRequest(
                actor="test",
                key_space=ledger.partner_key_space(p),
                idempotency_key="b-rb",
                digest="b-rb",
                member_id=member,
                issuer_id=p,
                points=3,
                reason="review",
            ),
        )
        await tx.rollback()
    assert len(await _events(rt.engine, p)) == 1


async def test_settlement_closed_to_each_partner_with_a_statement(
    fresh_rt: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = fresh_rt
    monkeypatch.setattr(runs, "LATE_MARGIN", timedelta(0))
    start = utcnow() - timedelta(hours=1)
    hooked = await _partner(rt, ["settlement.closed"])
    also = await _partner(rt, ["settlement.closed", "earn.recorded"])
    quiet = await _partner(rt, ["earn.recorded"])
    _, card = await _member(rt)
    await _earn(rt, hooked, card, "s-1", "120.00")
    await _earn(rt, also, card, "s-2", "30.00")
    await _earn(rt, quiet, card, "s-3", "10.00")
    end = utcnow()
    async with rt.engine.begin() as conn:
        period = await settlement.run(
            conn, period_start=start, period_end=end, actor="operator", currency="RUB"
        )
    # A close rolled back announces nothing.
    async with rt.engine.connect() as conn:
        tx = await conn.begin()
        await settlement.close(conn, period_id=period.id, actor="operator")
        await tx.rollback()
    assert await _events(rt.engine, hooked, "settlement.closed") == []

    closed = await settlement.expire_and_close(rt.engine, period_id=period.id, actor="operator")
    async with rt.engine.connect() as conn:
        statements = {
            s.partner_id: s for s in await settlement.statements(conn, period_id=period.id)
        }
    for partner, points in ((hooked, 120), (also, 30)):
        [ev] = await _events(rt.engine, partner, "settlement.closed")
        s = statements[partner]
        assert ev["member"] is None
        assert ev["data"] == {
            "periodId": str(period.id),
            "periodStart": closed.period_start.isoformat(),
            "periodEnd": closed.period_end.isoformat(),
            "closedAt": closed.closed_at.isoformat() if closed.closed_at else None,
            "issuedPoints": points,
            "reversedPoints": 0,
            "redeemedPoints": 0,
            "returnedPoints": 0,
            "issuanceCharge": {"amount": str(s.issuance_charge.amount), "currency": "RUB"},
            "reimbursement": {"amount": str(s.reimbursement.amount), "currency": "RUB"},
            "net": {"amount": str(s.net.amount), "currency": "RUB"},
        }
        assert s.issued_points == points
    assert await _events(rt.engine, quiet, "settlement.closed") == []
    # Closing a closed period changes nothing: no second event.
    await settlement.expire_and_close(rt.engine, period_id=period.id, actor="operator")
    assert len(await _events(rt.engine, hooked, "settlement.closed")) == 1


async def test_one_group_commit_writes_earn_events_for_the_partners_that_want_them(
    rt: Services,
) -> None:
    """A batch statement (`ledger.batch`: the group commit, a batch file's chunk) with earns of
    three partners, the one with an `earn.recorded` webhook not first: one event per earn of
    that partner, in order, none for a partner whose webhook wants other types or who has none
    (the statement asks once per partner, not once per earn)."""
    from ledger import batch

    wanted = await _partner(rt, ["earn.recorded"])
    other_types = await _partner(rt, ["refund.recorded"])
    none = await _partner(rt, [])
    members = [(await _member(rt))[0] for _ in range(3)]
    order = [none, wanted, other_types, wanted, none, wanted]
    requests = [
        ledger.EarnRequest(
            actor="test",
            key_space=ledger.partner_key_space(p),
            idempotency_key=f"mixed-{k}-{uuid.uuid4()}",
            member_id=members[k % 3],
            partner_id=p,
            points=10 + k,
            ref=f"mixed-{k}-{uuid.uuid4()}",
        )
        for k, p in enumerate(order)
    ]
    async with rt.pool.connection() as conn, conn.transaction():
        results = await batch.write_earns(conn, requests)
    assert all(r is not None for r in results)
    events = await _events(rt.engine, wanted, "earn.recorded")
    assert [e["data"]["points"] for e in events] == [11, 13, 15]
    assert [e["data"]["transactionId"] for e in events] == [
        str(r.transaction_id) for r, p in zip(results, order, strict=True) if p == wanted and r
    ]
    assert await _events(rt.engine, other_types) == []
    assert await _events(rt.engine, none) == []
