"""One check over the arguments of every field, before its resolver runs.

Every string must be storable (no NUL, no unpaired surrogate: PostgreSQL and psycopg refuse
them mid-transaction, and a bad earn would fail the group-commit batch it joined) and every
date-time an instant with a UTC offset within 1970..9999. `_Schema.get_fields` gives each field
with arguments an `InputCheck`; it runs on the converted arguments (`map_arguments`), so the
earn's fast input conversion (`types.plain_input`) is kept and the check costs a walk over a few
values. A refusal is the field's typed `ValidationError` when its result union has one
(`RefusedInputHandler`), a GraphQL error with code VALIDATION otherwise (query arguments).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import FieldExtension
from strawberry.schema import ExceptionHandler
from strawberry.schema.schema_converter import field_contains_type
from strawberry.types.field import StrawberryField
from strawberry.utils.str_converters import to_camel_case

from core.errors import ValidationError as DomainValidation
from core.text import UNSTORABLE_TEXT, instant_problem, storable
from gateway.graphql import errors as E

Path = tuple[str | int, ...]

_SCALARS = (int, float, bool, type(None))


def problem(value: Any) -> tuple[Path, str] | None:
    """Where in `value` (an argument: scalars, lists, input objects) the first unacceptable value
    is, and why; None when every value is acceptable."""
    if isinstance(value, str):
        return None if storable(value) else ((), UNSTORABLE_TEXT)
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, datetime):
        reason = instant_problem(value)
        return None if reason is None else ((), reason)
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = problem(item)
            if found is not None:
                return (i, *found[0]), found[1]
        return None
    if hasattr(value, "__strawberry_definition__"):  # an input object (a dataclass)
        for name, item in vars(value).items():
            found = problem(item)
            if found is not None:
                return (name, *found[0]), found[1]
    return None


def field_name(argument: str, path: Path) -> str:
    """The GraphQL name of the value at `path` of `argument`: `orderRef`, `amount.currency`,
    `categoryRates[0].category` (an `input` argument's fields are named without it, as in
    every other VALIDATION error), `after`."""
    parts: list[str] = [] if argument == "input" and path else [to_camel_case(argument)]
    for step in path:
        if isinstance(step, int):
            parts[-1] += f"[{step}]"
        else:
            parts.append(to_camel_case(step))
    return ".".join(parts)


class RefusedInput(DomainValidation):
    """An argument refused by `InputCheck`."""


class InputCheck(FieldExtension):
    """Refuses a field's unacceptable arguments before its resolver runs."""

    typed = False

    def apply(self, field: StrawberryField) -> None:
        """Note whether the field answers with a result union that has `ValidationError`."""
        self.typed = field_contains_type(field, E.ValidationError)

    def map_arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments unchanged, or a refusal of the first unacceptable value."""
        for argument, value in kwargs.items():
            found = problem(value)
            if found is not None:
                name = field_name(argument, found[0])
                message = f"{name} {found[1]}"
                if self.typed:
                    raise RefusedInput(message, field=name)
                raise GraphQLError(message, extensions={"code": "VALIDATION", "field": name})
        return kwargs


class RefusedInputHandler(ExceptionHandler[RefusedInput, E.ValidationError]):
    """A refused argument of a mutation becomes its typed `ValidationError` result."""

    def handle(self, exception: RefusedInput, *, field: Any, info: Any) -> E.ValidationError:
        error = E.to_graphql(exception)  # a RefusedInput's code is VALIDATION
        assert isinstance(error, E.ValidationError)
        return error


def add_input_checks(fields: list[StrawberryField]) -> list[StrawberryField]:
    """`fields`, each one with arguments given its `InputCheck` (once, whatever the number of
    schemas built)."""
    for f in fields:
        if f.arguments and not any(isinstance(x, InputCheck) for x in f.extensions):
            f.extensions.append(InputCheck())
    return fields
