"""Text the database can store, and instants within the range every layer can compute with."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# PostgreSQL's text refuses NUL; an unpaired surrogate has no UTF-8 encoding (psycopg cannot
# send it). A well-formed Python str never holds a surrogate pair, so any surrogate is unpaired.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

UNSTORABLE_TEXT = "must not contain NUL characters or unpaired surrogates"

# Instants outside these years overflow on conversion to UTC or on date arithmetic (a validity
# of months, a settlement period), and no loyalty event happens there.
MIN_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 1, tzinfo=UTC)


def storable(value: str) -> bool:
    """Whether `value` can be stored as PostgreSQL text (no NUL, no unpaired surrogate)."""
    if value.isascii():  # the usual case, and the fast one
        return "\x00" not in value
    return _UNSTORABLE.search(value) is None


def instant_problem(value: datetime) -> str | None:
    """Why `value` is not an acceptable instant (no UTC offset, or out of range); None if it is."""
    if value.utcoffset() is None:
        return "must be an RFC 3339 date-time with a UTC offset"
    try:
        in_utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        in_utc = None
    if in_utc is None or not MIN_INSTANT <= in_utc < MAX_INSTANT:
        return "must be between 1970-01-01 and 9999-12-01 (UTC)"
    return None
