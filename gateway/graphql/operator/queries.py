"""The operator's own views, for the console: a partner's OAuth clients, a member looked up by
card or email, the liability at the end of each closed period, and the service's health."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError

from core.errors import DomainError
from gateway import metrics
from gateway.graphql.access import IsOperator
from gateway.graphql.context import Context
from gateway.graphql.operator.types import (
    ExpiryRun,
    LiabilitySnapshot,
    MemberProfile,
    PartnerClient,
    RouteRequests,
)
from ledger import service as ledger
from loyalty import terms
from members import service as members
from settlement import service as settlement


def _validation(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "VALIDATION"})


@strawberry.type(description="The health of the service, as this server process sees it.")
class OperatorHealth:
    @strawberry.field(description="The latest run of the points expiry; null: none yet.")
    async def last_expiry(self, info: strawberry.Info) -> ExpiryRun | None:
        async with info.context.read() as conn:
            run = await ledger.last_expiry(conn)
        return ExpiryRun.of(run) if run else None

    @strawberry.field(
        description="Requests per route answered by this process since it started, with its "
        "4xx and 5xx answers, busiest first (the full series: GET /metrics)."
    )
    def requests(self) -> list[RouteRequests]:
        return [
            RouteRequests(route=r, requests=n, client_errors=c, server_errors=s)
            for r, n, c, s in metrics.requests_by_route()
        ]


@strawberry.type(description="Operator queries for the console.")
class OperatorQuery:
    @strawberry.field(
        description="A partner's OAuth clients, oldest first (operator).",
        permission_classes=[IsOperator],
    )
    async def partner_clients(
        self, info: strawberry.Info, partner_id: strawberry.ID
    ) -> list[PartnerClient]:
        try:
            found = await terms.partner_clients(info.context, partner_id=partner_id)
        except DomainError as exc:
            raise _validation(exc.message) from None
        return [PartnerClient.of(c) for c in found]

    @strawberry.field(
        description="A member by card number or email (exactly one of them); null: nobody "
        "(operator).",
        permission_classes=[IsOperator],
    )
    async def member_lookup(
        self,
        info: strawberry.Info,
        card_number: str | None = None,
        email: str | None = None,
    ) -> MemberProfile | None:
        ctx: Context = info.context
        if (card_number is None) == (email is None):
            raise _validation("give a card number or an email, not both")
        found: members.MemberRecord | None
        async with ctx.read() as conn:
            if card_number is not None:
                try:
                    found = await members.get_by_card(conn, card_number=card_number.strip())
                except DomainError as exc:
                    if exc.code == "MEMBER_NOT_FOUND":
                        return None
                    raise _validation(exc.message) from None
            else:
                found = await members.get_by_email(conn, email=(email or "").strip())
        return MemberProfile.of(found) if found else None

    @strawberry.field(
        description="The points liability at the end of each closed period, newest first "
        "(operator).",
        permission_classes=[IsOperator],
    )
    async def liability_history(
        self, info: strawberry.Info, first: int = 12
    ) -> list[LiabilitySnapshot]:
        if not 0 < first <= 60:
            raise _validation("first must be between 1 and 60")
        async with info.context.read() as conn:
            found = await settlement.liability_history(conn, first=first)
        return [LiabilitySnapshot.of(s) for s in found]

    @strawberry.field(
        description="The service's health: the latest expiry run, requests and errors "
        "(operator; the latest settlement runs are in settlementPeriods).",
        permission_classes=[IsOperator],
    )
    def operator_health(self) -> OperatorHealth:
        return OperatorHealth()
