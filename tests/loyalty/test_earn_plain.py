"""An earn no offer applies to is priced from `loyalty.earn._plain`, which keeps the booked
lines of each (amount, rate, cap, tier multiplier): a batch file's lines repeat them. Pure: no
database. The kept answer must be the one `catalog.breakdown` gives for the values asked,
including values equal to a kept one but written with other digits (Decimal("100.5") and
Decimal("100.50") are one key)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from catalog.breakdown import breakdown
from loyalty import earn

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999.99"), places=2)
rates = st.decimals(min_value=Decimal("0"), max_value=Decimal("10"), places=3)
caps = st.one_of(st.none(), st.integers(0, 10**6))
multipliers = st.one_of(
    st.none(), st.decimals(min_value=Decimal("1"), max_value=Decimal("5"), places=2)
)


def fresh(amount: Decimal, rate: Decimal, cap: int | None, m: Decimal | None) -> object:
    return earn._booked(breakdown(amount, rate, cap, m, ()))


@given(amounts, rates, caps, multipliers, st.integers(0, 3), st.integers(0, 3))
def test_kept_lines_are_those_of_the_values_asked(
    amount: Decimal, rate: Decimal, cap: int | None, m: Decimal | None, pad_a: int, pad_r: int
) -> None:
    assert earn._plain(amount, rate, cap, m) == fresh(amount, rate, cap, m)
    # the same numbers with more digits: the same key, and the same lines
    wide_amount, wide_rate = (
        amount.quantize(Decimal(1).scaleb(-2 - pad_a)),
        rate.quantize(Decimal(1).scaleb(-3 - pad_r)),
    )
    assert earn._plain(wide_amount, wide_rate, cap, m) == fresh(wide_amount, wide_rate, cap, m)


def test_a_tier_multiplier_adds_its_line_and_the_cap_holds() -> None:
    points, lines = earn._plain(Decimal("1500.00"), Decimal("0.1"), None, Decimal("1.5"))
    assert points == 225
    assert [(x.source, x.points, x.funded_by) for x in lines] == [
        ("BASE", 150, "PARTNER"),
        ("TIER", 75, "PARTNER"),
    ]
    assert earn._plain(Decimal("1500.00"), Decimal("0.1"), 100, None)[0] == 100
