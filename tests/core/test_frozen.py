"""`core.frozen.fast_init`: the same constructor as the dataclass's own (signature, defaults,
factories, keyword-only fields), the class still frozen; classes it cannot serve refused."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import InitVar, dataclass, field
from decimal import Decimal

import pytest

from catalog.breakdown import Line
from core.frozen import fast_init
from core.money import Money
from ledger.earn import EarnRequest
from ledger.results import BreakdownLine, EarnResult
from loyalty.earn import PricedEarn, Purchase


def _twins(slots: bool) -> tuple[type, type]:
    def make() -> type:
        @dataclass(frozen=True, slots=slots)
        class Base:
            flag: bool = field(default=False, kw_only=True)

        @dataclass(frozen=True, slots=slots)
        class C(Base):
            a: int
            b: str = "b"
            c: list[int] = field(default_factory=list)
            d: int = field(default=7, init=False)
            e: tuple[int, ...] = field(default=(), kw_only=True)

        return C

    return make(), fast_init(make())


@pytest.mark.parametrize("slots", [True, False])
def test_the_same_constructor_as_the_dataclass(slots: bool) -> None:
    plain, fast = _twins(slots)
    assert str(inspect.signature(fast.__init__)) == str(inspect.signature(plain.__init__))
    for args, kwargs in [((1,), {}), ((1, "x", [2]), {"e": (3,), "flag": True}), ((), {"a": 5})]:
        assert (
            repr(fast(*args, **kwargs)).split("(", 1)[1]
            == repr(plain(*args, **kwargs)).split("(", 1)[1]
        )
    one, two = fast(1), fast(1)
    assert one == two and one.c is not two.c  # a fresh list from the factory each time
    assert one.d == 7  # init=False: its default
    for bad in [lambda: fast(), lambda: fast(1, x=2), lambda: fast(1, "b", [], 4)]:
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 2  # type: ignore[misc]
    assert dataclasses.replace(one, b="z").b == "z"


def test_the_earn_path_classes_build_as_before() -> None:
    money = Money(Decimal("1.50"), "RUB")
    assert (money.amount, money.currency) == (Decimal("1.50"), "RUB")
    line = Line(*Line.__dataclass_fields__)  # type: ignore[arg-type]
    assert line.source == "source" and line.funded_by == "funded_by"
    assert BreakdownLine("BASE", 3) == BreakdownLine("BASE", 3, None, "PARTNER")
    assert Purchase("c", money, None, "o", "d").money is money
    assert PricedEarn(None, [], print, print).stateful == []  # type: ignore[arg-type]
    result = EarnResult(None, 1, "pending", None, None)  # type: ignore[arg-type]
    assert (result.debt_repaid, result.lines, result.follow_up, result.replayed) == (
        0,
        (),
        None,
        False,
    )
    with pytest.raises(TypeError):
        EarnRequest(actor="a")  # type: ignore[call-arg]
    for cls in (Money, Line, BreakdownLine, Purchase, PricedEarn, EarnResult, EarnRequest):
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"


def test_what_it_cannot_serve_is_refused() -> None:
    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True)
    class WithInitVar:
        a: int
        scale: InitVar[int] = 1

    for cls in (Mutable, Checked, WithInitVar, int):
        with pytest.raises(TypeError):
            fast_init(cls)
