"""Partner queries: the partners, their earn rules and agreements."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import strawberry
from graphql import GraphQLError

from gateway import authz
from gateway.graphql import types as T
from gateway.graphql.access import authenticated
from gateway.graphql.context import Context
from gateway.oauth.auth import Principal
from loyalty.caches import partner_config
from partners import service as partners


@strawberry.type(description="Partner queries.")
class PartnersQuery:
    @strawberry.field(
        description="Partners: all of them for the operator and members; a partner sees itself."
    )
    async def partners(self, info: strawberry.Info, first: int = 100) -> list[T.Partner]:
        ctx: Context = info.context
        principal = authenticated(ctx)
        if not 0 < first <= 500:
            raise GraphQLError("first must be between 1 and 500", extensions={"code": "VALIDATION"})
        if principal.kind == "partner" and principal.partner_id is not None:
            record = await ctx.partner_loader.load(principal.partner_id)
            return [T.Partner.of(record)] if record else []
        async with ctx.read() as conn:
            return [T.Partner.of(p) for p in await partners.list_partners(conn, limit=first)]

    @strawberry.field(
        description="A partner's earn rule in force (operator, the partner itself, or a member)."
    )
    async def earn_rule(
        self, info: strawberry.Info, partner_id: strawberry.ID
    ) -> T.EarnRule | None:
        pid = _visible_partner(info.context, partner_id, authz.may_see_earn_rule)
        if pid is None:
            return None
        cfg = await partner_config(info.context, pid)
        return T.EarnRule.of(cfg.rule) if cfg.rule else None

    @strawberry.field(
        description="A partner's agreements, newest first (operator, or the partner itself)."
    )
    async def agreements(
        self, info: strawberry.Info, partner_id: strawberry.ID
    ) -> list[T.Agreement]:
        pid = _visible_partner(info.context, partner_id)
        if pid is None:
            return []
        async with info.context.read() as conn:
            return [T.Agreement.of(a) for a in await partners.agreements(conn, partner_id=pid)]


def _visible_partner(
    ctx: Context,
    partner_id: str,
    may_see: Callable[[Principal, uuid.UUID], bool] = authz.may_see_partner,
) -> uuid.UUID | None:
    """The partner id if the caller may see that partner's terms (`may_see`); None otherwise."""
    try:
        pid = uuid.UUID(str(partner_id))
    except ValueError:
        return None
    return pid if may_see(authenticated(ctx), pid) else None
