"""Offers and promo codes: partners (their own) and the operator (any partner's, or
coalition-wide) create and end offers and promo codes; members list the offers they may use,
activate them, and apply promo codes.

`owner` is whose offers the caller may change: a partner's own id, or None for the operator.
Another partner's offer is NOT_FOUND, like one that does not exist.

A member's listing reaches the offers whose `minTier` its tier reaches (`members.tiers`).
Coalition-wide offers apply to earns at every partner (`loyalty.earn`): their points are issued
by the operator, in a lot of their own with no issuer, and charged to no partner.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from catalog import offers as catalog_offers
from catalog import promo_codes
from catalog.errors import OfferNotFound
from catalog.offers import OfferDraft, OfferRecord
from catalog.promo_codes import PromoCodeRecord
from core.clock import utcnow
from core.errors import ErrorCode
from core.errors import ValidationError as DomainValidation
from loyalty.runtime import Runtime
from members import tiers

# What each use case may raise (gateway.graphql checks each mutation's result union against it).
CREATE_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.PARTNER_NOT_FOUND})
END_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})
ACTIVATE_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})
CREATE_PROMO_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})
APPLY_PROMO_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.INVALID_PROMO_CODE})


def parse_offer_id(value: str) -> uuid.UUID:
    """An offer id as sent; one that is not even an id is an offer that does not exist."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise OfferNotFound("offer not found") from None


async def create(
    rt: Runtime,
    *,
    actor: str,
    partner_id: uuid.UUID | None,
    name: str,
    description: str,
    multiplier: Decimal | str | None,
    bonus_points: int | None,
    category: str | None,
    starts_at: datetime | None,
    ends_at: datetime | None,
    requires_activation: bool,
    max_uses_per_member: int | None,
    stackable: bool,
    min_tier: str | None,
) -> OfferRecord:
    """A new offer for `partner_id`'s purchases, or coalition-wide (None: the operator's)."""
    async with rt.engine.begin() as conn:
        offer = await create_in(
            conn,
            actor=actor,
            partner_id=partner_id,
            name=name,
            description=description,
            multiplier=multiplier,
            bonus_points=bonus_points,
            category=category,
            starts_at=starts_at,
            ends_at=ends_at,
            requires_activation=requires_activation,
            max_uses_per_member=max_uses_per_member,
            stackable=stackable,
            min_tier=min_tier,
        )
    # The earn path's cache of live offers: this partner's (a coalition-wide offer: every one).
    rt.caches.live_offers.invalidate(partner_id)
    return offer


async def create_in(
    conn: Any,
    *,
    actor: str,
    partner_id: uuid.UUID | None,
    name: str,
    description: str,
    multiplier: Decimal | str | None,
    bonus_points: int | None,
    category: str | None,
    starts_at: datetime | None,
    ends_at: datetime | None,
    requires_activation: bool,
    max_uses_per_member: int | None,
    stackable: bool,
    min_tier: str | None,
) -> OfferRecord:
    """`create` in the caller's unit of work (the demo loads in one)."""
    now = utcnow()
    draft = OfferDraft(
        name=name,
        description=description,
        multiplier=multiplier,
        bonus_points=bonus_points,
        category=category,
        starts_at=starts_at or now,
        ends_at=ends_at,
        requires_activation=requires_activation,
        max_uses_per_member=max_uses_per_member,
        stackable=stackable,
        min_tier=min_tier,
    )
    return await catalog_offers.create(
        conn, partner_id=partner_id, draft=draft, actor=actor, at=now
    )


async def end(rt: Runtime, *, owner: uuid.UUID | None, offer_id: str) -> OfferRecord:
    """End an offer now (an earn from now on no longer gets it)."""
    oid = parse_offer_id(offer_id)
    async with rt.engine.begin() as conn:
        offer = await catalog_offers.end(conn, offer_id=oid, owner=owner, at=utcnow())
    rt.caches.live_offers.invalidate(offer.partner_id)  # None (coalition-wide): every partner's
    return offer


async def listed(
    conn: Any, *, owner: uuid.UUID | None, limit: int, before: uuid.UUID | None
) -> list[OfferRecord]:
    """A page of offers, newest first: a partner's own, or every one for the operator."""
    return await catalog_offers.listed(conn, owner=owner, limit=limit, before=before)


async def for_member(
    conn: Any,
    *,
    member_id: uuid.UUID,
    limit: int,
    before: uuid.UUID | None,
    member_tier: str | None = None,
    tier_ranks: Mapping[str, int] | None = None,
) -> list[tuple[OfferRecord, bool]]:
    """A page of the offers the member may use now, each with whether it activated it (its
    tier and the ladder read here unless given)."""
    if tier_ranks is None:
        ladder = await tiers.ladder(conn)
        tier_ranks = {t.name: t.position for t in ladder.tiers}
        if ladder.tiers and member_tier is None:
            member_tier = (await tiers.member_tier(conn, member_id=member_id)).tier
    return await catalog_offers.for_member(
        conn,
        member_id=member_id,
        at=utcnow(),
        reachable_tiers=catalog_offers.tier_names_up_to(member_tier, tier_ranks),
        limit=limit,
        before=before,
    )


async def activate(rt: Runtime, *, member_id: uuid.UUID, offer_id: str) -> OfferRecord:
    """Activate an offer that requires it, for the member (again: nothing changes)."""
    async with rt.engine.begin() as conn:
        return await activate_in(conn, member_id=member_id, offer_id=offer_id)


async def activate_in(conn: Any, *, member_id: uuid.UUID, offer_id: str) -> OfferRecord:
    """`activate` in the caller's unit of work."""
    offer, _ = await catalog_offers.activate(
        conn, offer_id=parse_offer_id(offer_id), member_id=member_id, at=utcnow()
    )
    return offer


async def create_promo_code(
    rt: Runtime,
    *,
    actor: str,
    owner: uuid.UUID | None,
    offer_id: str,
    code: str,
    max_redemptions: int,
    valid_until: datetime,
) -> PromoCodeRecord:
    """A promo code activating an offer of the caller's (the operator: any offer)."""
    async with rt.engine.begin() as conn:
        return await create_promo_code_in(
            conn,
            actor=actor,
            owner=owner,
            offer_id=offer_id,
            code=code,
            max_redemptions=max_redemptions,
            valid_until=valid_until,
        )


async def create_promo_code_in(
    conn: Any,
    *,
    actor: str,
    owner: uuid.UUID | None,
    offer_id: str,
    code: str,
    max_redemptions: int,
    valid_until: datetime,
) -> PromoCodeRecord:
    """`create_promo_code` in the caller's unit of work."""
    return await promo_codes.create_promo_code(
        conn,
        offer_id=parse_offer_id(offer_id),
        owner=owner,
        code=code,
        max_redemptions=max_redemptions,
        valid_until=valid_until,
        actor=actor,
        at=utcnow(),
    )


async def apply_promo_code(rt: Runtime, *, member_id: uuid.UUID, code: str) -> OfferRecord:
    """Activate the code's offer for the member (INVALID_PROMO_CODE: unknown, expired, used
    up, or already applied by this member)."""
    async with rt.engine.begin() as conn:
        return await apply_promo_code_in(conn, member_id=member_id, code=code)


async def apply_promo_code_in(conn: Any, *, member_id: uuid.UUID, code: str) -> OfferRecord:
    """`apply_promo_code` in the caller's unit of work."""
    if not isinstance(code, str) or len(code) > 100:
        raise DomainValidation("code must be at most 100 characters", field="code")
    return await promo_codes.apply_promo_code(conn, member_id=member_id, code=code, at=utcnow())
