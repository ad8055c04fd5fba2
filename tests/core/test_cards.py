"""Card numbers: 16 ASCII digits, the last a Luhn check digit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from members.cards import CARD_PREFIX, is_valid_card_number, luhn_check_digit, new_card_number

# Published valid 16-digit numbers (card networks' test numbers) and a few computed by hand.
VALID = [
    "4111111111111111",
    "4012888888881881",
    "5555555555554444",
    "5105105105105100",
    "6011111111111117",
    "3530111333300000",
    "0000000000000000",
    "7000000000000005",
]


def reference_luhn(number: str) -> bool:
    """The textbook algorithm, written independently: double every second digit from the
    right, subtract 9 from two-digit results, the sum must end in 0."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


payloads = st.text(alphabet="0123456789", min_size=15, max_size=15)


@pytest.mark.parametrize("number", VALID)
def test_known_valid_numbers(number: str) -> None:
    assert reference_luhn(number)
    assert is_valid_card_number(number)
    assert luhn_check_digit(number[:-1]) == number[-1]


def test_the_textbook_example() -> None:
    # Wikipedia/ISO 7812: the check digit of 7992739871 is 3.
    assert luhn_check_digit("7992739871") == "3"
    assert luhn_check_digit("") == "0"


@pytest.mark.parametrize("number", VALID)
def test_every_single_digit_change_is_detected(number: str) -> None:
    for i in range(16):
        for d in "0123456789":
            if d != number[i]:
                changed = number[:i] + d + number[i + 1 :]
                assert not is_valid_card_number(changed), changed


@given(payloads)
def test_the_check_digit_makes_any_payload_valid(payload: str) -> None:
    number = payload + luhn_check_digit(payload)
    assert is_valid_card_number(number)
    # and it is the only digit that does
    assert [d for d in "0123456789" if is_valid_card_number(payload + d)] == [number[-1]]


@given(st.text(alphabet="0123456789", min_size=16, max_size=16))
def test_agrees_with_the_reference_algorithm(number: str) -> None:
    assert is_valid_card_number(number) == reference_luhn(number)


@given(payloads, st.integers(0, 15), st.integers(1, 9))
def test_any_single_digit_error_is_detected(payload: str, i: int, delta: int) -> None:
    number = payload + luhn_check_digit(payload)
    wrong = number[:i] + str((int(number[i]) + delta) % 10) + number[i + 1 :]
    assert not is_valid_card_number(wrong)


@given(payloads, st.integers(0, 14))
def test_adjacent_transpositions_are_detected_except_09(payload: str, i: int) -> None:
    number = payload + luhn_check_digit(payload)
    a, b = number[i], number[i + 1]
    swapped = number[:i] + b + a + number[i + 2 :]
    if a == b or {a, b} == {"0", "9"}:
        return  # no change, or the one transposition Luhn cannot see
    assert not is_valid_card_number(swapped)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "411111111111111",  # 15 digits
        "41111111111111111",  # 17 digits
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        " 4111111111111111",
        "4111111111111111\n",
        "411111111111111a",
        "\uff14" + "\uff11" * 15,  # full-width digits
        "\u0664" + "\u0661" * 15,  # Arabic-Indic digits
        "4111111111111112",
        None,
        4111111111111111,
        b"4111111111111111",
    ],
    ids=repr,
)
def test_not_card_numbers(value: object) -> None:
    assert not is_valid_card_number(value)


def test_new_card_numbers_are_valid_and_distinct() -> None:
    numbers = {new_card_number() for _ in range(2000)}
    assert len(numbers) == 2000
    for n in numbers:
        assert len(n) == 16 and n.isascii() and n.isdigit()
        assert n.startswith(CARD_PREFIX)
        assert is_valid_card_number(n)
