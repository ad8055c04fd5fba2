"""Domain errors with stable, machine-readable codes.

Expected failures are part of the contract: each carries a `code` from `ErrorCode` and a
human message. The gateway maps them to typed GraphQL error results.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Stable error codes (published in the partner contract)."""

    INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"
    PARTNER_NOT_FOUND = "PARTNER_NOT_FOUND"
    INVALID_REDEMPTION_CODE = "INVALID_REDEMPTION_CODE"
    INVALID_PROMO_CODE = "INVALID_PROMO_CODE"
    HOLD_NOT_ACTIVE = "HOLD_NOT_ACTIVE"
    HOLD_NOT_FOUND = "HOLD_NOT_FOUND"
    TRANSACTION_NOT_FOUND = "TRANSACTION_NOT_FOUND"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    NO_AGREEMENT = "NO_AGREEMENT"
    RATE_LIMITED = "RATE_LIMITED"
    VALIDATION = "VALIDATION"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"


class DomainError(Exception):
    """An expected failure: nothing was changed, and the caller gets `code` and `message`."""

    code: ErrorCode = ErrorCode.VALIDATION

    def __init__(self, message: str, *, code: ErrorCode | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}: {self.message})"


class ValidationError(DomainError):
    code = ErrorCode.VALIDATION


class NotFoundError(DomainError):
    code = ErrorCode.NOT_FOUND
