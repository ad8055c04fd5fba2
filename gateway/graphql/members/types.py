"""The member calling with a member token: `me`."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta

import strawberry
from graphql import GraphQLError

from core.errors import DomainError
from gateway.graphql import types as T
from gateway.graphql.catalog.types import RewardRedemption
from gateway.graphql.tiers.types import TierStatus
from ledger import service as ledger
from loyalty import rewards, tiers
from members import service as members
from members.cards import masked

MAX_PAGE = 100
# Kinds whose `ref` is the ledger's own reference, not a partner's order: not shown as one.
_REF_IS_INTERNAL = frozenset({"bonus"})


@strawberry.type(description="Pending points that become available at the same instant.")
class PendingPoints:
    points: int = strawberry.field(description="How many.")
    available_at: datetime = strawberry.field(description="When they become spendable.")


@strawberry.type(description="The member calling with a member token.")
class Me:
    id: strawberry.ID = strawberry.field(description="Member id.")
    card_number: str = strawberry.field(description="16-digit card number with a Luhn check digit.")
    email: str | None = strawberry.field(description="Login e-mail.")
    name: str | None = strawberry.field(description="Display name.")
    referral_code: str = strawberry.field(
        description="The code to give friends: a friend who registers with it "
        "(`registerMember(input: {referralCode})`) earns both of you the referral bonus once "
        "the friend's first earn is recorded."
    )
    member_id: strawberry.Private[uuid.UUID]
    # One balance read per horizon and request: `balance` and `expiringPoints` share it.
    _balances: strawberry.Private[dict[int, asyncio.Future[ledger.Balance]]] = dataclasses.field(
        default_factory=dict
    )
    # One tier read per request: `tier` and `tierStatus` share it.
    _status: strawberry.Private[asyncio.Future[tiers.TierStatus] | None] = None

    async def _balance(self, info: strawberry.Info, days: int) -> ledger.Balance:
        pending = self._balances.get(days)
        if pending is None:
            pending = self._balances[days] = asyncio.ensure_future(self._read(info, days))
        return await pending

    async def _read(self, info: strawberry.Info, days: int) -> ledger.Balance:
        async with info.context.read() as conn:
            return await ledger.balance(
                conn, member_id=self.member_id, expiring_within=timedelta(days=days)
            )

    async def _tier_status(self, info: strawberry.Info) -> tiers.TierStatus:
        if self._status is None:
            self._status = asyncio.ensure_future(
                tiers.status(info.context, member_id=self.member_id)
            )
        return await self._status

    @strawberry.field(
        description="Status tier in the coalition (null: untiered; tiers are configured by "
        "the operator)."
    )
    async def tier(self, info: strawberry.Info) -> str | None:
        held = (await self._tier_status(info)).tier
        return None if held is None else held.name

    @strawberry.field(
        description="The member's tier, its multiplier, its qualifying spend over the last "
        "12 months and the next tier up."
    )
    async def tier_status(self, info: strawberry.Info) -> TierStatus:
        return TierStatus.of(await self._tier_status(info))

    @strawberry.field(description="Points available, pending and on hold.")
    async def balance(self, info: strawberry.Info) -> T.Balance:
        b = await self._balance(info, 30)
        return T.Balance(
            available=b.available, pending=b.pending, on_hold=b.on_hold, total=b.total, debt=b.debt
        )

    @strawberry.field(
        description="The pending points by the instant each part becomes available, soonest "
        "first (at most 100 parts); they sum to `balance { pending }`."
    )
    async def pending_points(self, info: strawberry.Info) -> list[PendingPoints]:
        async with info.context.read() as conn:
            parts = await ledger.pending_parts(conn, member_id=self.member_id)
        return [PendingPoints(points=p.points, available_at=p.available_at) for p in parts]

    @strawberry.field(description="Points (available or pending) that expire within `days` days.")
    async def expiring_points(self, info: strawberry.Info, days: int = 30) -> int:
        if not 0 < days <= 3660:
            raise GraphQLError("days must be between 1 and 3660", extensions={"code": "VALIDATION"})
        return (await self._balance(info, days)).expiring

    @strawberry.field(
        description="Movements on the member's points, newest first (Relay connection)."
    )
    async def activity(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> T.Connection[T.Activity]:
        return await member_activity(info, self.member_id, first, after)

    @strawberry.field(
        description="The member's reward redemptions with their voucher codes, newest first "
        "(Relay connection). Nobody else sees them."
    )
    async def reward_redemptions(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> T.Connection[RewardRedemption]:
        if not 0 < first <= MAX_PAGE:
            raise GraphQLError(
                f"first must be between 1 and {MAX_PAGE}", extensions={"code": "VALIDATION"}
            )
        try:
            before = T.decode_id_cursor(after)
        except DomainError as exc:
            raise GraphQLError(exc.message, extensions={"code": "VALIDATION"}) from None
        async with info.context.read() as conn:
            items = await rewards.redemptions(
                conn, member_id=self.member_id, limit=first + 1, before=before
            )
        return T.page(
            items,
            first=first,
            after=None if before is None else before.int,
            key=lambda i: i[0].id.int,
            node=lambda i: RewardRedemption.of(*i),
        )


async def member_activity(
    info: strawberry.Info, member_id: uuid.UUID, first: int, after: str | None
) -> T.Connection[T.Activity]:
    """A page of a member's activity (`me { activity }`, the operator's `memberLookup`)."""
    if not 0 < first <= MAX_PAGE:
        raise GraphQLError(
            f"first must be between 1 and {MAX_PAGE}", extensions={"code": "VALIDATION"}
        )
    try:
        before = T.decode_cursor(after)
    except DomainError as exc:
        raise GraphQLError(exc.message, extensions={"code": "VALIDATION"}) from None
    async with info.context.read() as conn:
        items = await ledger.history(conn, member_id=member_id, limit=first + 1, before=before)
        # Transfers name the other member by card: one lookup for the page, if any.
        cards = await members.cards_by_ids(
            conn, ids=list({i.counterparty_id for i in items if i.counterparty_id})
        )
    return T.page(
        items,
        first=first,
        after=before,
        key=lambda i: i.entry_id,
        node=lambda i: T.Activity(
            id=strawberry.ID(str(i.entry_id)),
            transaction_id=strawberry.ID(str(i.transaction_id)),
            kind=i.kind,
            points=i.amount,
            order_ref=i.ref if i.kind not in _REF_IS_INTERNAL else None,
            at=i.effective_at,
            reason=i.reason,
            counterparty_card=(
                masked(cards[i.counterparty_id]) if i.counterparty_id in cards else None
            ),
            partner_id=i.partner_id,
        ),
    )
