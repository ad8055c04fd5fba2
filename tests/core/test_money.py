"""Money.parse: a decimal string with at most the currency's minor-unit digits and at most 12
integer digits (API.md); anything else is a ValidationError, never another exception."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import money
from core.errors import ErrorCode, ValidationError
from core.money import (
    ISO_4217_MINOR_UNITS,
    MAX_INTEGER_DIGITS,
    Money,
    format_amount,
    minor_units,
    quantize,
)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1234.50", "RUB", "1234.50"),
        ("1234.5", "RUB", "1234.50"),
        ("10", "RUB", "10.00"),
        ("0.01", "EUR", "0.01"),
        ("  7.25 ", "USD", "7.25"),
        ("+3", "RUB", "3.00"),
        ("0", "RUB", "0.00"),
        ("-5.10", "RUB", "-5.10"),
        ("100", "JPY", "100"),
        ("1.234", "BHD", "1.234"),
        ("1.2", "KWD", "1.200"),
        ("100", "RUB", "100.00"),
        ("100.5", "RUB", "100.50"),
        ("100.50", "RUB", "100.50"),
        ("100", "CLP", "100"),
        ("100", "ISK", "100"),
        ("1.5", "HUF", "1.50"),  # ISO 4217 gives HUF 2 (CLDR, for display, 0)
        ("1.5", "TWD", "1.50"),
        ("1.234", "BHD", "1.234"),
        ("1.2345", "CLF", "1.2345"),
        ("999999999999.99", "RUB", "999999999999.99"),  # 12 integer digits
        ("000000000000001.00", "RUB", "1.00"),  # leading zeros are not integer digits
        ("1", "rub", "1.00"),
    ],
)
def test_valid_amounts(amount: str, currency: str, expected: str) -> None:
    m = Money.parse(amount, currency)
    assert m.currency == currency.upper()
    assert m.amount == Decimal(expected)
    assert str(m.amount) == expected  # exactly the currency's minor units
    assert str(m) == f"{expected} {currency.upper()}"


def refused(amount: object, currency: str = "RUB", **kw: bool) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Money.parse(amount, currency, **kw)  # type: ignore[arg-type]
    assert info.value.code == ErrorCode.VALIDATION
    return info.value


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("1.001", "RUB"),
        ("0.999", "EUR"),
        ("100.5", "JPY"),
        ("1.2345", "BHD"),
        ("100.000", "RUB"),  # trailing zeros count: more digits than RUB has
        ("100.0", "JPY"),
        ("100.5", "CLP"),
        ("100.5", "ISK"),
        ("1.0000", "BHD"),
        ("0.000000000000000000000000000001", "RUB"),
    ],
)
def test_more_decimals_than_the_currency_has(amount: str, currency: str) -> None:
    assert "decimal places" in refused(amount, currency).message


@pytest.mark.parametrize(
    "amount",
    [
        "1000000000000",
        "1000000000000.00",
        "-1000000000000",
        "99999999999999999999",
        "99999999999999999999999999999.123",  # beyond Decimal's precision, with decimals
        "1" * 100 + ".5",
    ],
)
def test_more_than_twelve_integer_digits(amount: str) -> None:
    assert "integer digits" in refused(amount).message


@pytest.mark.parametrize("amount", ["0", "0.00", "-0", "-1", "-0.01", "-999999999999.99"])
def test_positive_amounts(amount: str) -> None:
    assert "positive" in refused(amount, positive=True).message
    Money.parse(amount, "RUB")  # fine when a sign is allowed


def test_the_smallest_positive_amount() -> None:
    assert Money.parse("0.01", "RUB", positive=True).amount == Decimal("0.01")
    assert Money.parse("1", "JPY", positive=True).amount == Decimal(1)


@pytest.mark.parametrize(
    "amount",
    [
        "",
        " ",
        "abc",
        "1,000",
        "1.000,00",
        "1.2.3",
        "--1",
        "+-1",
        "1-",
        "$10",
        "10 RUB",
        "12 34",
        "0x10",
        "1e3",
        "1E-2",
        "1_000",
        "NaN",
        "nan",
        "sNaN",
        "Infinity",
        "-inf",
        "\u0661\u0660",  # Arabic-Indic 10
        "\uff11\uff10",  # full-width 10
        "None",
        None,
        ".",
        "-",
    ],
    ids=repr,
)
def test_garbage(amount: object) -> None:
    refused(amount)


@pytest.mark.parametrize(
    "currency",
    ["", "RU", "RUBL", "R1B", "12", "\u00c4\u00d6\u00dc", None, "XYZ", "ABC", "DEM", "XAU", "XTS"],
)
def test_bad_currencies(currency: str) -> None:
    assert "ISO 4217" in refused("1.00", currency).message


@pytest.mark.parametrize(
    ("currency", "units"),
    [("RUB", 2), ("CLP", 0), ("ISK", 0), ("JPY", 0), ("HUF", 2), ("TWD", 2), ("BHD", 3)],
)
def test_minor_units_are_iso_4217s(currency: str, units: int) -> None:
    assert minor_units(currency) == units


def test_stored_and_computed_amounts_come_out_in_minor_units() -> None:
    """NUMERIC(20,4) and exact sums: every Money output has the currency's digits."""
    assert str(Money.of(Decimal("1000.0000"), "RUB").amount) == "1000.00"
    assert str(Money.of(Decimal("1000.0000"), "RUB")) == "1000.00 RUB"
    assert str(Money.of(Decimal("12.3450"), "RUB").amount) == "12.34"  # half-even
    assert str(Money.of(Decimal("7.0000"), "JPY")) == "7 JPY"
    assert format_amount(Decimal("1E+3"), "BHD") == "1000.000"
    with pytest.raises(ValidationError):
        Money.of(Decimal(1), "XYZ")


def test_decimal_inputs() -> None:
    assert Money.parse(Decimal("10.5"), "RUB").amount == Decimal("10.50")
    assert Money.parse(Decimal("1E+3"), "RUB").amount == Decimal("1000.00")
    refused(Decimal("NaN"))
    refused(Decimal("Infinity"))
    refused(Decimal("1E+12"))
    refused(Decimal("0.001"))
    refused(Decimal("10.000"))  # as stored in NUMERIC(20,4): Money.of rounds those


def test_rounding_is_half_even_to_the_minor_unit() -> None:
    assert quantize(Decimal("0.125"), "RUB") == Decimal("0.12")
    assert quantize(Decimal("0.135"), "RUB") == Decimal("0.14")
    assert quantize(Decimal("2.5"), "JPY") == Decimal("2")
    assert minor_units("jpy") == 0 and minor_units("bhd") == 3


# ---------------------------------------------------------------------------------------------
# Properties

currencies = st.sampled_from(sorted(ISO_4217_MINOR_UNITS))


@given(st.text(max_size=60), currencies, st.booleans())
def test_any_string_is_money_or_a_validation_error(
    amount: str, currency: str, positive: bool
) -> None:
    try:
        m = Money.parse(amount, currency, positive=positive)
    except ValidationError:
        return
    assert m.amount.is_finite() and m.amount.adjusted() < MAX_INTEGER_DIGITS
    assert m.amount.as_tuple().exponent == -minor_units(currency)


@given(st.from_regex(r"\A[+-]?[0-9]{0,40}(\.[0-9]{0,40})?\Z"), currencies)
def test_any_numeric_string_is_money_or_a_validation_error(amount: str, currency: str) -> None:
    try:
        m = Money.parse(amount, currency)
    except ValidationError:
        return
    assert m.amount == Decimal(amount)  # exact: nothing was rounded away


@given(
    st.integers(-(10**MAX_INTEGER_DIGITS) + 1, 10**MAX_INTEGER_DIGITS - 1),
    st.integers(0, 3),
    currencies,
)
def test_exact_amounts_round_trip(units: int, shift: int, currency: str) -> None:
    digits = min(shift, minor_units(currency))
    value = Decimal(units).scaleb(-digits)
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        return
    text = format(value, "f")
    m = Money.parse(text, currency)
    assert m.amount == value and m.currency == currency
    assert str(m.amount) == format(quantize(value, currency), "f")
    assert Money.parse(str(m.amount), currency) == m


@given(st.integers(10**MAX_INTEGER_DIGITS, 10**40), currencies)
def test_thirteen_integer_digits_or_more_are_refused(units: int, currency: str) -> None:
    refused(str(units), currency)
    refused(f"{units}.5", currency)


@given(st.integers(1, 10**6), st.integers(1, 9), currencies)
def test_an_extra_decimal_digit_is_refused(units: int, extra: int, currency: str) -> None:
    digits = minor_units(currency)
    text = format(Decimal(units).scaleb(-digits), "f") + ("" if digits else ".") + str(extra)
    refused(text, currency)


@given(st.from_regex(r"\A\s*[+-]?[0-9]{0,20}(\.[0-9]{0,8})?\s*\Z"), currencies)
def test_a_string_parses_as_its_decimal_would(amount: str, currency: str) -> None:
    """The decimal places read off the string (`Money.parse`'s shortcut) decide as the
    Decimal's own exponent would: the same amounts accepted, the same refused."""
    text = amount.strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None
    try:
        m = Money.parse(amount, currency)
    except ValidationError:
        m = None
    if value is None or not value.is_finite() or value.adjusted() >= MAX_INTEGER_DIGITS:
        assert m is None
        return
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    assert (m is not None) == (-exponent <= minor_units(currency))
    if m is not None:
        assert m.amount == value


@given(st.from_regex(r"\A\s*[+-]?[0-9]{0,14}(\.[0-9]{0,4})?\s*\Z"), currencies, st.booleans())
def test_a_cached_parse_answers_as_a_fresh_one(amount: str, currency: str, positive: bool) -> None:
    """`Money.parse` keeps the money of short amount texts (`_parse_text`): asked again, it
    answers as the first time, refusals included (a refusal is not kept: it raises again)."""
    answers = []
    for _ in range(2):
        try:
            answers.append(Money.parse(amount, currency, positive=positive))
        except ValidationError as exc:
            answers.append(str(exc))
    try:
        fresh: Money | str = money._parse_text.__wrapped__(amount, currency)
        if positive and fresh.amount <= 0:
            fresh = "amount must be positive"
    except ValidationError as exc:
        fresh = str(exc)
    assert answers == [fresh, fresh]


def test_a_long_amount_text_is_parsed_but_not_kept() -> None:
    """Only amount texts of `_CACHED_LENGTH` characters or fewer are kept: a caller padding
    valid amounts with spaces cannot fill memory (4,096 entries of 4 KB lines)."""
    money._parse_text.cache_clear()
    padded = " " * 4000 + "12.50"
    assert Money.parse(padded, "RUB").amount == Decimal("12.50")
    assert money._parse_text.cache_info().currsize == 0
    assert Money.parse("12.50", "RUB").amount == Decimal("12.50")
    assert money._parse_text.cache_info().currsize == 1
