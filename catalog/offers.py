"""Offers and promo codes: partners (their own purchases) and the operator (any partner's, or
coalition-wide) create offers and end them early; members list the offers they may use and
activate those that require it, in the app or by applying a promo code.

What an offer adds to an earn is `catalog.breakdown` (pure); the earn path reads the live
offers with `live_offers` and the member's activations and uses with `member_state`, and counts
the uses of the offers that added points with `count_uses`. Nothing here commits: the caller's
unit of work does (`loyalty.offers`).

`owner` arguments restrict a change to one partner's offers (None: the operator, any offer);
another partner's offer, and a coalition-wide one for a partner, is not found.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import and_, func, insert, literal, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.breakdown import ApplicableOffer
from catalog.errors import OfferNotFound
from catalog.models import (
    ActivationVia,
    Offer,
    OfferActivation,
    OfferUse,
    PromoCode,
    PromoCodeApplication,
)
from core.clock import ensure_aware
from core.errors import ValidationError
from core.ids import uuid7
from core.tables import table
from core.text import UNSTORABLE_TEXT, storable
from partners import service as partners

_offers = table(Offer)
_activations = table(OfferActivation)
_uses = table(OfferUse)
_codes = table(PromoCode)
_applications = table(PromoCodeApplication)

MAX_NAME = 200
MAX_DESCRIPTION = 4000
MAX_CATEGORY = 100
MAX_TIER = 100
MAX_MULTIPLIER = Decimal(100)
MAX_BONUS = 1_000_000_000  # the ledger's largest movement
MAX_USES = 1_000_000
MAX_REDEMPTIONS = 1_000_000_000
PROMO_CODE = re.compile(r"[A-Z0-9-]{3,40}")


# ---------------------------------------------------------------------------------------------
# Offers


@dataclass(frozen=True, slots=True)
class OfferDraft:
    """What a partner or the operator says about a new offer."""

    name: str
    description: str
    multiplier: Decimal | str | None
    bonus_points: int | None
    category: str | None
    starts_at: datetime
    ends_at: datetime | None
    requires_activation: bool
    max_uses_per_member: int | None
    stackable: bool
    min_tier: str | None

    def checked(self) -> dict[str, Any]:
        """The draft's columns, normalised, or a VALIDATION error naming the field at fault."""
        name = _text(self.name, "name", MAX_NAME, required=True)
        description = _text(self.description, "description", MAX_DESCRIPTION) or ""
        category = _text(self.category, "category", MAX_CATEGORY)
        min_tier = _text(self.min_tier, "minTier", MAX_TIER)
        if (self.multiplier is None) == (self.bonus_points is None):
            raise ValidationError(
                "give exactly one of multiplier and bonusPoints", field="multiplier"
            )
        multiplier = None if self.multiplier is None else _multiplier(self.multiplier)
        if self.bonus_points is not None:
            _whole(self.bonus_points, "bonusPoints", low=1, high=MAX_BONUS)
        if self.max_uses_per_member is not None:
            _whole(self.max_uses_per_member, "maxUsesPerMember", low=1, high=MAX_USES)
        starts = _instant(self.starts_at, "startsAt")
        ends = None if self.ends_at is None else _instant(self.ends_at, "endsAt")
        if ends is not None and ends <= starts:
            raise ValidationError("endsAt must be after startsAt", field="endsAt")
        return {
            "name": name,
            "description": description,
            "multiplier": multiplier,
            "bonus_points": self.bonus_points,
            "category": category,
            "starts_at": starts,
            "ends_at": ends,
            "requires_activation": bool(self.requires_activation),
            "max_uses_per_member": self.max_uses_per_member,
            "stackable": bool(self.stackable),
            "min_tier": min_tier,
        }


def _text(value: str | None, what: str, limit: int, *, required: bool = False) -> str | None:
    """Stripped text of at most `limit` characters; empty only for the description."""
    if value is None:
        if required:
            raise ValidationError(f"{what} is required", field=what)
        return None
    value = value.strip()
    if not storable(value):
        raise ValidationError(f"{what} {UNSTORABLE_TEXT}", field=what)
    if len(value) > limit or (not value and what != "description"):
        raise ValidationError(f"{what} must be 1..{limit} characters", field=what)
    return value


def _multiplier(value: Decimal | str) -> Decimal:
    try:
        m = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError("multiplier must be a decimal number", field="multiplier") from None
    if not m.is_finite() or not 1 < m <= MAX_MULTIPLIER:
        raise ValidationError(
            f"multiplier must be above 1 and at most {MAX_MULTIPLIER}", field="multiplier"
        )
    exponent = m.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise ValidationError("multiplier has at most 4 decimal places", field="multiplier")
    return m


def _whole(value: Any, what: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{what} must be a whole number in {low}..{high}", field=what)
    return value


def _instant(value: datetime, what: str) -> datetime:
    try:
        return ensure_aware(value)
    except (ValueError, AttributeError) as exc:
        raise ValidationError(f"{what}: {exc}", field=what) from None


@dataclass(frozen=True, slots=True)
class OfferRecord:
    """An offer as stored."""

    id: uuid.UUID
    partner_id: uuid.UUID | None
    name: str
    description: str
    multiplier: Decimal | None
    bonus_points: int | None
    category: str | None
    starts_at: datetime
    ends_at: datetime | None
    requires_activation: bool
    max_uses_per_member: int | None
    stackable: bool
    min_tier: str | None
    created_at: datetime
    ended_at: datetime | None

    def evaluated(self) -> ApplicableOffer:
        """The offer as `catalog.breakdown` evaluates it (ending early shortens its window)."""
        end = self.ends_at
        if self.ended_at is not None and (end is None or self.ended_at < end):
            end = self.ended_at
        return ApplicableOffer(
            id=self.id,
            partner_id=self.partner_id,
            multiplier=self.multiplier,
            bonus_points=self.bonus_points,
            category=self.category,
            starts_at=self.starts_at,
            ends_at=end,
            requires_activation=self.requires_activation,
            max_uses_per_member=self.max_uses_per_member,
            stackable=self.stackable,
            min_tier=self.min_tier,
            created_at=self.created_at,
        )

    def over_at(self, at: datetime) -> bool:
        """Ended early, or past its end, at `at`."""
        return (self.ended_at is not None and self.ended_at <= at) or (
            self.ends_at is not None and self.ends_at <= at
        )


_OFFER = select(
    _offers.c.id,
    _offers.c.partner_id,
    _offers.c.name,
    _offers.c.description,
    _offers.c.multiplier,
    _offers.c.bonus_points,
    _offers.c.category,
    _offers.c.starts_at,
    _offers.c.ends_at,
    _offers.c.requires_activation,
    _offers.c.max_uses_per_member,
    _offers.c.stackable,
    _offers.c.min_tier,
    _offers.c.created_at,
    _offers.c.ended_at,
)


def _record(row: Any) -> OfferRecord:
    return OfferRecord(*row[:15])


async def create(
    conn: AsyncConnection,
    *,
    partner_id: uuid.UUID | None,
    draft: OfferDraft,
    actor: str,
    at: datetime,
) -> OfferRecord:
    """A new offer of `partner_id` (which must exist), or coalition-wide (None)."""
    values = draft.checked()
    if partner_id is not None:
        await partners.get(conn, partner_id=partner_id)
    offer_id = uuid7()
    await conn.execute(
        insert(_offers).values(
            id=offer_id, partner_id=partner_id, created_at=at, actor=actor, **values
        )
    )
    return await get(conn, offer_id=offer_id)


def _visible(owner: uuid.UUID | None) -> Any:
    return literal(True) if owner is None else _offers.c.partner_id == owner


async def get(
    conn: AsyncConnection, *, offer_id: uuid.UUID, owner: uuid.UUID | None = None
) -> OfferRecord:
    """One offer (of `owner`, when given); OfferNotFound otherwise."""
    row = (
        await conn.execute(_OFFER.where(_offers.c.id == offer_id, _visible(owner)))
    ).one_or_none()
    if row is None:
        raise OfferNotFound("offer not found")
    return _record(row)


async def end(
    conn: AsyncConnection, *, offer_id: uuid.UUID, owner: uuid.UUID | None, at: datetime
) -> OfferRecord:
    """End an offer early, at `at` (ending it again changes nothing)."""
    row = (
        await conn.execute(
            sql_update(_offers)
            .where(_offers.c.id == offer_id, _visible(owner))
            .values(ended_at=func.coalesce(_offers.c.ended_at, at))
            .returning(_offers.c.id)
        )
    ).one_or_none()
    if row is None:
        raise OfferNotFound("offer not found")
    return await get(conn, offer_id=offer_id)


async def listed(
    conn: AsyncConnection,
    *,
    owner: uuid.UUID | None,
    limit: int,
    before: uuid.UUID | None = None,
) -> list[OfferRecord]:
    """Offers newest first, ended ones too: a partner's own (`owner`), or every one (None)."""
    query = _OFFER.where(_visible(owner)).order_by(_offers.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(_offers.c.id < before)
    return [_record(r) for r in await conn.execute(query)]


def _live(at: datetime) -> Any:
    return and_(
        _offers.c.ended_at.is_(None),
        or_(_offers.c.ends_at.is_(None), _offers.c.ends_at > at),
    )


async def for_member(
    conn: AsyncConnection,
    *,
    member_id: uuid.UUID,
    at: datetime,
    reachable_tiers: Collection[str],
    limit: int,
    before: uuid.UUID | None = None,
) -> list[tuple[OfferRecord, bool]]:
    """The offers `member_id` may use at `at`, newest first, each with whether the member
    activated it: in their window, not ended, with no minimum tier or one of
    `reachable_tiers` (the member's tier and those below it), not used up by the member.
    Those that require activation are listed before it too (so that it can be activated)."""
    activated = (
        select(literal(True))
        .where(_activations.c.offer_id == _offers.c.id, _activations.c.member_id == member_id)
        .exists()
    )
    used = (
        select(_uses.c.uses)
        .where(_uses.c.offer_id == _offers.c.id, _uses.c.member_id == member_id)
        .scalar_subquery()
    )
    query = (
        _OFFER.add_columns(activated.label("activated"))
        .where(
            _live(at),
            _offers.c.starts_at <= at,
            or_(_offers.c.min_tier.is_(None), _offers.c.min_tier.in_(list(reachable_tiers))),
            or_(
                _offers.c.max_uses_per_member.is_(None),
                func.coalesce(used, 0) < _offers.c.max_uses_per_member,
            ),
        )
        .order_by(_offers.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(_offers.c.id < before)
    return [(_record(r), bool(r.activated)) for r in await conn.execute(query)]


async def activate(
    conn: AsyncConnection,
    *,
    offer_id: uuid.UUID,
    member_id: uuid.UUID,
    at: datetime,
    via: str = ActivationVia.APP,
) -> tuple[OfferRecord, bool]:
    """Activate an offer that requires it for the member; with whether this call activated it
    (False: it already was; activating twice changes nothing). An ended offer, or one over, or
    one without activation, is refused."""
    offer = await get(conn, offer_id=offer_id)
    if not offer.requires_activation:
        raise ValidationError("this offer needs no activation", field="offerId")
    if offer.over_at(at):
        raise ValidationError("this offer has ended", field="offerId")
    done = (
        await conn.execute(
            pg_insert(_activations)
            .values(offer_id=offer_id, member_id=member_id, activated_at=at, via=via)
            .on_conflict_do_nothing(index_elements=["offer_id", "member_id"])
            .returning(_activations.c.offer_id)
        )
    ).one_or_none()
    return offer, done is not None


# ---------------------------------------------------------------------------------------------
# What the earn path reads and writes


async def live_offers(
    conn: AsyncConnection, *, partner_id: uuid.UUID, at: datetime
) -> list[ApplicableOffer]:
    """The offers that may apply to earns at `partner_id` from `at` on: its own and the
    coalition-wide ones, not ended and not over (a cache of them stays right until the first
    of their `ends_at`; `catalog.breakdown.applicable` checks the window of each earn)."""
    rows = await conn.execute(
        _OFFER.where(
            _live(at),
            or_(_offers.c.partner_id == partner_id, _offers.c.partner_id.is_(None)),
        ).order_by(_offers.c.created_at, _offers.c.id)
    )
    return [_record(r).evaluated() for r in rows]


async def member_state(
    conn: AsyncConnection, *, member_id: uuid.UUID, offer_ids: Collection[uuid.UUID]
) -> tuple[set[uuid.UUID], dict[uuid.UUID, int]]:
    """Of `offer_ids`: those the member activated, and its uses of each (absent: none)."""
    ids = list(offer_ids)
    if not ids:
        return set(), {}
    activated = await conn.execute(
        select(_activations.c.offer_id).where(
            _activations.c.member_id == member_id, _activations.c.offer_id.in_(ids)
        )
    )
    return {r.offer_id for r in activated}, await uses(conn, member_id=member_id, offer_ids=ids)


async def lock_member_state(
    conn: AsyncConnection,
    *,
    member_id: uuid.UUID,
    offer_ids: Collection[uuid.UUID],
    limited_ids: Collection[uuid.UUID],
) -> tuple[set[uuid.UUID], dict[uuid.UUID, int]]:
    """`member_state` for an earn, in its unit of work: of `offer_ids`, those the member
    activated, and its uses of `limited_ids` (offers with a per-member limit), whose rows are
    created if missing and LOCKED, in offer id order (one order for every earn: no deadlock),
    until the earn commits: a concurrent earn of the same member waits here and then sees this
    one's use, so `maxUsesPerMember` holds however many earns arrive at once."""
    uses_now: dict[uuid.UUID, int] = {}
    limited = sorted(set(limited_ids), key=lambda i: i.int)
    if limited:
        stmt = pg_insert(_uses).values(
            [{"offer_id": i, "member_id": member_id, "uses": 0} for i in limited]
        )
        rows = await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["offer_id", "member_id"], set_={"uses": _uses.c.uses}
            ).returning(_uses.c.offer_id, _uses.c.uses)
        )
        uses_now = {r.offer_id: r.uses for r in rows}
    ids = list(offer_ids)
    activated = await conn.execute(
        select(_activations.c.offer_id).where(
            _activations.c.member_id == member_id, _activations.c.offer_id.in_(ids)
        )
    )
    return {r.offer_id for r in activated}, uses_now


async def uses(
    conn: AsyncConnection, *, member_id: uuid.UUID, offer_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """How many earns of the member each offer added points to (absent: none)."""
    rows = await conn.execute(
        select(_uses.c.offer_id, _uses.c.uses).where(
            _uses.c.member_id == member_id, _uses.c.offer_id.in_(list(offer_ids))
        )
    )
    return {r.offer_id: r.uses for r in rows}


async def count_uses(
    conn: AsyncConnection, *, member_id: uuid.UUID, offer_ids: Collection[uuid.UUID]
) -> None:
    """One more use of each offer by the member (the offers of an earn's OFFER lines)."""
    ids = sorted(set(offer_ids), key=lambda i: i.int)  # rows locked in one order: no deadlock
    if not ids:
        return
    stmt = pg_insert(_uses).values(
        [{"offer_id": i, "member_id": member_id, "uses": 1} for i in ids]
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["offer_id", "member_id"], set_={"uses": _uses.c.uses + 1}
        )
    )


# ---------------------------------------------------------------------------------------------
def tier_names_up_to(member_tier: str | None, tier_ranks: Mapping[str, int]) -> set[str]:
    """The tiers a member of `member_tier` reaches: its own and those ranked below (none for
    an untiered member, or one whose tier left the ladder)."""
    rank = None if member_tier is None else tier_ranks.get(member_tier)
    if rank is None:
        return set()
    return {name for name, r in tier_ranks.items() if r <= rank}
