"""Ledger error codes: expected failures that change nothing."""

from __future__ import annotations

from core.errors import DomainError, ErrorCode


class InsufficientPoints(DomainError):
    code = ErrorCode.INSUFFICIENT_POINTS


class IdempotencyConflict(DomainError):
    code = ErrorCode.IDEMPOTENCY_CONFLICT


class MemberNotFound(DomainError):
    code = ErrorCode.MEMBER_NOT_FOUND


class PartnerNotFound(DomainError):
    code = ErrorCode.PARTNER_NOT_FOUND


class HoldNotFound(DomainError):
    code = ErrorCode.HOLD_NOT_FOUND


class HoldNotActive(DomainError):
    code = ErrorCode.HOLD_NOT_ACTIVE


class TransactionNotFound(DomainError):
    code = ErrorCode.TRANSACTION_NOT_FOUND


class LedgerValidation(DomainError):
    code = ErrorCode.VALIDATION


class DuplicateOrder(DomainError):
    """The partner already earned points for this order reference (with another key)."""

    code = ErrorCode.VALIDATION


class TransferLimitExceeded(DomainError):
    """The sender's transfers in the 24 hours before this one, plus this one, exceed the limit."""

    code = ErrorCode.LIMIT_EXCEEDED
