"""Partner error codes."""

from core.errors import DomainError, ErrorCode


class PartnerNotFound(DomainError):
    code = ErrorCode.PARTNER_NOT_FOUND


class OrderNotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class RuleMissing(DomainError):
    """The partner has no earn rule yet: it cannot issue points."""

    code = ErrorCode.VALIDATION


class NoAgreement(DomainError):
    """The partner has no agreement in force at the event's time: it may not issue or accept
    points (nobody would pay for them)."""

    code = ErrorCode.NO_AGREEMENT


class ClientNotFound(DomainError):
    """No OAuth client has this id (or it cannot be changed that way)."""

    code = ErrorCode.NOT_FOUND
