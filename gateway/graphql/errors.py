"""Typed GraphQL errors: every expected failure is a type implementing `Error`.

Domain errors (core.errors.DomainError and subclasses) carry a stable code; `to_graphql`
turns one into the error type of that code, so resolvers never build errors by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Union

import strawberry

from core.errors import DomainError, ErrorCode


@strawberry.interface(
    description="An expected failure: a stable machine-readable code and a human message."
)
class Error:
    code: str = strawberry.field(description="Stable error code, e.g. INSUFFICIENT_POINTS.")
    message: str = strawberry.field(description="What went wrong, for humans.")


@strawberry.type(
    description="The member's available points do not cover the request. Nothing changed."
)
class InsufficientPointsError(Error):
    available: int | None = strawberry.field(
        default=None, description="Points available at the time of the request."
    )


@strawberry.type(
    description="The idempotency key was used before with a different request. Nothing changed."
)
class IdempotencyConflictError(Error):
    pass


@strawberry.type(description="No member has this card number (or id).")
class MemberNotFoundError(Error):
    pass


@strawberry.type(
    description="The redemption code is unknown, used, expired, or bound to another partner."
)
class InvalidRedemptionCodeError(Error):
    pass


@strawberry.type(description="The hold was captured, voided or has expired.")
class HoldNotActiveError(Error):
    pass


@strawberry.type(
    description="A limit was reached: a code's cap, a bill's share payable in points, a throttle."
)
class LimitExceededError(Error):
    pass


@strawberry.type(
    description="The partner has no agreement in force at the event's time (none yet, or one "
    "effective only later): it can neither issue nor accept points. Nothing changed."
)
class NoAgreementError(Error):
    pass


@strawberry.type(
    description="The reward's stock (or its voucher's pool of codes) is used up. Nothing changed."
)
class OutOfStockError(Error):
    pass


@strawberry.type(
    description="The input is not acceptable (wrong amount, currency, format, range...)."
)
class ValidationError(Error):
    field: str | None = strawberry.field(
        default=None, description="The input field at fault, if one."
    )


@strawberry.type(description="The object does not exist or is not visible to the caller.")
class NotFoundError(Error):
    pass


@strawberry.type(
    description="The caller is not authenticated, or its token lacks the scope required."
)
class ForbiddenError(Error):
    pass


@strawberry.type(
    description="The promo code is unknown, expired, used up, or already applied by this member. "
    "Nothing changed."
)
class InvalidPromoCodeError(Error):
    pass


ERROR_TYPES = (
    InsufficientPointsError,
    IdempotencyConflictError,
    MemberNotFoundError,
    InvalidRedemptionCodeError,
    HoldNotActiveError,
    LimitExceededError,
    ValidationError,
    NotFoundError,
    ForbiddenError,
    NoAgreementError,
    OutOfStockError,
    InvalidPromoCodeError,
)

_BY_CODE: dict[str, type[Error]] = {
    ErrorCode.INSUFFICIENT_POINTS: InsufficientPointsError,
    ErrorCode.IDEMPOTENCY_CONFLICT: IdempotencyConflictError,
    ErrorCode.MEMBER_NOT_FOUND: MemberNotFoundError,
    ErrorCode.INVALID_REDEMPTION_CODE: InvalidRedemptionCodeError,
    ErrorCode.HOLD_NOT_ACTIVE: HoldNotActiveError,
    ErrorCode.LIMIT_EXCEEDED: LimitExceededError,
    ErrorCode.NO_AGREEMENT: NoAgreementError,
    ErrorCode.OUT_OF_STOCK: OutOfStockError,
    ErrorCode.INVALID_PROMO_CODE: InvalidPromoCodeError,
    ErrorCode.RATE_LIMITED: LimitExceededError,
    ErrorCode.VALIDATION: ValidationError,
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.HOLD_NOT_FOUND: NotFoundError,
    ErrorCode.TRANSACTION_NOT_FOUND: NotFoundError,
    ErrorCode.PARTNER_NOT_FOUND: NotFoundError,
    ErrorCode.FORBIDDEN: ForbiddenError,
}


def to_graphql(exc: DomainError) -> Error:
    """The typed GraphQL error for a domain error."""
    cls = _BY_CODE.get(exc.code, ValidationError)
    if cls is InsufficientPointsError:
        return InsufficientPointsError(
            code=str(exc.code), message=exc.message, available=exc.details.get("available")
        )
    if cls is ValidationError:
        return ValidationError(
            code=ErrorCode.VALIDATION.value, message=exc.message, field=exc.details.get("field")
        )
    return cls(code=str(exc.code), message=exc.message)


def forbidden(message: str = "this operation needs a token with another scope") -> ForbiddenError:
    return ForbiddenError(code=ErrorCode.FORBIDDEN.value, message=message)


# What the gateway itself may answer to a guarded mutation: a refusal of the caller
# (`access.guarded`) and of an argument (`inputs.InputCheck`).
GUARDED = frozenset({ErrorCode.FORBIDDEN, ErrorCode.VALIDATION})


def error_types(codes: Iterable[str]) -> tuple[type[Error], ...]:
    """The error types of `codes`, in the order of ERROR_TYPES."""
    wanted = {_BY_CODE[c] for c in codes}
    return tuple(t for t in ERROR_TYPES if t in wanted)


def result_union(name: str, success: type, codes: Iterable[str]) -> Any:
    """`FooBarResult`: the union of `FooBarSuccess` and the error types of `codes`, the error
    codes the mutation can return (Relay convention)."""
    return Annotated[Union[success, *error_types(codes)], strawberry.union(name)]


UNAVAILABLE = "UNAVAILABLE"
UNAVAILABLE_MESSAGE = (
    "the database is unavailable: nothing was changed unless a retry with the same "
    "idempotency key says so; retry shortly"
)


def database_unavailable(exc: BaseException | None) -> bool:
    """Whether `exc` is the database being out of reach (down, restarting, a connection cut,
    no pooled connection in time, a transaction the server aborted: serialization, deadlock,
    cancel): the operation did not commit and the same request may be retried."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError):
        exc = exc.orig if exc.orig is not None else exc
        if exc is not None and not isinstance(exc, psycopg.Error):
            return True  # SQLAlchemy's own disconnect errors
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.InterfaceError
        | sa_exc.TimeoutError
        | sa_exc.DisconnectionError
        | ConnectionError,
    )
