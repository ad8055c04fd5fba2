"""Settlement types: periods (Relay), statements, the inter-partner matrix, payment
instructions, adjustments, seal verification, the points liability, reconciliation reports.

The operator sees everything; a partner client with `settlement:read` sees only its own
statement, the matrix cells in its row or column, and its own reconciliations
(`gateway.authz.settlement_partner` decides which).
"""

from __future__ import annotations

import uuid
from datetime import UTC as _UTC
from datetime import datetime
from typing import Annotated

import strawberry
from graphql import GraphQLError

from core.errors import DomainError
from core.money import Money as DomainMoney
from gateway.graphql import types as T
from settlement import reconciliation
from settlement import service as settlement

# A period cursor is its start in microseconds since 1970: past year 9999 it is no datetime.
MAX_PERIOD_CURSOR = int(datetime(9999, 12, 31, tzinfo=_UTC).timestamp()) * 1_000_000


def _money(m: DomainMoney | None) -> T.Money | None:
    return T.Money.of(m.amount, m.currency) if m is not None else None


async def _partner(info: strawberry.Info, partner_id: uuid.UUID | None) -> T.Partner | None:
    if partner_id is None:  # the operator's own points name no partner
        return None
    record = await info.context.partner_loader.load(partner_id)
    return T.Partner.of(record) if record else None


@strawberry.type(description="One partner's statement for a period, in the settlement currency.")
class Statement:
    issued_points: int = strawberry.field(
        description="Points the partner issued: earns and the bonuses it awarded."
    )
    reversed_points: int = strawberry.field(description="Issued points taken back by refunds.")
    redeemed_points: int = strawberry.field(
        description="Points the partner accepted: as payment and for the rewards it delivers "
        "(whoever issued them, the operator included)."
    )
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


@strawberry.type(
    description="Points issued by `issuer` (null: the operator) and accepted at `redeemer` in the "
    "period, as payment or for a reward; transferred points count under their original issuer."
)
class MatrixCell:
    points: int = strawberry.field(description="Points.")
    value: T.Money = strawberry.field(description="Their value at the redemption prices.")
    issuer_id: strawberry.Private[uuid.UUID | None]
    redeemer_id: strawberry.Private[uuid.UUID]

    @strawberry.field(
        description="The partner that issued (funded) the points; null: the operator (sign-up "
        "and referral bonuses), whose points no partner paid for."
    )
    async def issuer(self, info: strawberry.Info) -> T.Partner | None:
        return await _partner(info, self.issuer_id)

    @strawberry.field(description="The partner that accepted them, as payment or for a reward.")
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
    kind: str = strawberry.field(
        description="earn, bonus, reversal, capture, reward, return or expiry."
    )
    points: int = strawberry.field(description="Points of the event.")
    amount: T.Money = strawberry.field(
        description="Its signed effect on the partner's net; for an expiry, the breakage value "
        "(reported, not paid)."
    )
    order_ref: str | None = strawberry.field(description="The partner's order reference.")
    effective_at: datetime = strawberry.field(description="When it happened.")
    partner_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field(description="The partner; null: the operator (an expiry of its own points).")
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
        description="Points expired in the period, the operator's own included (operator only)."
    )
    breakage_value: T.Money | None = strawberry.field(
        description="Their value at issue prices, the operator's points at the face value of a "
        "point (operator only)."
    )
    operator_issued_points: int | None = strawberry.field(
        description="Points the operator issued itself in the period (sign-up and referral "
        "bonuses, coalition-wide offers' points of earns): on no partner's statement (operator "
        "only)."
    )
    operator_breakage_points: int | None = strawberry.field(
        description="The operator's own points expired in the period: part of breakagePoints, "
        "on no partner's statement (operator only)."
    )
    operator_breakage_value: T.Money | None = strawberry.field(
        description="Their value at the face value of a point (operator only)."
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
            operator_issued_points=p.operator_issued_points if viewer is None else None,
            operator_breakage_points=p.operator_breakage_points if viewer is None else None,
            operator_breakage_value=_money(p.operator_breakage_value) if viewer is None else None,
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


@strawberry.type(
    description="Outstanding points issued by one partner, or by the operator, and their value."
)
class LiabilityLine:
    points: int = strawberry.field(description="Outstanding points (in wallets and on hold).")
    issue_price: str | None = strawberry.field(
        description="Issue price in force, per point; for the operator's points, the face value "
        "of a point (nobody paid for them, but their redemption is owed all the same)."
    )
    value: T.Money = strawberry.field(description="points x issue price.")
    as_of: datetime = strawberry.field(description="The instant of the figure.")
    issuer_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field(
        description="The issuing partner; null: the operator (sign-up and referral bonuses)."
    )
    async def issuer(self, info: strawberry.Info) -> T.Partner | None:
        return await _partner(info, self.issuer_id)


@strawberry.type(description="A line of a reconciliation report.")
class ReconciliationLine:
    status: str = strawberry.field(
        description="matched, mismatched, missing_in_ledger or missing_in_file."
    )
    order_ref: str | None = strawberry.field(description="The order reference.")
    kind: str = strawberry.field(description="earn, bonus, reversal, capture, reward or return.")
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
