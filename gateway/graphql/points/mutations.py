"""Points mutations: a partner's earn, refund and redemption (authorize, capture, void), and
the member's redemption codes. Each calls one use case of `loyalty`.
"""

from __future__ import annotations

from datetime import datetime

import strawberry

from gateway.graphql import errors as E
from gateway.graphql import types as T
from gateway.graphql.access import guarded
from gateway.graphql.context import Context
from gateway.graphql.points.inputs import (
    AuthorizeRedemptionInput,
    CaptureRedemptionInput,
    CreateRedemptionCodeInput,
    EarnInput,
    RefundInput,
    VoidRedemptionInput,
)
from loyalty import earn as earning
from loyalty import redeem
from loyalty import refund as refunding


@strawberry.type(description="Points were credited (or this is the replay of that request).")
class EarnSuccess:
    transaction: T.EarnTransaction = strawberry.field(description="The earn's ledger transaction.")
    replayed: bool = strawberry.field(
        description="True when this answers a retry of an earlier request."
    )


@strawberry.type(description="The refund was applied.")
class RefundSuccess:
    refund: T.Refund = strawberry.field(description="What the refund did.")
    replayed: bool = strawberry.field(description="True when this answers a retry.")


@strawberry.type(description="Points are reserved.")
class AuthorizeRedemptionSuccess:
    hold: T.Hold = strawberry.field(description="The hold.")
    replayed: bool = strawberry.field(description="True when this answers a retry.")


@strawberry.type(description="Points were taken; the rest of the hold was released.")
class CaptureRedemptionSuccess:
    transaction: T.PointsTransaction = strawberry.field(
        description="The capture's ledger transaction."
    )
    released_points: int = strawberry.field(description="Held points given back to the member.")
    replayed: bool = strawberry.field(description="True when this answers a retry.")


@strawberry.type(description="The hold was released.")
class VoidRedemptionSuccess:
    hold: T.Hold = strawberry.field(description="The voided hold.")
    replayed: bool = strawberry.field(description="True when this answers a retry.")


@strawberry.type(description="A new code; show it to the partner's till.")
class CreateRedemptionCodeSuccess:
    redemption_code: T.RedemptionCode = strawberry.field(description="The code.")

    @strawberry.field(description="The code (shortcut of redemptionCode.code).")
    def code(self) -> str:
        return self.redemption_code.code

    @strawberry.field(description="Expiry (shortcut of redemptionCode.expiresAt).")
    def expires_at(self) -> datetime:
        return self.redemption_code.expires_at


EarnResult = E.result_union("EarnResult", EarnSuccess, earning.ERRORS | E.GUARDED)


RefundResult = E.result_union("RefundResult", RefundSuccess, refunding.ERRORS | E.GUARDED)


AuthorizeRedemptionResult = E.result_union(
    "AuthorizeRedemptionResult", AuthorizeRedemptionSuccess, redeem.AUTHORIZE_ERRORS | E.GUARDED
)


CaptureRedemptionResult = E.result_union(
    "CaptureRedemptionResult", CaptureRedemptionSuccess, redeem.CAPTURE_ERRORS | E.GUARDED
)


VoidRedemptionResult = E.result_union(
    "VoidRedemptionResult", VoidRedemptionSuccess, redeem.VOID_ERRORS | E.GUARDED
)


CreateRedemptionCodeResult = E.result_union(
    "CreateRedemptionCodeResult", CreateRedemptionCodeSuccess, redeem.ISSUE_CODE_ERRORS | E.GUARDED
)


@strawberry.type(description="Points mutations.")
class PointsMutation:
    @strawberry.mutation(
        description="Credit points for a purchase at the calling partner (scope points:earn)."
    )
    async def earn(self, info: strawberry.Info, input: EarnInput) -> EarnResult:
        async def work(ctx: Context) -> EarnSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            r = await earning.earn(
                ctx,
                actor=ctx.actor,
                key_space=ctx.key_space,
                partner_id=ctx.principal.partner_id,
                card_number=input.card_number,
                amount=input.amount.amount,
                currency=input.amount.currency,
                category=input.category,
                order_ref=input.order_ref,
                idempotency_key=input.idempotency_key,
            )
            return EarnSuccess(transaction=T.EarnTransaction.of(r), replayed=r.replayed)

        return await guarded(info, "points:earn", work, kind="partner")

    @strawberry.mutation(
        description="Refund (part of) an order: earned points are reversed and points paid with are "
        "returned, pro rata (scope points:earn)."
    )
    async def refund(self, info: strawberry.Info, input: RefundInput) -> RefundResult:
        async def work(ctx: Context) -> RefundSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            r = await refunding.refund(
                ctx,
                actor=ctx.actor,
                partner_id=ctx.principal.partner_id,
                order_ref=input.order_ref,
                amount=input.amount.amount,
                currency=input.amount.currency,
                idempotency_key=input.idempotency_key,
            )
            return RefundSuccess(refund=T.Refund.of(r), replayed=r.replayed)

        return await guarded(info, "points:earn", work, kind="partner")

    @strawberry.mutation(
        description="Reserve points as payment with the member's redemption code (scope points:redeem)."
    )
    async def authorize_redemption(
        self, info: strawberry.Info, input: AuthorizeRedemptionInput
    ) -> AuthorizeRedemptionResult:
        async def work(ctx: Context) -> AuthorizeRedemptionSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            h = await redeem.authorize(
                ctx,
                actor=ctx.actor,
                key_space=ctx.key_space,
                partner_id=ctx.principal.partner_id,
                redemption_code=input.redemption_code,
                points=input.points,
                purchase_amount=input.purchase_amount.amount,
                currency=input.purchase_amount.currency,
                order_ref=input.order_ref,
                idempotency_key=input.idempotency_key,
            )
            return AuthorizeRedemptionSuccess(hold=T.Hold.of(h.hold_id, h), replayed=h.replayed)

        return await guarded(info, "points:redeem", work, kind="partner")

    @strawberry.mutation(
        description="Take up to the held points; the rest is released (scope points:redeem)."
    )
    async def capture_redemption(
        self, info: strawberry.Info, input: CaptureRedemptionInput
    ) -> CaptureRedemptionResult:
        async def work(ctx: Context) -> CaptureRedemptionSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            r = await redeem.capture(
                ctx,
                actor=ctx.actor,
                key_space=ctx.key_space,
                partner_id=ctx.principal.partner_id,
                hold_id=input.hold_id,
                points=input.points,
                idempotency_key=input.idempotency_key,
            )
            return CaptureRedemptionSuccess(
                transaction=T.PointsTransaction(
                    id=strawberry.ID(str(r.transaction_id)), points=r.points, kind="capture"
                ),
                released_points=r.released,
                replayed=r.replayed,
            )

        return await guarded(info, "points:redeem", work, kind="partner")

    @strawberry.mutation(description="Release a hold (scope points:redeem).")
    async def void_redemption(
        self, info: strawberry.Info, input: VoidRedemptionInput
    ) -> VoidRedemptionResult:
        async def work(ctx: Context) -> VoidRedemptionSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            r = await redeem.void(
                ctx,
                actor=ctx.actor,
                key_space=ctx.key_space,
                partner_id=ctx.principal.partner_id,
                hold_id=input.hold_id,
                idempotency_key=input.idempotency_key,
            )
            return VoidRedemptionSuccess(hold=T.Hold.of(r.hold_id, r.hold), replayed=r.replayed)

        return await guarded(info, "points:redeem", work, kind="partner")

    @strawberry.mutation(
        description="Issue a single-use code that lets a partner take points (member token)."
    )
    async def create_redemption_code(
        self, info: strawberry.Info, input: CreateRedemptionCodeInput | None = None
    ) -> CreateRedemptionCodeResult:
        input = input or CreateRedemptionCodeInput()

        async def work(ctx: Context) -> CreateRedemptionCodeSuccess:
            assert ctx.principal is not None and ctx.principal.member_id is not None
            c, pid = await redeem.issue_code(
                ctx,
                member_id=ctx.principal.member_id,
                max_points=input.max_points,
                partner_id=input.partner_id,
            )
            return CreateRedemptionCodeSuccess(redemption_code=T.RedemptionCode.of(c, pid))

        return await guarded(info, "member", work, kind="member")
