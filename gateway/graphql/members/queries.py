"""Member queries."""

from __future__ import annotations

import strawberry

from gateway.graphql.access import IsMember
from gateway.graphql.context import Context
from gateway.graphql.members.types import Me
from members import service as members


@strawberry.type(description="Member queries.")
class MembersQuery:
    @strawberry.field(
        description="The calling member (member token).", permission_classes=[IsMember]
    )
    async def me(self, info: strawberry.Info) -> Me | None:
        ctx: Context = info.context
        assert ctx.principal is not None and ctx.principal.member_id is not None
        async with ctx.read() as conn:
            m = await members.get(conn, member_id=ctx.principal.member_id)
        if m is None:
            return None
        return Me(
            id=strawberry.ID(str(m.id)),
            card_number=m.card_number,
            email=m.email,
            name=m.name,
            referral_code=m.referral_code,
            member_id=m.id,
        )
