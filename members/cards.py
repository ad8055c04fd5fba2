"""Card numbers: 16 digits, the last a Luhn check digit (ISO/IEC 7812)."""

from __future__ import annotations

import functools
import secrets

CARD_PREFIX = "7"  # coalition cards start with 7 (ISO 7812 "petroleum and future industry")


# A digit doubled as Luhn doubles it (digits summed: 7 -> 14 -> 5).
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_check_digit(payload: str) -> str:
    """The Luhn digit that makes `payload + digit` valid (`payload`: ASCII digits)."""
    digits = [ord(ch) - 48 for ch in reversed(payload)]
    # Doubled: the positions that become odd ones once the check digit is added.
    total = sum(_DOUBLED[d] for d in digits[0::2]) + sum(digits[1::2])
    return str((10 - total % 10) % 10)


def is_valid_card_number(value: object) -> bool:
    """True for 16 ASCII digits whose Luhn checksum holds."""
    return isinstance(value, str) and _valid(value)


@functools.lru_cache(maxsize=1 << 16)  # a member's card comes back (a batch file: many times)
def _valid(value: str) -> bool:
    if len(value) != 16 or not value.isascii() or not value.isdigit():
        return False
    return luhn_check_digit(value[:-1]) == value[-1]


def new_card_number() -> str:
    """A fresh random valid card number."""
    body = CARD_PREFIX + "".join(secrets.choice("0123456789") for _ in range(14))
    return body + luhn_check_digit(body)


def masked(card_number: str) -> str:
    """A card number as shown to someone other than its holder: its last four digits only."""
    return "*" * 12 + card_number[-4:]
