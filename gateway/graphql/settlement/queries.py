"""Settlement queries: periods, the points liability, reconciliation reports."""

from __future__ import annotations

import uuid
from datetime import UTC as _UTC
from datetime import datetime

import strawberry
from graphql import GraphQLError

from core.errors import DomainError
from gateway.graphql import types as T
from gateway.graphql.access import forbidden, settlement_viewer
from gateway.graphql.settlement.types import (
    MAX_PERIOD_CURSOR,
    LiabilityLine,
    ReconciliationReport,
    SettlementPeriod,
)
from settlement import reconciliation
from settlement import service as settlement

MAX_PERIODS_PAGE = 100


@strawberry.type(description="Settlement queries.")
class SettlementQuery:
    @strawberry.field(
        description="Settlement periods, newest first (Relay connection). Operator: all; "
        "a partner with settlement:read: its own view."
    )
    async def settlement_periods(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> T.Connection[SettlementPeriod]:
        viewer = settlement_viewer(info.context)
        if not 0 < first <= MAX_PERIODS_PAGE:
            raise GraphQLError(
                f"first must be between 1 and {MAX_PERIODS_PAGE}", extensions={"code": "VALIDATION"}
            )
        try:
            before = T.decode_cursor(after, maximum=MAX_PERIOD_CURSOR)
        except DomainError as exc:
            raise GraphQLError(exc.message, extensions={"code": "VALIDATION"}) from None
        before_at = (
            datetime.fromtimestamp(before / 1_000_000, tz=_UTC) if before is not None else None
        )
        async with info.context.read() as conn:
            rows = await settlement.list_periods(
                conn, first=first + 1, before=before_at, partner_id=viewer
            )
        return T.page(
            rows,
            first=first,
            after=before,
            key=lambda p: int(p.period_start.timestamp() * 1_000_000),
            node=lambda p: SettlementPeriod.of(p, viewer),
        )

    @strawberry.field(description="One settlement period (operator, or a partner's own view).")
    async def settlement_period(
        self, info: strawberry.Info, id: strawberry.ID
    ) -> SettlementPeriod | None:
        viewer = settlement_viewer(info.context)
        try:
            pid = uuid.UUID(str(id))
        except ValueError:
            return None
        async with info.context.read() as conn:
            try:
                p = await settlement.get_period(conn, period_id=pid, partner_id=viewer)
            except DomainError:
                return None
        return SettlementPeriod.of(p, viewer)

    @strawberry.field(description="The points liability now, by issuing partner (operator).")
    async def points_liability(self, info: strawberry.Info) -> list[LiabilityLine]:
        if settlement_viewer(info.context) is not None:
            raise forbidden("the liability report is the operator's")
        async with info.context.read() as conn:
            settings = info.context.settings
            lines = await settlement.liability(
                conn, currency=settings.settlement_currency, point_value=settings.point_value
            )
        return [
            LiabilityLine(
                points=x.points,
                issue_price=str(x.issue_price) if x.issue_price is not None else None,
                value=T.Money.of(x.value.amount, x.value.currency),
                as_of=x.as_of,
                issuer_id=x.issuer_id,
            )
            for x in lines
        ]

    @strawberry.field(
        description="A reconciliation report (operator, or the partner it belongs to)."
    )
    async def reconciliation(
        self, info: strawberry.Info, id: strawberry.ID
    ) -> ReconciliationReport | None:
        viewer = settlement_viewer(info.context)
        try:
            rid = uuid.UUID(str(id))
        except ValueError:
            return None
        async with info.context.read() as conn:
            try:
                r = await reconciliation.get_report(
                    conn, reconciliation_id=rid, partner_id=viewer, with_lines=False
                )
            except DomainError:
                return None
        return ReconciliationReport.of(r)
