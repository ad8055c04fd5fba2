"""Offer queries."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError

from core.errors import DomainError
from gateway import authz
from gateway.graphql import types as T
from gateway.graphql.access import authenticated, forbidden
from gateway.graphql.context import Context
from gateway.graphql.offers.types import Offer
from loyalty import offers

MAX_PAGE = 100


def _invalid(message: str, field: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "VALIDATION", "field": field})


@strawberry.type(description="Offer queries.")
class OffersQuery:
    @strawberry.field(
        description="Offers, newest first (Relay connection). A member: those it may use now "
        "(in their window, not ended, its tier reaching minTier, not used up), each with "
        "`activated`; a partner with catalog:write: its own, ended ones too; the operator: all."
    )
    async def offers(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> T.Connection[Offer]:
        ctx: Context = info.context
        if not 0 < first <= MAX_PAGE:
            raise _invalid(f"first must be between 1 and {MAX_PAGE}", "first")
        try:
            before = T.decode_id_cursor(after)
        except DomainError as exc:
            raise _invalid(exc.message, "after") from None
        principal = authenticated(ctx)
        if principal.kind == "member" and principal.member_id is not None:
            async with ctx.read() as conn:
                mine = await offers.for_member(
                    conn, member_id=principal.member_id, limit=first + 1, before=before
                )
            return T.page(
                mine,
                first=first,
                after=None if before is None else before.int,
                key=lambda r: r[0].id.int,
                node=lambda r: Offer.of(r[0], activated=r[1]),
            )
        try:
            owner = authz.catalog_owner(principal)
        except authz.Denied as exc:
            raise forbidden(str(exc)) from None
        async with ctx.read() as conn:
            found = await offers.listed(conn, owner=owner, limit=first + 1, before=before)
        return T.page(
            found,
            first=first,
            after=None if before is None else before.int,
            key=lambda r: r.id.int,
            node=Offer.of,
        )
