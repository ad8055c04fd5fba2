"""Types of the operator's own views (the console): partner clients, a member looked up, the
liability over time and the service's health."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry

from gateway.graphql import types as T
from gateway.graphql.members.types import member_activity
from gateway.graphql.settlement.types import LiabilityLine
from ledger import service as ledger
from members import service as members
from partners.clients import ClientRecord
from settlement.records import LiabilitySnapshot as LiabilitySnapshotRecord

MAX_PAGE = 100


@strawberry.type(description="A partner's OAuth client (its secret is never shown again).")
class PartnerClient:
    client_id: str = strawberry.field(description="OAuth client_id.")
    name: str = strawberry.field(description="A label for the client.")
    scopes: list[str] = strawberry.field(description="Scopes granted.")
    disabled_at: datetime | None = strawberry.field(
        description="When it was disabled (its credentials are refused since); null: active."
    )
    previous_secret_expires_at: datetime | None = strawberry.field(
        description="After a rotation: when the previous secret stops working."
    )

    @classmethod
    def of(cls, r: ClientRecord) -> PartnerClient:
        return cls(
            client_id=r.client_id,
            name=r.name,
            scopes=list(r.scopes),
            disabled_at=r.disabled_at,
            previous_secret_expires_at=r.previous_secret_expires_at,
        )


@strawberry.type(description="A member as the operator sees it (no voucher codes).")
class MemberProfile:
    id: strawberry.ID = strawberry.field(description="Member id.")
    card_number: str = strawberry.field(description="16-digit card number.")
    email: str | None = strawberry.field(description="Login e-mail.")
    name: str | None = strawberry.field(description="Display name.")
    member_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, m: members.MemberRecord) -> MemberProfile:
        return cls(
            id=strawberry.ID(str(m.id)),
            card_number=m.card_number,
            email=m.email,
            name=m.name,
            member_id=m.id,
        )

    @strawberry.field(description="Points available, pending and on hold.")
    async def balance(self, info: strawberry.Info) -> T.Balance:
        async with info.context.read() as conn:
            b = await ledger.balance(conn, member_id=self.member_id)
        return T.Balance(
            available=b.available, pending=b.pending, on_hold=b.on_hold, total=b.total, debt=b.debt
        )

    @strawberry.field(
        description="Movements on the member's points, newest first (Relay connection)."
    )
    async def activity(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> T.Connection[T.Activity]:
        return await member_activity(info, self.member_id, first, after)


@strawberry.type(description="The points liability at the end of a closed period.")
class LiabilitySnapshot:
    period_id: strawberry.ID = strawberry.field(description="The closed period.")
    period_start: datetime = strawberry.field(description="Its start.")
    period_end: datetime = strawberry.field(description="Its end: the instant of the figures.")
    lines: list[LiabilityLine] = strawberry.field(
        description="Outstanding points by issuer (null issuer: the operator's own points)."
    )
    total_points: int = strawberry.field(description="Every issuer's points.")
    total_value: T.Money = strawberry.field(description="Every issuer's value.")

    @classmethod
    def of(cls, s: LiabilitySnapshotRecord) -> LiabilitySnapshot:
        return cls(
            period_id=strawberry.ID(str(s.period_id)),
            period_start=s.period_start,
            period_end=s.period_end,
            lines=[
                LiabilityLine(
                    points=x.points,
                    issue_price=str(x.issue_price) if x.issue_price is not None else None,
                    value=T.Money.of(x.value.amount, x.value.currency),
                    as_of=x.as_of,
                    issuer_id=x.issuer_id,
                )
                for x in s.lines
            ],
            total_points=s.total_points,
            total_value=T.Money.of(s.total_value.amount, s.total_value.currency),
        )


@strawberry.type(description="The latest run of the points expiry.")
class ExpiryRun:
    at: datetime = strawberry.field(description="Lots that expired up to this instant.")
    recorded_at: datetime = strawberry.field(description="When the run recorded it.")
    points: int = strawberry.field(description="Points it expired.")
    actor: str = strawberry.field(description="Who ran it.")

    @classmethod
    def of(cls, r: ledger.ExpiryRun) -> ExpiryRun:
        return cls(at=r.at, recorded_at=r.recorded_at, points=r.points, actor=r.actor)


@strawberry.type(description="Requests to one route of this server process since it started.")
class RouteRequests:
    route: str = strawberry.field(description="The route template, e.g. /graphql.")
    requests: int = strawberry.field(description="Requests answered.")
    client_errors: int = strawberry.field(description="Answered 4xx (refused input, tokens).")
    server_errors: int = strawberry.field(description="Answered 5xx (the server's fault).")
