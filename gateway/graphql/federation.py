"""Apollo Federation v2: the entities other subgraphs may reference by id (`Member`,
`Partner`), and who may resolve which through `_entities`. The same policy as everywhere else
(`gateway.authz`): a partner resolves itself and the members it has dealt with, a member
itself, the operator anyone; any other reference comes back null with a FORBIDDEN error."""

from __future__ import annotations

import uuid

import strawberry
from graphql import GraphQLError

from gateway import authz
from gateway.graphql.access import authenticated, forbidden
from gateway.graphql.context import Context
from ledger import reads as ledger_reads
from members import service as members
from partners.service import PartnerRecord


def entity_id(raw: object) -> uuid.UUID:
    """A representation's `id`, refused (VALIDATION) unless it is a UUID."""
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise GraphQLError("id must be a UUID", extensions={"code": "VALIDATION"}) from None


async def visible_partner(ctx: Context, raw_id: object) -> PartnerRecord | None:
    """A partner by id, as `partners` shows them: to the operator and members all of them, to
    a partner only itself."""
    principal = authenticated(ctx)
    pid = entity_id(raw_id)
    if principal.kind == "partner" and principal.partner_id != pid:
        raise forbidden("a partner may only resolve itself")
    return await ctx.partner_loader.load(pid)


@strawberry.federation.type(
    keys=["id"],
    description="A member of the coalition, as other subgraphs reference it (`_entities`). "
    "The operator resolves any member, a member itself, a partner the members it has dealt with.",
)
class Member:
    id: strawberry.ID = strawberry.field(description="Member id.")
    card_number: str = strawberry.field(description="16-digit card number with a Luhn check digit.")

    @classmethod
    async def resolve_reference(cls, info: strawberry.Info, id: strawberry.ID) -> Member | None:
        ctx: Context = info.context
        principal = authenticated(ctx)
        mid = entity_id(id)
        if authz.is_operator(principal):
            pass
        elif principal.kind == "member":
            if principal.member_id != mid:
                raise forbidden("a member may only resolve itself")
        elif principal.kind == "partner" and principal.partner_id is not None:
            async with ctx.read() as conn:
                if not await ledger_reads.has_dealings(
                    conn, member_id=mid, partner_id=principal.partner_id
                ):
                    raise forbidden("a partner may only resolve the members it has dealt with")
        else:
            raise forbidden("this caller may not resolve members")
        async with ctx.read() as conn:
            m = await members.get(conn, member_id=mid)
        return None if m is None else cls(id=strawberry.ID(str(m.id)), card_number=m.card_number)
