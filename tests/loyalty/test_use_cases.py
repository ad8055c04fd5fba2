"""The use cases run without the gateway: a plain `Services` runtime is enough (as for the
CLI, imports and webhooks), and they answer as through GraphQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger import service as ledger
from loyalty import earn, register, terms
from members.cards import new_card_number
from members.errors import MemberNotFound
from partners.errors import RuleMissing


async def _unhashed(fn, password: str) -> str:
    return fn(password)


async def test_earn_through_the_use_cases(services):
    partner = await terms.create_partner(
        services, name="Use cases", category="fuel", currency="RUB"
    )
    await terms.set_agreement(
        services,
        actor="test",
        partner_id=str(partner.id),
        issue_price="0.5",
        redemption_price="0.4",
        effective_from=datetime.now(UTC) - timedelta(days=1),
    )
    purchase = {
        "actor": "test",
        "key_space": ledger.partner_key_space(partner.id),
        "partner_id": partner.id,
        "amount": "100.00",
        "currency": "RUB",
        "category": None,
        "order_ref": "uc-1",
        "idempotency_key": "uc-1",
    }
    member = await register.register(
        services, email="uc@example.com", password="a long password", name="U", hashing=_unhashed
    )
    with pytest.raises(RuleMissing):  # no earn rule yet: nothing to give points by
        await earn.earn(services, card_number=member.card_number, **purchase)
    await terms.set_earn_rule(
        services,
        actor="test",
        partner_id=str(partner.id),
        base_rate="1",
        category_rates=[],
        hold_days=0,
        max_redeem_share="1",
        max_points_per_transaction=None,
    )
    r = await earn.earn(services, card_number=member.card_number, **purchase)
    assert (r.points, r.replayed) == (100, False)
    again = await earn.earn(services, card_number=member.card_number, **purchase)
    assert (again.transaction_id, again.replayed) == (r.transaction_id, True)
    with pytest.raises(MemberNotFound):
        await earn.earn(
            services, card_number=new_card_number(), **{**purchase, "idempotency_key": "uc-2"}
        )
