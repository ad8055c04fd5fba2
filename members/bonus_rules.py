"""The operator's bonus rules: points a new member gets at sign-up, and each side of a referral.

Both are funded by the operator (DOMAIN.md "Who funds what"). The rules are insert-only: the
latest recorded is in force, the earlier ones stay as their history; a fresh database has none,
which means no bonuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import ValidationError
from core.tables import table
from members.models import BonusRules

_rules = table(BonusRules)

MAX_BONUS_POINTS = 1_000_000  # per member and bonus: beyond this a rule is refused as absurd


@dataclass(frozen=True)
class BonusRulesRecord:
    """The rules in force (zeros and no `recorded_at` before the operator set any)."""

    signup_points: int
    referral_points: int
    recorded_at: datetime | None = None
    actor: str | None = None


_COLUMNS = (_rules.c.signup_points, _rules.c.referral_points, _rules.c.recorded_at, _rules.c.actor)


def _points(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BONUS_POINTS:
        raise ValidationError(f"{what} must be between 0 and {MAX_BONUS_POINTS}", field=what)
    return value


async def current(conn: AsyncConnection) -> BonusRulesRecord:
    """The rules in force."""
    row = (
        await conn.execute(select(*_COLUMNS).order_by(_rules.c.id.desc()).limit(1))
    ).one_or_none()
    return BonusRulesRecord(0, 0) if row is None else BonusRulesRecord(*row)


async def set_rules(
    conn: AsyncConnection, *, signup_points: int, referral_points: int, actor: str
) -> BonusRulesRecord:
    """Put new rules in force from now on; bonuses promised before keep their amounts."""
    signup = _points(signup_points, "signupPoints")
    referral = _points(referral_points, "referralPoints")
    row = (
        await conn.execute(
            insert(_rules)
            .values(
                signup_points=signup,
                referral_points=referral,
                recorded_at=func.now(),
                actor=actor,
            )
            .returning(*_COLUMNS)
        )
    ).one()
    return BonusRulesRecord(*row)
