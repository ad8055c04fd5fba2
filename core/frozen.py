"""A faster `__init__` for frozen dataclasses built on every earn.

A frozen dataclass's generated `__init__` sets each field with `object.__setattr__(self,
name, value)`, which looks the attribute up by name each time: 16 fields of
`ledger.earn.EarnRequest` took 2.6 µs against 0.7 µs for the same class unfrozen (a batch
file builds several such objects per line). `fast_init` replaces it with an `__init__` of the
same signature that stores each field directly: through the slot's own descriptor (a class
with `slots=True`) or into the instance's `__dict__`. The class stays frozen (its
`__setattr__` and `__delattr__` still refuse), and equality, hashing, `repr` and
`dataclasses.replace` are the dataclass's own.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar, cast

T = TypeVar("T")


class _Factory:
    """A default_factory field's default in the signature: call the factory."""

    def __repr__(self) -> str:
        return "<factory>"  # as the dataclass's own signature shows it


_NO_VALUE = _Factory()


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen dataclass `cls` an `__init__` that stores its fields directly (apply
    below `@dataclass`). Refuses a class with `__post_init__` or init-only variables."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    fields = dataclasses.fields(cast(Any, cls))
    taken = list(inspect.signature(cls.__init__).parameters)[1:]  # the generated one's
    if hasattr(cls, "__post_init__") or taken != [
        f.name for f in fields if f.init and not f.kw_only
    ] + [f.name for f in fields if f.init and f.kw_only]:
        raise TypeError(f"{cls.__name__}: __post_init__ and InitVar are not supported")
    ns: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        value = f.name
        has_default = f.default is not dataclasses.MISSING
        has_factory = f.default_factory is not dataclasses.MISSING
        if has_default:
            ns[f"_d_{f.name}"] = f.default
        if has_factory:
            ns[f"_f_{f.name}"] = f.default_factory
        if not f.init:
            if has_default:
                value = f"_d_{f.name}"
            elif has_factory:
                value = f"_f_{f.name}()"
            else:
                continue
        else:
            param = f.name
            if has_default:
                param += f"=_d_{f.name}"
            elif has_factory:
                param += "=_NO_VALUE"
                value = f"_f_{f.name}() if {f.name} is _NO_VALUE else {f.name}"
            (keyword if f.kw_only else positional).append(param)
        slot = _slot(cls, f.name)
        if slot is not None:
            ns[f"_s_{f.name}"] = slot.__set__
            body.append(f"    _s_{f.name}(self, {value})")
        else:
            body.append(f"    self.__dict__[{f.name!r}] = {value}")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({signature}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(compile(source, f"<fast_init {cls.__qualname__}>", "exec"), ns)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    setattr(cls, "__init__", init)  # noqa: B010 (mypy: no assigning to a method)
    return cls


def _slot(cls: type, name: str) -> Any:
    """The slot descriptor of field `name` (declared by `cls` or a base), or None."""
    for klass in cls.__mro__:
        found = klass.__dict__.get(name)
        if found is not None:
            return found if type(found).__name__ == "member_descriptor" else None
    return None
