"""Catalog queries: browsing the rewards (no token needed)."""

from __future__ import annotations

import uuid

import strawberry
from graphql import GraphQLError

from core.errors import DomainError
from gateway import authz
from gateway.graphql import types as T
from gateway.graphql.access import forbidden
from gateway.graphql.catalog.types import Reward
from gateway.graphql.context import Context
from loyalty import rewards

MAX_PAGE = 100
MAX_POINTS_FILTER = 1_000_000_000


def _invalid(message: str, field: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "VALIDATION", "field": field})


@strawberry.type(description="Catalog queries.")
class CatalogQuery:
    @strawberry.field(
        description="The rewards on offer now (not retired, inside their window), newest first "
        "(Relay connection); no token needed. `affordable: true` (member token) keeps those "
        "the member's available points buy. `includeRetired: true` lists every reward, retired "
        "and outside its window too: a partner with catalog:write its own, the operator any "
        "partner's."
    )
    async def rewards(
        self,
        info: strawberry.Info,
        first: int = 20,
        after: str | None = None,
        partner_id: strawberry.ID | None = None,
        category: str | None = None,
        max_points: int | None = None,
        affordable: bool = False,
        include_retired: bool = False,
    ) -> T.Connection[Reward]:
        ctx: Context = info.context
        if not 0 < first <= MAX_PAGE:
            raise _invalid(f"first must be between 1 and {MAX_PAGE}", "first")
        if max_points is not None and not 0 <= max_points <= MAX_POINTS_FILTER:
            raise _invalid(f"maxPoints must be between 0 and {MAX_POINTS_FILTER}", "maxPoints")
        try:
            before = T.decode_id_cursor(after)
        except DomainError as exc:
            raise _invalid(exc.message, "after") from None
        pid = None
        if partner_id is not None:
            try:
                pid = uuid.UUID(str(partner_id))
            except ValueError:
                raise _invalid("partnerId is not a valid id", "partnerId") from None
        member = None
        if affordable:
            p = ctx.principal
            if p is None or p.kind != "member" or p.member_id is None:
                raise forbidden("affordable: true needs a member token")
            member = p.member_id
        if include_retired:
            if ctx.principal is None:
                raise forbidden("includeRetired needs an operator token or catalog:write")
            try:
                pid = authz.catalog_partner(ctx.principal, pid)
            except authz.Denied as exc:
                raise forbidden(str(exc)) from None
        async with ctx.read() as conn:
            found = await rewards.browse(
                conn,
                limit=first + 1,
                before=before,
                partner_id=pid,
                category=category,
                max_points=max_points,
                affordable_for=member,
                include_unavailable=include_retired,
            )
        return T.page(
            found,
            first=first,
            after=None if before is None else before.int,
            key=lambda r: r.id.int,
            node=Reward.of,
        )
