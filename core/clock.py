"""The clock. Everything that needs "now" asks here, so tests and jobs can pin time."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def ensure_aware(at: datetime) -> datetime:
    """Reject naive datetimes: every time in the ledger is an instant."""
    if at.tzinfo is UTC:  # already (every earn of a batch file's chunk: its one instant)
        return at
    if at.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return at.astimezone(UTC)
