"""Settlement in GraphQL: periods (Relay), statements, the inter-partner matrix, payment
instructions, adjustments, reconciliation reports, the points liability; runSettlement and
closeSettlementPeriod.

The operator sees everything; a partner client with `settlement:read` sees only its own
statement, the matrix cells in its row or column, and its own reconciliations.
"""

from __future__ import annotations

import uuid
from datetime import UTC as _UTC
from datetime import datetime
from typing import Annotated

import strawberry
from graphql import GraphQLError

from core.errors import DomainError
from core.errors import ValidationError as DomainValidation
from core.money import Money as DomainMoney
from gateway.graphql import errors as E
from gateway.graphql import types as T
from gateway.graphql.context import Context, guarded
from settlement import reconciliation
from settlement import service as settlement

MAX_PERIODS_PAGE = 100
# A period cursor is its start in microseconds since 1970: past year 9999 it is no datetime.
MAX_PERIOD_CURSOR = int(datetime(9999, 12, 31, tzinfo=_UTC).timestamp()) * 1_000_000


def _money(m: DomainMoney | None) -> T.Money | None:
    return T.Money.of(m.amount, m.currency) if m is not None else None


def _viewer(ctx: Context) -> uuid.UUID | None:
    """None for the operator (everything); the partner's id for a partner with
    settlement:read; anyone else is refused."""
    p = ctx.principal
    if p is None:
        raise GraphQLError("authentication required", extensions={"code": "FORBIDDEN"})
    if "operator" in p.scopes:
        return None
    if p.kind == "partner" and "settlement:read" in p.scopes and p.partner_id is not None:
        return p.partner_id
    raise GraphQLError(
        "settlement data needs an operator token or the settlement:read scope",
        extensions={"code": "FORBIDDEN"},
    )


async def _partner(info: strawberry.Info, partner_id: uuid.UUID) -> T.Partner | None:
    record = await info.context.partner_loader.load(partner_id)
    return T.Partner.of(record) if record else None


@strawberry.type(description="One partner's statement for a period, in the settlement currency.")
class Statement:
    issued_points: int = strawberry.field(description="Points the partner issued (earns).")
    reversed_points: int = strawberry.field(description="Issued points taken back by refunds.")
    redeemed_points: int = strawberry.field(description="Points the partner accepted as payment.")
    returned_points: int = strawberry.field(description="Accepted points given back by refunds.")
    issuance_charge: T.Money = strawberry.field(
        description="Issued x issue price - reversed x their price; rounded once, half-even."
    )
    reimbursement: T.Money = strawberry.field(
        description="Redeemed x redemption price - returned x their price; rounded once."
    )
    net: T.Money = strawberry.field(
        description="reimbursement - issuanceCharge: > 0 the coalition pays the partner, < 0 the partner pays."
    )
    breakage_points: int = strawberry.field(
        description="Points this partner issued that expired in the period."
    )
    breakage_value: T.Money = strawberry.field(
        description="Their value at the issue price (reported, not paid)."
    )
    adjustment_count: int = strawberry.field(
        description="Late events of closed periods settled here."
    )
    adjustment_net: T.Money = strawberry.field(description="The adjustments' part of `net`.")
    partner_id: strawberry.Private[uuid.UUID]

    @strawberry.field(description="The partner.")
    async def partner(self, info: strawberry.Info) -> T.Partner | None:
        return await _partner(info, self.partner_id)

    @classmethod
    def of(cls, s: settlement.Statement) -> Statement:
        return cls(
            issued_points=s.issued_points,
            reversed_points=s.reversed_points,
            redeemed_points=s.redeemed_points,
            returned_points=s.returned_points,
            issuance_charge=T.Money.of(s.issuance_charge.amount, s.issuance_charge.currency),
            reimbursement=T.Money.of(s.reimbursement.amount, s.reimbursement.currency),
            net=T.Money.of(s.net.amount, s.net.currency),
            breakage_points=s.breakage_points,
            breakage_value=T.Money.of(s.breakage_value.amount, s.breakage_value.currency),
            adjustment_count=s.adjustment_count,
            adjustment_net=T.Money.of(s.adjustment_net.amount, s.adjustment_net.currency),
            partner_id=s.partner_id,
        )


@strawberry.type(description="Points issued by `issuer` and accepted at `redeemer` in the period.")
class MatrixCell:
    points: int = strawberry.field(description="Points.")
    value: T.Money = strawberry.field(description="Their value at the redemption prices.")
    issuer_id: strawberry.Private[uuid.UUID]
    redeemer_id: strawberry.Private[uuid.UUID]

    @strawberry.field(description="The partner that issued (funded) the points.")
    async def issuer(self, info: strawberry.Info) -> T.Partner | None:
        return await _partner(info, self.issuer_id)

    @strawberry.field(description="The partner that accepted them as payment.")
    async def redeemer(self, info: strawberry.Info) -> T.Partner | None:
        return await _partner(info, self.redeemer_id)


@strawberry.type(description="The netted transfer of one partner for a period.")
class PaymentInstruction:
    payer: str = strawberry.field(description="operator, partner or none.")
    payee: str = strawberry.field(description="operator, partner or none.")
    amount: T.Money = strawberry.field(description="Amount to transfer (>= 0).")
    net: T.Money = strawberry.field(description="Signed net from the partner's side.")
    partner_id: strawberry.Private[uuid.UUID]

    @strawberry.field(description="The partner.")
    async def partner(self, info: strawberry.Info) -> T.Partner | None:
        return await _partner(info, self.partner_id)


@strawberry.type(
    description="A late event of a closed period, settled in this one; names what it adjusts."
)
class Adjustment:
    transaction_id: strawberry.ID = strawberry.field(description="The ledger transaction.")
    adjusts_period_id: strawberry.ID = strawberry.field(
        description="The closed period it belongs to by effective time."
    )
    kind: str = strawberry.field(description="earn, reversal, capture, return or expiry.")
    points: int = strawberry.field(description="Points of the event.")
    amount: T.Money = strawberry.field(description="Its signed effect on the partner's net.")
    order_ref: str | None = strawberry.field(description="The partner's order reference.")
    effective_at: datetime = strawberry.field(description="When it happened.")
    partner_id: strawberry.Private[uuid.UUID]

    @strawberry.field(description="The partner.")
    async def partner(self, info: strawberry.Info) -> T.Partner | None:
        return await _partner(info, self.partner_id)


@strawberry.type(description="Whether a closed period's seal still matches its contents.")
class SealVerification:
    sealed: bool = strawberry.field(description="The period is closed and sealed.")
    hash_matches: bool = strawberry.field(description="The stored contents hash to the seal.")
    ledger_matches: bool = strawberry.field(
        description="The ledger still gives the same statements."
    )
    computed_hash: str | None = strawberry.field(description="The hash computed now.")


@strawberry.type(
    description="A settlement period [periodStart, periodEnd) of the ledger's effective time."
)
class SettlementPeriod:
    id: strawberry.ID = strawberry.field(description="Period id.")
    period_start: datetime = strawberry.field(description="Inclusive start.")
    period_end: datetime = strawberry.field(description="Exclusive end.")
    kind: str = strawberry.field(description="daily, weekly, monthly or custom.")
    status: str = strawberry.field(description="open (re-computable) or closed (frozen, sealed).")
    currency: str = strawberry.field(description="The settlement currency.")
    run_at: datetime | None = strawberry.field(description="Last computation.")
    closed_at: datetime | None = strawberry.field(description="When it was closed.")
    content_hash: str | None = strawberry.field(
        description="SHA-256 seal of the closed period's contents."
    )
    operator_margin: T.Money | None = strawberry.field(
        description="-sum(net) over partners (operator only)."
    )
    breakage_points: int | None = strawberry.field(
        description="Points expired in the period (operator only)."
    )
    breakage_value: T.Money | None = strawberry.field(
        description="Their value at issue prices (operator only)."
    )
    period_uuid: strawberry.Private[uuid.UUID]
    viewer: strawberry.Private[uuid.UUID | None]

    @classmethod
    def of(cls, p: settlement.Period, viewer: uuid.UUID | None) -> SettlementPeriod:
        return cls(
            id=strawberry.ID(str(p.id)),
            period_start=p.period_start,
            period_end=p.period_end,
            kind=p.kind,
            status=p.status,
            currency=p.currency,
            run_at=p.run_at,
            closed_at=p.closed_at,
            content_hash=p.content_hash,
            operator_margin=_money(p.operator_margin) if viewer is None else None,
            breakage_points=p.breakage_points if viewer is None else None,
            breakage_value=_money(p.breakage_value) if viewer is None else None,
            period_uuid=p.id,
            viewer=viewer,
        )

    @strawberry.field(description="Statements: all for the operator, its own for a partner.")
    async def statements(self, info: strawberry.Info) -> list[Statement]:
        rows = await info.context.statements_loader.load((self.period_uuid, self.viewer))
        return [Statement.of(s) for s in rows]

    @strawberry.field(
        description="Inter-partner matrix (diagonal included); a partner sees its row and column."
    )
    async def matrix(self, info: strawberry.Info) -> list[MatrixCell]:
        cells = await info.context.matrix_loader.load((self.period_uuid, self.viewer))
        return [
            MatrixCell(
                points=c.points,
                value=T.Money.of(c.value.amount, c.value.currency),
                issuer_id=c.issuer_id,
                redeemer_id=c.redeemer_id,
            )
            for c in cells
        ]

    @strawberry.field(description="One netted transfer per partner, to or from the operator.")
    async def payment_instructions(self, info: strawberry.Info) -> list[PaymentInstruction]:
        pay = await info.context.payments_loader.load((self.period_uuid, self.viewer))
        return [
            PaymentInstruction(
                payer=i.payer,
                payee=i.payee,
                amount=T.Money.of(i.amount.amount, i.amount.currency),
                net=T.Money.of(i.net.amount, i.net.currency),
                partner_id=i.partner_id,
            )
            for i in pay
        ]

    @strawberry.field(description="Late events of closed periods settled in this one.")
    async def adjustments(self, info: strawberry.Info) -> list[Adjustment]:
        rows = await info.context.adjustments_loader.load((self.period_uuid, self.viewer))
        return [
            Adjustment(
                transaction_id=strawberry.ID(str(a.transaction_id)),
                adjusts_period_id=strawberry.ID(str(a.adjusts_period_id)),
                kind=a.kind,
                points=a.points,
                amount=T.Money.of(a.amount.amount, a.amount.currency),
                order_ref=a.ref,
                effective_at=a.effective_at,
                partner_id=a.partner_id,
            )
            for a in rows
        ]

    @strawberry.field(description="Recompute the seal of a closed period (operator only).")
    async def verification(self, info: strawberry.Info) -> SealVerification | None:
        if self.viewer is not None:
            return None
        v = await info.context.verification_loader.load(self.period_uuid)
        if v is None:
            return None
        return SealVerification(
            sealed=v.sealed,
            hash_matches=v.hash_matches,
            ledger_matches=v.ledger_matches,
            computed_hash=v.computed_hash,
        )


@strawberry.type(description="Outstanding points issued by one partner and their value.")
class LiabilityLine:
    points: int = strawberry.field(description="Outstanding points (in wallets and on hold).")
    issue_price: str | None = strawberry.field(description="Issue price in force, per point.")
    value: T.Money = strawberry.field(description="points x issue price.")
    as_of: datetime = strawberry.field(description="The instant of the figure.")
    issuer_id: strawberry.Private[uuid.UUID]

    @strawberry.field(description="The issuing partner.")
    async def issuer(self, info: strawberry.Info) -> T.Partner | None:
        return await _partner(info, self.issuer_id)


@strawberry.type(description="A line of a reconciliation report.")
class ReconciliationLine:
    status: str = strawberry.field(
        description="matched, mismatched, missing_in_ledger or missing_in_file."
    )
    order_ref: str | None = strawberry.field(description="The order reference.")
    kind: str = strawberry.field(description="earn, reversal, capture or return.")
    file_points: int | None = strawberry.field(description="Points in the partner's file.")
    ledger_points: int | None = strawberry.field(description="Points in the ledger.")
    file_amount: T.Money | None = strawberry.field(description="Amount in the partner's file.")
    ledger_amount: T.Money | None = strawberry.field(description="Amount in the ledger.")
    file_lines: list[int] = strawberry.field(description="Line numbers in the file.")
    seq: int = strawberry.field(description="Position of the line in the report, from 1.")

    @classmethod
    def of(cls, x: reconciliation.ReconciliationLine) -> ReconciliationLine:
        """The GraphQL view of a report line."""
        return cls(
            status=x.status,
            order_ref=x.order_ref,
            kind=x.kind,
            file_points=x.file_points,
            ledger_points=x.ledger_points,
            file_amount=_money(x.file_amount),
            ledger_amount=_money(x.ledger_amount),
            file_lines=list(x.file_lines),
            seq=x.seq,
        )


# A report can hold 100,000 lines (HTTP uploads): `lines` answers at most this many, the rest is
# read page by page (`linePage`). Any file that fits the GraphQL body cap stays below it.
MAX_UNPAGED_LINES = 5000


@strawberry.type(description="A partner's record of a period matched against the ledger.")
class ReconciliationReport:
    id: strawberry.ID = strawberry.field(description="Report id.")
    period_id: strawberry.ID = strawberry.field(description="The period.")
    partner_id: strawberry.ID = strawberry.field(description="The partner.")
    filename: str | None = strawberry.field(description="Name of the uploaded file.")
    file_sha256: str = strawberry.field(description="SHA-256 of the file.")
    matched: int = strawberry.field(description="Lines that agree.")
    mismatched: int = strawberry.field(description="Lines whose points or amount differ.")
    missing_in_ledger: int = strawberry.field(description="In the file, not in the ledger.")
    missing_in_file: int = strawberry.field(description="In the ledger, not in the file.")
    created_at: datetime = strawberry.field(description="When it was submitted.")
    preloaded: strawberry.Private[list[reconciliation.ReconciliationLine] | None] = None

    @strawberry.field(
        description="Every line, in report order (the matched ones too); refused (VALIDATION) "
        f"for a report of more than {MAX_UNPAGED_LINES:,} lines: page through it with linePage."
    )
    async def lines(self, info: strawberry.Info) -> list[ReconciliationLine]:
        total = self.matched + self.mismatched + self.missing_in_ledger + self.missing_in_file
        if total > MAX_UNPAGED_LINES:
            raise GraphQLError(
                f"this report has {total:,} lines, more than {MAX_UNPAGED_LINES:,}: "
                "page through them with linePage",
                extensions={"code": "VALIDATION"},
            )
        found = self.preloaded
        if found is None:
            async with info.context.engine.connect() as conn:
                found = (
                    await reconciliation.get_report(conn, reconciliation_id=uuid.UUID(self.id))
                ).lines
        return [ReconciliationLine.of(x) for x in found]

    @strawberry.field(
        description="One page of the lines in report order (Relay connection), optionally only "
        "those of some statuses."
    )
    async def line_page(
        self,
        info: strawberry.Info,
        first: Annotated[
            int,
            strawberry.argument(description=f"Lines per page, 1 to {reconciliation.PAGE_MAX}."),
        ] = reconciliation.PAGE_DEFAULT,
        after: Annotated[
            str | None, strawberry.argument(description="endCursor of the previous page.")
        ] = None,
        status: Annotated[
            list[str] | None,
            strawberry.argument(
                description="Only lines of these statuses (matched, mismatched, "
                "missing_in_ledger, missing_in_file); all when omitted."
            ),
        ] = None,
    ) -> T.Connection[ReconciliationLine]:
        try:
            cursor = T.decode_cursor(after)
            async with info.context.engine.connect() as conn:
                lines, next_after = await reconciliation.lines_page(
                    conn,
                    reconciliation_id=uuid.UUID(self.id),
                    statuses=status,
                    after=cursor,
                    limit=first,
                )
        except DomainError as exc:
            raise GraphQLError(exc.message, extensions={"code": "VALIDATION"}) from None
        edges = [
            T.Edge(cursor=T.encode_cursor(x.seq), node=ReconciliationLine.of(x)) for x in lines
        ]
        return T.Connection(
            edges=edges,
            page_info=T.PageInfo(
                has_next_page=next_after is not None,
                has_previous_page=cursor is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )

    @classmethod
    def of(
        cls,
        r: reconciliation.ReconciliationReport,
        lines: list[reconciliation.ReconciliationLine] | None = None,
    ) -> ReconciliationReport:
        """The report; `lines` when already in memory (else `lines` reads them when asked)."""
        return cls(
            id=strawberry.ID(str(r.id)),
            period_id=strawberry.ID(str(r.period_id)),
            partner_id=strawberry.ID(str(r.partner_id)),
            filename=r.filename,
            file_sha256=r.file_sha256,
            matched=r.matched,
            mismatched=r.mismatched,
            missing_in_ledger=r.missing_in_ledger,
            missing_in_file=r.missing_in_file,
            created_at=r.created_at,
            preloaded=lines,
        )


def _id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise DomainValidation(f"{what} is not a valid id", field=what) from None


@strawberry.type(description="Settlement queries.")
class SettlementQuery:
    @strawberry.field(
        description="Settlement periods, newest first (Relay connection). Operator: all; "
        "a partner with settlement:read: its own view."
    )
    async def settlement_periods(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> T.Connection[SettlementPeriod]:
        viewer = _viewer(info.context)
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
        viewer = _viewer(info.context)
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
        if _viewer(info.context) is not None:
            raise GraphQLError(
                "the liability report is the operator's", extensions={"code": "FORBIDDEN"}
            )
        async with info.context.read() as conn:
            lines = await settlement.liability(
                conn, currency=info.context.settings.settlement_currency
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
        viewer = _viewer(info.context)
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


_result = E.result_union


RunSettlementResult = _result("RunSettlementResult", RunSettlementSuccess)
CloseSettlementPeriodResult = _result("CloseSettlementPeriodResult", CloseSettlementPeriodSuccess)
ReconcileStatementResult = _result("ReconcileStatementResult", ReconcileStatementSuccess)


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
            if "operator" in p.scopes:
                if input.partner_id is None:
                    raise DomainValidation(
                        "partnerId is required for the operator", field="partnerId"
                    )
                partner_id = _id(input.partner_id, "partnerId")
            elif p.kind == "partner" and "settlement:read" in p.scopes and p.partner_id:
                partner_id = p.partner_id
            else:
                return E.forbidden("this operation needs the 'settlement:read' scope")
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
