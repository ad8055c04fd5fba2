"""Status tiers: the operator's ladder, a member's qualifying spend, upgrades and the review.

Qualifying spend at an instant `at` is the purchase amount of the member's earns at every
partner effective in (at - 12 months, at], each less what refunds took back of it by `at`,
read set-based from the `ledger_events` view. Only earns in the settlement currency count: a
ladder is in that currency, and the coalition keeps no exchange rates, so a purchase in another
currency is not converted (its points count, its amount does not qualify). A refund is a
reversal of part of the earn's points; the amount it took back is the earn's amount pro rata to
the points reversed (exact for a full refund; for a partial one the refunded amount rounded
down to the purchase amount of a whole point, as the reversal rounds its points down).

Upgrades are immediate and only up (`upgrade_if_due`); downgrades happen only at the yearly
review (`review`), which sets every member to what the 12 months before it qualify for. The
ladder is insert-only: `set_tiers` records a new version; members keep their tier by name, and
one whose name is not in the ladder in force counts as untiered until the next upgrade or
review. The lowest tier's threshold must be above zero: below it is "untiered" (x1), which
every member is without any record.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import ValidationError
from core.money import Money
from core.text import storable
from ledger.service import EarnRequest, EarnResult, FollowUp

MAX_TIERS = 20
MAX_NAME = 40
MAX_MULTIPLIER = Decimal(10)
WINDOW = "12 months"
UPGRADE, REVIEW = "upgrade", "review"


@dataclass(frozen=True)
class TierSpec:
    """A rung as given to `set_tiers` (unchecked)."""

    name: str
    threshold: Money
    multiplier: str | Decimal


@dataclass(frozen=True)
class TierRecord:
    """A rung of the ladder in force; `position` 0 is the lowest."""

    position: int
    name: str
    threshold: Money
    multiplier: Decimal


@dataclass(frozen=True)
class Ladder:
    """The ladder in force (`id` None and no tiers: none was ever set)."""

    id: int | None
    tiers: tuple[TierRecord, ...]
    recorded_at: datetime | None = None

    def by_name(self, name: str | None) -> TierRecord | None:
        return next((t for t in self.tiers if t.name == name), None)

    @functools.cached_property
    def ranks(self) -> dict[str, int]:
        """Tier name -> position (higher is better), as `catalog.breakdown` takes the ladder."""
        return {t.name: t.position for t in self.tiers}


@dataclass(frozen=True)
class MemberTierState:
    """A member's tier as stored (`tier` None: untiered)."""

    tier: str | None
    since: datetime | None
    reason: str | None


@dataclass(frozen=True)
class ReviewReport:
    reviewed: int
    upgraded: int
    downgraded: int


def _multiplier(value: str | Decimal, field: str) -> Decimal:
    try:
        m = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationError("multiplier must be a decimal number", field=field) from None
    if not m.is_finite() or not 1 <= m <= MAX_MULTIPLIER:
        raise ValidationError(f"multiplier must be between 1 and {MAX_MULTIPLIER}", field=field)
    exponent = m.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise ValidationError("multiplier has more than 4 decimal places", field=field)
    return m


def check_ladder(specs: Sequence[TierSpec], *, currency: str) -> list[TierSpec]:
    """The rungs, checked: at most MAX_TIERS; names non-empty, printable, unique; thresholds in
    `currency`, above zero and strictly increasing; multipliers 1..10. Raises ValidationError."""
    if len(specs) > MAX_TIERS:
        raise ValidationError(f"at most {MAX_TIERS} tiers", field="tiers")
    out: list[TierSpec] = []
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        name = spec.name.strip()
        if not name or len(name) > MAX_NAME or not storable(name) or not name.isprintable():
            raise ValidationError(
                f"tier name must be 1..{MAX_NAME} printable characters", field=f"tiers.{i}.name"
            )
        if name.casefold() in seen:
            raise ValidationError(f"tier name {name!r} is given twice", field=f"tiers.{i}.name")
        seen.add(name.casefold())
        if spec.threshold.currency != currency:
            raise ValidationError(
                f"thresholds are in the settlement currency {currency}",
                field=f"tiers.{i}.threshold",
            )
        if spec.threshold.amount <= 0:
            raise ValidationError(
                "a threshold must be above zero (below the lowest tier is untiered)",
                field=f"tiers.{i}.threshold",
            )
        if out and spec.threshold.amount <= out[-1].threshold.amount:
            raise ValidationError(
                "thresholds must increase strictly from the lowest tier",
                field=f"tiers.{i}.threshold",
            )
        out.append(TierSpec(name, spec.threshold, _multiplier(spec.multiplier, f"tiers.{i}")))
    return out


async def set_tiers(
    conn: AsyncConnection, *, tiers: Sequence[TierSpec], currency: str, actor: str
) -> Ladder:
    """Put a new ladder in force (an empty one: no tiers). Members keep their tier names."""
    checked = check_ladder(tiers, currency=currency)
    ladder_id = (
        await conn.execute(
            text("INSERT INTO tier_ladders (actor) VALUES (:a) RETURNING id"), {"a": actor}
        )
    ).scalar_one()
    if checked:
        await conn.execute(
            text(
                "INSERT INTO tiers (ladder_id, position, name, threshold, currency, multiplier) "
                "VALUES (:l, :p, :n, :t, :c, :m)"
            ),
            [
                {
                    "l": ladder_id,
                    "p": i,
                    "n": t.name,
                    "t": t.threshold.amount,
                    "c": t.threshold.currency,
                    "m": t.multiplier,
                }
                for i, t in enumerate(checked)
            ],
        )
    return await ladder(conn)


async def ladder(conn: AsyncConnection) -> Ladder:
    """The ladder in force: the latest version."""
    rows = (
        await conn.execute(
            text(
                "WITH l AS (SELECT id, recorded_at FROM tier_ladders ORDER BY id DESC LIMIT 1) "
                "SELECT l.id, l.recorded_at, t.position, t.name, t.threshold, t.currency, "
                "t.multiplier FROM l LEFT JOIN tiers t ON t.ladder_id = l.id ORDER BY t.position"
            )
        )
    ).all()
    if not rows:
        return Ladder(None, ())
    tiers = tuple(
        TierRecord(r.position, r.name, Money.of(r.threshold, r.currency), r.multiplier)
        for r in rows
        if r.name is not None
    )
    return Ladder(rows[0].id, tiers, rows[0].recorded_at)


def tier_for_spend(ladder: Ladder, spend: Decimal) -> TierRecord | None:
    """The highest tier `spend` reaches (None: below the lowest, untiered)."""
    reached = [t for t in ladder.tiers if spend >= t.threshold.amount]
    return reached[-1] if reached else None


def next_tier(ladder: Ladder, current: TierRecord | None) -> TierRecord | None:
    """The tier above `current` (the lowest for an untiered member; None at the top)."""
    above = 0 if current is None else current.position + 1
    return ladder.tiers[above] if above < len(ladder.tiers) else None


def _spend_cte(source: str, at: str, cur: str, *, open_ended: bool = False) -> str:
    """`spend(member_id, spend)`: the qualifying spend of the members of `source(id)` at the
    instant `at` in currency `cur` (SQL expressions: bind parameters or `m`'s columns): a
    member's earns in the window, each less the refunded share (its reversals' points pro
    rata). `open_ended`: every earn and refund committed after the window's start counts, also
    one effective after `at` (an upgrade is decided when it commits: an earn of a few
    milliseconds later may have committed first)."""
    upto = "" if open_ended else f"AND e.effective_at <= {at}"
    refunds_upto = "" if open_ended else f"AND v.effective_at <= {at}"
    return f"""
    spend AS (
        SELECT m.id AS member_id, coalesce(sum(
            CASE WHEN r.points >= e.points THEN 0
                 ELSE e.amount - trunc(e.amount * coalesce(r.points, 0) / e.points, 4) END
        ), 0) AS spend
        FROM {source} m
        LEFT JOIN ledger_events e
          ON e.member_id = m.id AND e.kind = 'earn' AND e.currency = {cur}
         AND e.amount IS NOT NULL AND e.points > 0
         AND e.effective_at > CAST({at} AS timestamptz) - CAST('{WINDOW}' AS interval)
         {upto}
        LEFT JOIN LATERAL (
            SELECT sum(v.points) AS points FROM ledger_events v
            WHERE v.kind = 'reversal' AND v.reverses_id = e.id {refunds_upto}
        ) r ON e.id IS NOT NULL
        GROUP BY m.id
    )
"""


# The qualifying spend of the members of `m(id)` at :at, in :cur (`_OPEN_SPEND`: open-ended).
_SPEND = _spend_cte("m", ":at", ":cur")
_OPEN_SPEND = _spend_cte("m", ":at", ":cur", open_ended=True)


async def qualifying_spend(
    conn: AsyncConnection,
    *,
    member_id: uuid.UUID,
    at: datetime,
    currency: str,
    open_ended: bool = False,
) -> Money:
    """The member's qualifying spend at `at` (see the module's docstring); `open_ended`: with
    every earn committed after the window's start (`_spend_cte`)."""
    spend = _OPEN_SPEND if open_ended else _SPEND
    value = (
        await conn.execute(
            text(f"WITH m AS (SELECT CAST(:m AS uuid) AS id), {spend} SELECT spend FROM spend"),
            {"m": member_id, "at": at, "cur": currency},
        )
    ).scalar_one()
    return Money.of(value, currency)


async def member_tier(conn: AsyncConnection, *, member_id: uuid.UUID) -> MemberTierState:
    """The member's stored tier (untiered when none)."""
    row = (
        await conn.execute(
            text("SELECT tier_name, since, reason FROM member_tiers WHERE member_id = :m"),
            {"m": member_id},
        )
    ).one_or_none()
    return MemberTierState(None, None, None) if row is None else MemberTierState(*row)


async def upgrade_if_due(
    conn: AsyncConnection,
    *,
    member_id: uuid.UUID,
    at: datetime,
    currency: str,
    open_ended: bool = False,
) -> TierRecord | None:
    """Raise the member to the tier its qualifying spend at `at` reaches, if above the one it
    holds; never lower it (that is the review's). Returns the new tier when it changed.

    The earn's single path runs it in the earn's unit of work, after the earn, open-ended
    (`upgrade_follow_up`; the group commit runs the same rule in its statement). The earn itself
    was priced at the tier held before (the earn that crosses a threshold still counts at the
    old tier); the next earn sees the new one.

    The common case (nothing to do) reads without locking; a change locks the member's tier row
    and re-reads it, so concurrent calls for one member record one change, not two."""
    current_ladder = await ladder(conn)
    if not current_ladder.tiers:
        return None
    spend = await qualifying_spend(
        conn, member_id=member_id, at=at, currency=currency, open_ended=open_ended
    )
    target = tier_for_spend(current_ladder, spend.amount)
    if target is None:
        return None
    held = current_ladder.by_name((await member_tier(conn, member_id=member_id)).tier)
    if held is not None and held.position >= target.position:
        return None
    # The member's tier row, created untiered if missing, locked: a concurrent upgrade of the
    # same member waits here and then sees this one's result.
    locked = (
        await conn.execute(
            text(
                "INSERT INTO member_tiers (member_id) VALUES (:m) "
                "ON CONFLICT (member_id) DO UPDATE SET member_id = EXCLUDED.member_id "
                "RETURNING tier_name"
            ),
            {"m": member_id},
        )
    ).scalar_one()
    held = current_ladder.by_name(locked)
    if held is not None and held.position >= target.position:
        return None
    await _record(
        conn,
        member_id=member_id,
        before=locked,
        after=target.name,
        reason=UPGRADE,
        at=at,
        spend=spend.amount,
        ladder_id=current_ladder.id,
    )
    return target


# The upgrade of `upgrade_if_due`, as CTEs of the group commit's statement (`ledger.batch`):
# for the members of the batch's earns that carry it (`w.after`: the ladder and currency), the
# spend at their last earn of the batch (the earns before the batch, read from the statement's
# snapshot, open-ended as on the single path, plus the batch's own up to it), the highest rung it reaches, and the change when
# that is above the stored tier. Three guards, each with a test (tests/loyalty/
# test_tier_upgrade_races.py):
# - `tier_fresh`: the snapshot is taken before the wallet locks are granted; a member whose
#   wallet another statement changed in between (the batch statement's `moved`: an earn of
#   theirs committed meanwhile) would be judged on a spend without it, so the statement refuses
#   itself and each earn runs alone (the single path reads after its locks).
# - `tier_held`: the stored tiers are locked (after the wallets) and read at their latest
#   version, so the change records the tier a concurrent review left, not the snapshot's.
# - the upsert raises a tier only above the one stored when it writes: a row the snapshot did
#   not have (a review's, meanwhile) is not overwritten by a tier no higher.
_UPGRADE_CTES = f"""
tier_in AS (
    SELECT w.i, w.member, w.at, w.currency, w.amount,
           CAST(w.after->>'ladder' AS bigint) AS ladder, w.after->>'cur' AS cur
    FROM w WHERE jsonb_typeof(w.after) = 'object'
), tier_fresh AS (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM moved JOIN tier_in t ON t.member = moved.member)
                THEN ledger_refuse('a member earned in another statement meanwhile')
                ELSE true END AS ok
), tier_m AS (
    SELECT member AS id, max(at) AS at, min(cur) AS cur
    FROM tier_in, tier_fresh WHERE tier_fresh.ok GROUP BY member
), spend AS (
    -- `_spend_cte`, open-ended, one index probe per member (a join let the generic plan scan
    -- every member's earns for each)
    SELECT m.id AS member_id, s.spend FROM tier_m m
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(
            CASE WHEN r.points >= e.points THEN 0
                 ELSE e.amount - trunc(e.amount * coalesce(r.points, 0) / e.points, 4) END
        ), 0) AS spend
        FROM ledger_events e
        LEFT JOIN LATERAL (
            SELECT sum(v.points) AS points FROM ledger_events v
            WHERE v.kind = 'reversal' AND v.reverses_id = e.id
        ) r ON true
        WHERE e.member_id = m.id AND e.kind = 'earn' AND e.currency = m.cur
          AND e.amount IS NOT NULL AND e.points > 0
          AND e.effective_at > m.at - CAST('{WINDOW}' AS interval)
        OFFSET 0
    ) s
),
tier_last AS (
    SELECT DISTINCT ON (t.member) t.i, t.member, t.at, t.ladder,
           s.spend + sum(CASE WHEN t.currency = t.cur THEN coalesce(t.amount, 0) ELSE 0 END)
                         OVER (PARTITION BY t.member ORDER BY t.i) AS spend
    FROM tier_in t JOIN spend s ON s.member_id = t.member
    ORDER BY t.member, t.i DESC
), tier_target AS (
    -- the rungs travel with the earns (`upgrade_follow_up`): no read of `tiers` per earn
    SELECT DISTINCT ON (l.member) l.i, l.member, l.at, l.ladder, l.spend, r.name, r.position
    FROM tier_last l
    JOIN w ON w.i = l.i
    CROSS JOIN LATERAL jsonb_to_recordset(w.after->'rungs')
         AS r(position int, name text, threshold numeric)
    WHERE r.threshold <= l.spend
    ORDER BY l.member, r.position DESC
), tier_held AS (
    SELECT member_id, tier_name FROM member_tiers
    WHERE member_id IN (SELECT member FROM tier_target)
    ORDER BY member_id
    FOR UPDATE
), tier_due AS (
    SELECT x.*, h.tier_name AS before
    FROM tier_target x LEFT JOIN tier_held h ON h.member_id = x.member
    WHERE x.position > coalesce((SELECT position FROM tiers
                                 WHERE ladder_id = x.ladder AND name = h.tier_name), -1)
), tier_up AS (
    INSERT INTO member_tiers AS mt (member_id, tier_name, since, reason, ladder_id)
    SELECT member, name, at, '{UPGRADE}', ladder FROM tier_due ORDER BY member
    ON CONFLICT (member_id) DO UPDATE SET tier_name = EXCLUDED.tier_name,
        since = EXCLUDED.since, reason = EXCLUDED.reason, ladder_id = EXCLUDED.ladder_id
    WHERE coalesce((SELECT position FROM tiers
                    WHERE ladder_id = EXCLUDED.ladder_id AND name = mt.tier_name), -1)
        < (SELECT position FROM tiers
           WHERE ladder_id = EXCLUDED.ladder_id AND name = EXCLUDED.tier_name)
    RETURNING member_id
), tier_hist AS (
    INSERT INTO member_tier_changes (member_id, from_tier, to_tier, reason, at,
                                     qualifying_spend, ladder_id)
    SELECT d.member, d.before, d.name, '{UPGRADE}', d.at, d.spend, d.ladder
    FROM tier_due d JOIN tier_up u ON u.member_id = d.member
), follow_up AS (
    SELECT d.i, d.name AS value FROM tier_due d JOIN tier_up u ON u.member_id = d.member
)"""


async def _upgrade_single(conn: Any, request: EarnRequest, result: EarnResult) -> str | None:
    """The follow-up on the single path: `upgrade_if_due` in the earn's unit of work."""
    assert request.follow_up is not None and request.at is not None
    upgraded = await upgrade_if_due(
        conn,
        member_id=request.member_id,
        at=request.at,
        currency=request.follow_up.params["cur"],
        open_ended=True,
    )
    return None if upgraded is None else upgraded.name


def upgrade_follow_up(ladder: Ladder, currency: str) -> FollowUp:
    """The upgrade an earn may trigger under `ladder` (the one in force, with an id), committed
    with it (`ledger.earn.FollowUp`): in the group commit's statement, or after the earn on
    the single path. Its value is the member's new tier, when the earn raised it. The earn
    itself is priced at the tier held before."""
    if ladder.id is None:
        raise ValueError("an upgrade needs a ladder in force")
    rungs = [
        {"position": t.position, "name": t.name, "threshold": str(t.threshold.amount)}
        for t in ladder.tiers
    ]
    return FollowUp(
        _UPGRADE_CTES, {"ladder": ladder.id, "cur": currency, "rungs": rungs}, _upgrade_single
    )


async def _record(
    conn: AsyncConnection,
    *,
    member_id: uuid.UUID,
    before: str | None,
    after: str | None,
    reason: str,
    at: datetime,
    spend: Decimal,
    ladder_id: int | None,
) -> None:
    await conn.execute(
        text(
            "WITH u AS (UPDATE member_tiers SET tier_name = :to, since = :at, reason = :why, "
            "ladder_id = :l WHERE member_id = :m) "
            "INSERT INTO member_tier_changes (member_id, from_tier, to_tier, reason, at, "
            "qualifying_spend, ladder_id) VALUES (:m, :from, :to, :why, :at, :s, :l)"
        ),
        {
            "m": member_id,
            "from": before,
            "to": after,
            "why": reason,
            "at": at,
            "s": spend,
            "l": ladder_id,
        },
    )


# One chunk of the review: the members after :after, their spend, the tier it reaches in the
# ladder :ladder, and a change recorded for each whose stored tier differs. A member whose tier
# changed after :at (an upgrade on a later earn) is left alone: the review's window is older.
# Rows are written in member id order, so two reviews lock them in the same order.
_REVIEW_CHUNK = f"""
    WITH m AS (SELECT id FROM members WHERE id > :after ORDER BY id LIMIT :limit),
    {_SPEND},
    rungs AS (SELECT position, name, threshold FROM tiers WHERE ladder_id = :ladder),
    due AS (
        SELECT s.member_id, s.spend, cur.tier_name AS before,
               coalesce(oldr.position, -1) AS before_pos,
               (SELECT r.name FROM rungs r WHERE r.threshold <= s.spend
                ORDER BY r.position DESC LIMIT 1) AS after,
               coalesce((SELECT max(r.position) FROM rungs r WHERE r.threshold <= s.spend), -1)
                 AS after_pos
        FROM spend s
        LEFT JOIN member_tiers cur ON cur.member_id = s.member_id
        LEFT JOIN rungs oldr ON oldr.name = cur.tier_name
        WHERE cur.since IS NULL OR cur.since <= :at
    ), changed AS (
        SELECT * FROM due
        WHERE after IS DISTINCT FROM before
    ), up AS (
        INSERT INTO member_tiers AS t (member_id, tier_name, since, reason, ladder_id)
        SELECT member_id, after, :at, 'review', :ladder FROM changed ORDER BY member_id
        ON CONFLICT (member_id) DO UPDATE SET tier_name = EXCLUDED.tier_name,
            since = EXCLUDED.since, reason = EXCLUDED.reason, ladder_id = EXCLUDED.ladder_id
        WHERE t.since IS NULL OR t.since <= :at
    ), hist AS (
        INSERT INTO member_tier_changes (member_id, from_tier, to_tier, reason, at,
                                         qualifying_spend, ladder_id)
        SELECT member_id, before, after, 'review', :at, spend, :ladder FROM changed
    )
    SELECT (SELECT count(*) FROM m) AS reviewed,
           (SELECT id FROM m ORDER BY id DESC LIMIT 1) AS last,
           (SELECT count(*) FROM changed WHERE after_pos > before_pos) AS upgraded,
           (SELECT count(*) FROM changed WHERE after_pos <= before_pos) AS downgraded
"""


async def review_chunk(
    conn: AsyncConnection,
    *,
    ladder_id: int,
    as_of: datetime,
    currency: str,
    after: uuid.UUID,
    limit: int,
) -> tuple[ReviewReport, uuid.UUID | None]:
    """Review the next `limit` members after `after` (by id); returns the counts and the last
    member reviewed (None: no member left)."""
    row = (
        await conn.execute(
            text(_REVIEW_CHUNK),
            {
                "after": after,
                "limit": limit,
                "at": as_of,
                "cur": currency,
                "ladder": ladder_id,
            },
        )
    ).one()
    last = row.last
    return ReviewReport(row.reviewed, row.upgraded, row.downgraded), last


ProgressFn = Callable[[ReviewReport], None]

REVIEW_CHUNK = 2_000


async def review(
    conn: AsyncConnection,
    *,
    as_of: datetime,
    currency: str,
    chunk: int = REVIEW_CHUNK,
    progress: ProgressFn | None = None,
) -> ReviewReport:
    """The yearly review in one connection: every member set to the tier the 12 months before
    `as_of` qualify for (up or down), `chunk` members per statement, `progress` told the
    running totals after each. Re-running it for the same `as_of` changes nothing more.
    `loyalty.tiers.review` commits chunk by chunk and runs one review at a time."""
    current = await ladder(conn)
    total = ReviewReport(0, 0, 0)
    if current.id is None:
        return total
    after = uuid.UUID(int=0)
    while True:
        done, last = await review_chunk(
            conn, ladder_id=current.id, as_of=as_of, currency=currency, after=after, limit=chunk
        )
        total = ReviewReport(
            total.reviewed + done.reviewed,
            total.upgraded + done.upgraded,
            total.downgraded + done.downgraded,
        )
        if progress is not None:
            progress(total)
        if last is None or done.reviewed < chunk:
            return total
        after = last
