"""Settlement error codes (expected failures: nothing was changed)."""

from core.errors import DomainError, ErrorCode


class PeriodNotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class InvalidPeriod(DomainError):
    """A range that cannot be a period: empty, naive, too long, not yet started."""

    code = ErrorCode.VALIDATION


class PeriodOverlap(DomainError):
    """The range overlaps an existing period with other bounds (periods never overlap)."""

    code = ErrorCode.VALIDATION


class PeriodNotEnded(DomainError):
    """Closing a period whose end is in the future is refused."""

    code = ErrorCode.VALIDATION


class ExpiryPending(DomainError):
    """Points expired inside the period have not been moved to breakage yet: expiry runs before
    the close (`expire_and_close` does both)."""

    code = ErrorCode.VALIDATION


class ReconciliationFileError(DomainError):
    """The uploaded file is not a valid reconciliation file; `line` names where (0: the file as a
    whole, e.g. too large). Nothing was stored."""

    code = ErrorCode.VALIDATION

    def __init__(self, message: str, *, line: int = 0) -> None:
        super().__init__(f"line {line}: {message}" if line else message, line=line)
        self.line = line


class ReconciliationNotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class ReconciliationLimitExceeded(DomainError):
    """The partner already has the most reports a period may keep
    (`RECONCILIATION_MAX_PER_PERIOD`); nothing was stored."""

    code = ErrorCode.LIMIT_EXCEEDED
