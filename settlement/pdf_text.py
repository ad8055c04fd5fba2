"""How the statement PDF prints: a font covering the partner's script, and money, prices and
points as figures."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

from core.money import minor_units

_FONT_CANDIDATES = [
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ),
    ("/usr/share/fonts/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf"),
]


_FONT_LOCK = threading.Lock()  # PDFs render in worker threads: register the fonts once


def fonts() -> tuple[str, str]:
    """DejaVu Sans (Cyrillic and the rest) when installed, else reportlab's own Vera (Latin)."""
    from reportlab import rl_config
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    with _FONT_LOCK:
        if "CoalitionSans" in pdfmetrics.getRegisteredFontNames():
            return "CoalitionSans", "CoalitionSans-Bold"
        pairs = list(_FONT_CANDIDATES)
        for d in rl_config.TTFSearchPath:
            pairs.append((str(Path(d) / "Vera.ttf"), str(Path(d) / "VeraBd.ttf")))
        for regular, bold in pairs:
            if Path(regular).is_file() and Path(bold).is_file():
                pdfmetrics.registerFont(TTFont("CoalitionSans", regular))
                pdfmetrics.registerFont(TTFont("CoalitionSans-Bold", bold))
                return "CoalitionSans", "CoalitionSans-Bold"
        return "Helvetica", "Helvetica-Bold"


def money(amount: Decimal, cur: str) -> str:
    """An amount rounded to the currency's minor unit, thousands set apart by thin spaces."""
    places = minor_units(cur)
    q = amount.quantize(Decimal(1).scaleb(-places)) if places else amount.quantize(Decimal(1))
    sign = "-" if q < 0 else ""
    whole, _, frac = f"{abs(q):f}".partition(".")
    whole = f"{int(whole):,}".replace(",", "\u202f")
    return f"{sign}{whole}{'.' + frac if frac else ''}"


def exact(amount: Decimal, cur: str) -> str:
    """An exact line amount: minor units, more digits only when the exact value needs them."""
    places = minor_units(cur)
    q = amount.normalize()
    exp = q.as_tuple().exponent
    digits = max(places, -exp if isinstance(exp, int) else places)
    return money(amount, cur) if digits == places else f"{amount:.{digits}f}"


def price(p: Decimal | None) -> str:
    """A unit price with all its digits (at least two decimals); "none" without an agreement."""
    if p is None:
        return "none"
    s = f"{p.normalize():f}"
    return s if "." in s else s + ".00"


def points(n: int) -> str:
    """Points with thousands set apart by thin spaces."""
    return f"{n:,}".replace(",", "\u202f")
