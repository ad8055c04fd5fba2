"""Lot expiry dates: `add_months` is dateutil's `relativedelta(months=n)`, day clamped."""

from __future__ import annotations

from datetime import UTC, datetime

from dateutil.relativedelta import relativedelta
from hypothesis import given
from hypothesis import strategies as st

from ledger.service import add_months


@given(
    at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31)),
    months=st.integers(0, 240),
)
def test_add_months_is_relativedelta(at: datetime, months: int) -> None:
    at = at.replace(tzinfo=UTC)
    assert add_months(at, months) == at + relativedelta(months=months)


def test_month_ends_are_clamped() -> None:
    assert add_months(datetime(2027, 1, 31, tzinfo=UTC), 1) == datetime(2027, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2028, 1, 31, tzinfo=UTC), 1) == datetime(2028, 2, 29, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 30, tzinfo=UTC), 36) == datetime(2029, 11, 30, tzinfo=UTC)
