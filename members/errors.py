"""Member error codes."""

from core.errors import DomainError, ErrorCode


class MemberNotFound(DomainError):
    code = ErrorCode.MEMBER_NOT_FOUND


class InvalidCardNumber(DomainError):
    code = ErrorCode.VALIDATION


class EmailTaken(DomainError):
    code = ErrorCode.VALIDATION
