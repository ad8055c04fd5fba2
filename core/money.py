"""Money: Decimal amounts with an ISO 4217 currency. Never float."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from iso4217 import Currency

from core.errors import ValidationError
from core.frozen import fast_init

# Minor units of every current ISO 4217 currency, from ISO's own published table (list one, as
# shipped by the `iso4217` package, which is re-released with each amendment): CLP 0, ISK 0,
# JPY 0, HUF 2, TWD 2, BHD 3, CLF 4. Not CLDR's "digits" (babel's get_currency_precision),
# which are display conventions: CLDR gives 0 where ISO gives 2 for HUF, COP, IDR, IRR, ... and
# 0 for IQD (ISO 3), and lists withdrawn codes (DEM, FRF). Codes without minor units (metals
# XAU/XAG, XDR, the testing code XTS, XXX) are no money to settle in and are not listed.
# Built once at import: a lookup here costs a dict access on the earn path.
ISO_4217_MINOR_UNITS: dict[str, int] = {
    c.code: c.exponent for c in Currency if c.exponent is not None
}
_QUANTUM: dict[str, Decimal] = {
    code: Decimal(1).scaleb(-units) for code, units in ISO_4217_MINOR_UNITS.items()
}
MAX_INTEGER_DIGITS = 12
# The face value of one point in the settlement currency when POINT_VALUE is not set.
DEFAULT_POINT_VALUE = Decimal("1.00")
# A plain decimal string: ASCII digits, an optional sign and point; no exponent, no "_", no
# other scripts' digits (all of which Decimal() would accept).
_DECIMAL_STRING = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def currency_code(currency: object) -> str:
    """The ISO 4217 code `currency` names (any case), or a ValidationError."""
    cur = currency.upper() if isinstance(currency, str) else ""
    if cur not in ISO_4217_MINOR_UNITS:
        raise ValidationError(f"currency {currency!r} is not an ISO 4217 currency code")
    return cur


def minor_units(currency: str) -> int:
    """Digits after the decimal point for `currency` (ISO 4217); unknown codes are refused."""
    return ISO_4217_MINOR_UNITS[currency_code(currency)]


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round once, half-even, to the currency's minor unit."""
    return amount.quantize(_QUANTUM[currency_code(currency)], rounding=ROUND_HALF_EVEN)


def format_amount(amount: Decimal, currency: str) -> str:
    """`amount` as a plain decimal string with exactly the currency's minor-unit digits."""
    return f"{quantize(Decimal(amount), currency):f}"


@fast_init
@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency."""

    amount: Decimal
    currency: str

    @classmethod
    def parse(cls, amount: str | Decimal, currency: str, *, positive: bool = False) -> Money:
        """Parse a decimal string strictly: currency digits at most, 12 integer digits at most."""
        cur = currency_code(currency)
        if isinstance(amount, str):
            # (a long one, spaces around a number, is parsed without keeping it)
            parse = _parse_text if len(amount) <= _CACHED_LENGTH else _parse_text.__wrapped__
            money = parse(amount, cur)
        else:
            try:
                value = Decimal(str(amount).strip())
            except (InvalidOperation, ValueError):
                raise ValidationError(f"amount {amount!r} is not a decimal number") from None
            if not value.is_finite():
                raise ValidationError("amount must be a finite number")
            found = value.as_tuple().exponent
            assert isinstance(found, int)
            money = _checked(value, found, cur)
        if positive and money.amount <= 0:
            raise ValidationError("amount must be positive")
        return money

    @classmethod
    def of(cls, amount: Decimal, currency: str) -> Money:
        """An amount read back from storage or computed: rounded half-even to minor units."""
        cur = currency_code(currency)
        return cls(quantize(Decimal(amount), cur), cur)

    def __str__(self) -> str:
        return f"{self.amount:f} {self.currency}"


def _checked(value: Decimal, exponent: int, cur: str) -> Money:
    """`value` (finite, with `exponent` digits as written) as money in `cur`, refused when it is
    too wide or has more digits after the point than the currency has (trailing zeros too:
    "100.000" RUB is refused like "100.001")."""
    # Integer digits first: quantizing a value wider than Decimal's precision would raise.
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        raise ValidationError(f"amount has more than {MAX_INTEGER_DIGITS} integer digits")
    places = ISO_4217_MINOR_UNITS[cur]
    if -exponent > places:
        raise ValidationError(f"amount has more than {places} decimal places for {cur}")
    return Money(value.quantize(_QUANTUM[cur]), cur)


_CACHED_LENGTH = 32  # the longest amount text `_parse_text` keeps (4,096 of them at most)


@functools.lru_cache(maxsize=4096)
def _parse_text(amount: str, cur: str) -> Money:
    """`Money.parse` of a string in `cur` (a known code), cached: the amounts of a batch file's
    lines come back (prices), and a Money is immutable. A refusal raises (and is not cached)."""
    text = amount.strip()
    if not _DECIMAL_STRING.fullmatch(text):
        raise ValidationError(f"amount {amount!r} is not a decimal number")
    value = Decimal(text)  # finite: the pattern admits nothing else
    # Its digits after the point, read off the string (what `as_tuple` would give, at a third
    # of the cost: this runs on every line of a batch file).
    point = text.find(".")
    return _checked(value, 0 if point < 0 else point + 1 - len(text), cur)
