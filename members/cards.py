"""Card numbers: 16 digits, the last a Luhn check digit (ISO/IEC 7812)."""

from __future__ import annotations

import secrets

CARD_PREFIX = "7"  # coalition cards start with 7 (ISO 7812 "petroleum and future industry")


def luhn_check_digit(payload: str) -> str:
    """The Luhn digit that makes `payload + digit` valid."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these positions become odd ones once the check digit is added
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def is_valid_card_number(value: object) -> bool:
    """True for 16 ASCII digits whose Luhn checksum holds."""
    if not isinstance(value, str) or len(value) != 16 or not value.isascii() or not value.isdigit():
        return False
    return luhn_check_digit(value[:-1]) == value[-1]


def new_card_number() -> str:
    """A fresh random valid card number."""
    body = CARD_PREFIX + "".join(secrets.choice("0123456789") for _ in range(14))
    return body + luhn_check_digit(body)


def masked(card_number: str) -> str:
    """A card number as shown to someone other than its holder: its last four digits only."""
    return "*" * 12 + card_number[-4:]
