"""Settlement mutations: run, close, reconcile."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry

from core.errors import DomainError, ErrorCode
from core.errors import ValidationError as DomainValidation
from gateway import authz
from gateway.graphql import errors as E
from gateway.graphql.access import guarded
from gateway.graphql.context import Context
from gateway.graphql.settlement.types import ReconciliationReport, SettlementPeriod
from settlement import reconciliation
from settlement import service as settlement


def _id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise DomainValidation(f"{what} is not a valid id", field=what) from None


# What each mutation's settlement call may raise (the result unions list these error types).
RUN_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})
CLOSE_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})
RECONCILE_ERRORS = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.NOT_FOUND,
        ErrorCode.PARTNER_NOT_FOUND,
        ErrorCode.LIMIT_EXCEEDED,
    }
)


@strawberry.input(
    description="A range of the ledger's effective time to settle: [periodStart, periodEnd)."
)
class RunSettlementInput:
    period_start: datetime = strawberry.field(description="Inclusive start (RFC 3339 with offset).")
    period_end: datetime = strawberry.field(description="Exclusive end; in the past or present.")


@strawberry.input(description="Close (freeze and seal) a period whose end has passed.")
class CloseSettlementPeriodInput:
    period_id: strawberry.ID = strawberry.field(description="The period.")


@strawberry.input(
    description="A partner's own record of a period, as CSV text (small files; "
    "larger ones: POST /settlement/periods/{id}/reconciliations)."
)
class ReconcileStatementInput:
    period_id: strawberry.ID = strawberry.field(description="The period.")
    csv: str = strawberry.field(
        description="Header order_ref,kind,points,amount then one line per event."
    )
    partner_id: strawberry.ID | None = strawberry.field(
        default=None, description="Operator only: the partner the file is for."
    )
    filename: str | None = strawberry.field(default=None, description="A name for the report.")


@strawberry.type(description="The period was computed (or returned unchanged if closed).")
class RunSettlementSuccess:
    period: SettlementPeriod = strawberry.field(description="The period with its statements.")


@strawberry.type(description="The period is closed and sealed.")
class CloseSettlementPeriodSuccess:
    period: SettlementPeriod = strawberry.field(description="The closed period.")


@strawberry.type(description="The file was matched against the ledger.")
class ReconcileStatementSuccess:
    report: ReconciliationReport = strawberry.field(description="The reconciliation report.")


RunSettlementResult = E.result_union(
    "RunSettlementResult", RunSettlementSuccess, RUN_ERRORS | E.GUARDED
)
CloseSettlementPeriodResult = E.result_union(
    "CloseSettlementPeriodResult", CloseSettlementPeriodSuccess, CLOSE_ERRORS | E.GUARDED
)
ReconcileStatementResult = E.result_union(
    "ReconcileStatementResult", ReconcileStatementSuccess, RECONCILE_ERRORS | E.GUARDED
)


@strawberry.type(description="Settlement mutations.")
class SettlementMutation:
    @strawberry.mutation(
        description="Settle a range of the ledger's effective time (operator); idempotent."
    )
    async def run_settlement(
        self, info: strawberry.Info, input: RunSettlementInput
    ) -> RunSettlementResult:
        async def work(ctx: Context) -> RunSettlementSuccess:
            async with ctx.unit_of_work() as conn:
                period = await settlement.run(
                    conn,
                    period_start=input.period_start,
                    period_end=input.period_end,
                    actor=ctx.actor,
                    currency=ctx.settings.settlement_currency,
                    point_value=ctx.settings.point_value,
                )
            return RunSettlementSuccess(period=SettlementPeriod.of(period, None))

        return await guarded(info, "operator", work)

    @strawberry.mutation(
        description="Run the expiry up to the period's end, then close and seal it (operator)."
    )
    async def close_settlement_period(
        self, info: strawberry.Info, input: CloseSettlementPeriodInput
    ) -> CloseSettlementPeriodResult:
        async def work(ctx: Context) -> CloseSettlementPeriodSuccess:
            period = await settlement.expire_and_close(
                ctx.engine, period_id=_id(input.period_id, "periodId"), actor=ctx.actor
            )
            return CloseSettlementPeriodSuccess(period=SettlementPeriod.of(period, None))

        return await guarded(info, "operator", work)

    @strawberry.mutation(
        description="Match a partner's CSV record of a period against the ledger "
        "(partner with settlement:read for itself, or the operator for any partner)."
    )
    async def reconcile_statement(
        self, info: strawberry.Info, input: ReconcileStatementInput
    ) -> ReconcileStatementResult:
        ctx: Context = info.context
        p = ctx.principal
        if p is None:
            return E.forbidden("authentication required: send a Bearer access token")
        try:
            try:
                own = authz.settlement_partner(p)
            except authz.Denied:
                return E.forbidden("this operation needs the 'settlement:read' scope")
            if own is not None:
                partner_id = own
            elif input.partner_id is None:
                raise DomainValidation("partnerId is required for the operator", field="partnerId")
            else:
                partner_id = _id(input.partner_id, "partnerId")
            async with ctx.unit_of_work() as conn:
                report = await reconciliation.reconcile(
                    conn,
                    period_id=_id(input.period_id, "periodId"),
                    partner_id=partner_id,
                    data=input.csv,
                    actor=ctx.actor,
                    filename=input.filename,
                    max_per_period=ctx.settings.reconciliation_max_per_period,
                )
        except DomainError as exc:
            return E.to_graphql(exc)
        return ReconcileStatementSuccess(report=ReconciliationReport.of(report, report.lines))
