"""Promo codes: a code activates one offer (`catalog.offers`) for the member who applies it, at
most once per member and `max_redemptions` times in all, before `valid_until`. Nothing here
commits: the caller's unit of work does (`loyalty.offers`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.errors import InvalidPromoCode
from catalog.models import ActivationVia, OfferActivation, PromoCode, PromoCodeApplication
from catalog.offers import MAX_REDEMPTIONS, PROMO_CODE, OfferRecord, _instant, _whole, get
from core.errors import ValidationError
from core.ids import uuid7
from core.tables import table

_activations = table(OfferActivation)
_codes = table(PromoCode)
_applications = table(PromoCodeApplication)


@dataclass(frozen=True, slots=True)
class PromoCodeRecord:
    """A promo code as stored."""

    id: uuid.UUID
    code: str
    offer_id: uuid.UUID
    max_redemptions: int
    valid_until: datetime
    redemptions: int
    created_at: datetime


_PROMO = select(
    _codes.c.id,
    _codes.c.code,
    _codes.c.offer_id,
    _codes.c.max_redemptions,
    _codes.c.valid_until,
    _codes.c.redemptions,
    _codes.c.created_at,
)


def normal_code(code: str) -> str:
    """A promo code as stored and matched: stripped and upper-cased."""
    return code.strip().upper() if isinstance(code, str) else ""


async def create_promo_code(
    conn: AsyncConnection,
    *,
    offer_id: uuid.UUID,
    owner: uuid.UUID | None,
    code: str,
    max_redemptions: int,
    valid_until: datetime,
    actor: str,
    at: datetime,
) -> PromoCodeRecord:
    """A promo code for an offer of `owner` (None: any) that requires activation."""
    value = normal_code(code)
    if PROMO_CODE.fullmatch(value) is None:
        raise ValidationError("code must be 3..40 of A-Z, 0-9 and '-'", field="code")
    _whole(max_redemptions, "maxRedemptions", low=1, high=MAX_REDEMPTIONS)
    until = _instant(valid_until, "validUntil")
    if until <= at:
        raise ValidationError("validUntil must be in the future", field="validUntil")
    offer = await get(conn, offer_id=offer_id, owner=owner)
    if not offer.requires_activation:
        raise ValidationError(
            "a promo code activates an offer: this one needs no activation", field="offerId"
        )
    if offer.over_at(at):
        raise ValidationError("this offer has ended", field="offerId")
    row = (
        await conn.execute(
            pg_insert(_codes)
            .values(
                id=uuid7(),
                code=value,
                offer_id=offer_id,
                max_redemptions=max_redemptions,
                valid_until=until,
                created_at=at,
                actor=actor,
            )
            .on_conflict_do_nothing(index_elements=["code"])
            .returning(_codes.c.id)
        )
    ).one_or_none()
    if row is None:
        raise ValidationError("this code is taken", field="code")
    found = (await conn.execute(_PROMO.where(_codes.c.id == row.id))).one()
    return PromoCodeRecord(*found)


async def apply_promo_code(
    conn: AsyncConnection, *, member_id: uuid.UUID, code: str, at: datetime
) -> OfferRecord:
    """Activate the code's offer for the member: once per member, at most `max_redemptions`
    times in all, before `valid_until`; InvalidPromoCode otherwise (and for an unknown code,
    or one whose offer has ended).

    Exact under concurrency. Lock order: the member's application row (its unique key: a
    second application of the same member waits for the first and then finds it), then the
    code's row, counted by one conditional UPDATE (`redemptions < max_redemptions`: of
    concurrent members, the ones past the last use find the condition false after waiting for
    the row and take nothing). The caller's unit of work rolls back the application when the
    count is refused."""
    value = normal_code(code)
    refused = InvalidPromoCode("this promo code is not valid (unknown, expired or used up)")
    if PROMO_CODE.fullmatch(value) is None:
        raise refused
    promo = (await conn.execute(_PROMO.where(_codes.c.code == value))).one_or_none()
    if promo is None or promo.valid_until <= at:
        raise refused
    offer = await get(conn, offer_id=promo.offer_id)
    if offer.over_at(at):
        raise refused
    applied = (
        await conn.execute(
            pg_insert(_applications)
            .values(promo_code_id=promo.id, member_id=member_id, applied_at=at)
            .on_conflict_do_nothing(index_elements=["promo_code_id", "member_id"])
            .returning(_applications.c.member_id)
        )
    ).one_or_none()
    if applied is None:
        raise InvalidPromoCode("this promo code was already applied by this member")
    counted = (
        await conn.execute(
            sql_update(_codes)
            .where(
                _codes.c.id == promo.id,
                _codes.c.redemptions < _codes.c.max_redemptions,
                _codes.c.valid_until > at,
            )
            .values(redemptions=_codes.c.redemptions + 1)
            .returning(_codes.c.id)
        )
    ).one_or_none()
    if counted is None:
        raise refused
    await conn.execute(
        pg_insert(_activations)
        .values(
            offer_id=offer.id, member_id=member_id, activated_at=at, via=ActivationVia.PROMO_CODE
        )
        .on_conflict_do_nothing(index_elements=["offer_id", "member_id"])
    )
    return offer


async def promo_code(conn: AsyncConnection, *, code: str) -> PromoCodeRecord | None:
    """A promo code by its text (any case), or None."""
    row = (await conn.execute(_PROMO.where(_codes.c.code == normal_code(code)))).one_or_none()
    return None if row is None else PromoCodeRecord(*row)
