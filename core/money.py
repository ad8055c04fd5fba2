"""Money: Decimal amounts with an ISO 4217 currency. Never float."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from core.errors import ValidationError

# ISO 4217 minor units for the currencies a coalition is likely to use; others default to 2.
MINOR_UNITS: dict[str, int] = {
    "RUB": 2, "EUR": 2, "USD": 2, "GBP": 2, "CAD": 2, "INR": 2, "CHF": 2, "PLN": 2,
    "KZT": 2, "TRY": 2, "AED": 2, "CNY": 2, "SEK": 2, "NOK": 2, "DKK": 2, "CZK": 2,
    "JPY": 0, "KRW": 0, "HUF": 2, "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3,
}
MAX_INTEGER_DIGITS = 12
# A plain decimal string: ASCII digits, an optional sign and point; no exponent, no "_", no
# other scripts' digits (all of which Decimal() would accept).
_DECIMAL_STRING = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def minor_units(currency: str) -> int:
    """Digits after the decimal point for `currency`."""
    return MINOR_UNITS.get(currency.upper(), 2)


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round once, half-even, to the currency's minor unit."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency."""

    amount: Decimal
    currency: str

    @classmethod
    def parse(cls, amount: str | Decimal, currency: str, *, positive: bool = False) -> Money:
        """Parse a decimal string strictly: currency digits at most, 12 integer digits at most."""
        cur = (currency or "").upper()
        if len(cur) != 3 or not cur.isalpha() or not cur.isascii():
            raise ValidationError(f"currency {currency!r} is not an ISO 4217 code")
        if isinstance(amount, str) and not _DECIMAL_STRING.fullmatch(amount.strip()):
            raise ValidationError(f"amount {amount!r} is not a decimal number")
        try:
            value = Decimal(str(amount).strip())
        except (InvalidOperation, ValueError):
            raise ValidationError(f"amount {amount!r} is not a decimal number") from None
        if not value.is_finite():
            raise ValidationError("amount must be a finite number")
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        # Integer digits first: quantizing a value wider than Decimal's precision would raise.
        if value.adjusted() >= MAX_INTEGER_DIGITS:
            raise ValidationError(f"amount has more than {MAX_INTEGER_DIGITS} integer digits")
        if -exponent > minor_units(cur) and value != quantize(value, cur):
            raise ValidationError(f"amount has more than {minor_units(cur)} decimal places for {cur}")
        if positive and value <= 0:
            raise ValidationError("amount must be positive")
        return cls(quantize(value, cur), cur)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
