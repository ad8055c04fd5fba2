"""The earn's request digest, written out for speed, is the generic client digest (which
migration 0007 computes in SQL too): a replay is told from a conflict by it."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ledger.claims import client_digest, earn_request_digest

texts = st.text(max_size=40)


@given(
    card=texts,
    amount=st.decimals(min_value=0, max_value=10**12, places=4, allow_nan=False),
    currency=texts,
    category=st.none() | texts,
    ref=texts,
)
def test_the_earn_digest_is_the_client_digest_of_its_fields(
    card: str, amount: Decimal, currency: str, category: str | None, ref: str
) -> None:
    assert earn_request_digest(
        card_number=card, amount=amount, currency=currency, category=category, ref=ref
    ) == client_digest("earn", card, f"{amount:.4f}", currency, category, ref)


def test_the_fields_do_not_run_together() -> None:
    one = earn_request_digest(
        card_number="1", amount=Decimal(1), currency="RUB", category="a,b", ref="c"
    )
    other = earn_request_digest(
        card_number="1", amount=Decimal(1), currency="RUB", category="a", ref="b,c"
    )
    assert one != other
    assert one != earn_request_digest(
        card_number="1", amount=Decimal(1), currency="RUB", category=None, ref="c"
    )
