"""The earn path's pre-selection of the offers that need the member's state (`loyalty.earn`):
the member's activations and uses are read for every stateful offer that may apply, not only
for the one that would win were every offer activated and unused. Of non-stackable offers only
the best applies, so selecting by the winner let an offer the member has NOT activated hide a
weaker one that does apply: its uses went uncounted and an activation of it unseen (DOMAIN.md
"Offers and the earn breakdown"). Found by the stateful test
(tests/ledger/test_stateful_offers_tiers.py); both tests failed before the fix."""

from __future__ import annotations

from loyalty import offers
from loyalty.runtime import Services
from tests.loyalty.test_earn_offers import buy, offer, shape, shop


async def test_a_limited_offer_hidden_by_an_unactivated_better_one_counts_its_uses(
    services: Services,
) -> None:
    partner, member = await shop(services, "hidden limit")
    await offer(services, partner, multiplier="3", requires_activation=True)  # never activated
    x2 = await offer(services, partner, multiplier="2", max_uses_per_member=1)
    # 1500 RUB at 1 per 10: BASE 150; the x3 is not activated, so the x2 applies: +150...
    assert shape(await buy(services, partner, member.card_number)) == [
        ("BASE", 150, None),
        ("OFFER", 150, x2),
    ]
    # ...once: maxUsesPerMember 1.
    assert shape(await buy(services, partner, member.card_number)) == [("BASE", 150, None)]


async def test_an_activated_offer_applies_when_a_better_one_is_not_activated(
    services: Services,
) -> None:
    partner, member = await shop(services, "hidden activation")
    await offer(services, partner, multiplier="3", requires_activation=True)  # never activated
    x2 = await offer(services, partner, multiplier="2", requires_activation=True)
    await offers.activate(services, member_id=member.id, offer_id=str(x2))
    assert shape(await buy(services, partner, member.card_number)) == [
        ("BASE", 150, None),
        ("OFFER", 150, x2),
    ]
