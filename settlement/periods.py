"""Period maths: calendar periods in a time zone, the ranges an operator may settle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from core.clock import ensure_aware, utcnow
from settlement.errors import (
    InvalidPeriod,
)

Granularity = Literal["daily", "weekly", "monthly"]
GRANULARITIES: tuple[str, ...] = ("daily", "weekly", "monthly")
MAX_PERIOD = timedelta(days=366)
ONE_MICROSECOND = timedelta(microseconds=1)


def period_bounds(
    at: datetime, *, granularity: str, timezone: str = "UTC"
) -> tuple[datetime, datetime]:
    """The day, ISO week (from Monday) or month holding `at`, in `timezone`, as UTC instants."""
    if granularity not in GRANULARITIES:
        raise InvalidPeriod(f"period must be one of {', '.join(GRANULARITIES)}")
    tz = ZoneInfo(timezone)
    day = ensure_aware(at).astimezone(tz).date()
    if granularity == "daily":
        first, nxt = day, day + timedelta(days=1)
    elif granularity == "weekly":
        first = day - timedelta(days=day.weekday())
        nxt = first + timedelta(days=7)
    else:
        first = day.replace(day=1)
        nxt = first + relativedelta(months=1)
    start = datetime.combine(first, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(nxt, time(0), tzinfo=tz).astimezone(UTC)
    return start, end


def _now(now: datetime | None) -> datetime:
    return utcnow() if now is None else ensure_aware(now)


def _validate_range(
    period_start: datetime, period_end: datetime, now: datetime
) -> tuple[datetime, datetime]:
    try:
        start, end = ensure_aware(period_start), ensure_aware(period_end)
    except ValueError:
        raise InvalidPeriod("periodStart and periodEnd must carry a time zone") from None
    if end <= start:
        raise InvalidPeriod("periodEnd must be after periodStart")
    if end - start > MAX_PERIOD:
        raise InvalidPeriod(f"a period is at most {MAX_PERIOD.days} days long")
    if start > now:
        raise InvalidPeriod(
            "a period can be run once it has started (a range in the past or present)"
        )
    return start, end


def _gaps(
    start: datetime, end: datetime, taken: Sequence[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """Parts of [start, end) not covered by the sorted, disjoint ranges `taken`."""
    gaps, cursor = [], start
    for s, e in taken:
        if e <= cursor or s >= end:
            continue
        if s > cursor:
            gaps.append((cursor, s))
        cursor = max(cursor, e)
        if cursor >= end:
            break
    if cursor < end:
        gaps.append((cursor, end))
    return gaps
