"""The GraphQL schema: queries and the mutations of the partner contract (API.md).

Every mutation follows the Relay convention `fooBar(input: FooBarInput!): FooBarResult!`
where the result is a union of `FooBarSuccess` and error types implementing `Error`.
Resolvers are thin: check the caller, call domain services in one unit of work, map domain
errors to typed errors.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.permission import BasePermission

from core.clock import utcnow
from core.errors import DomainError, ErrorCode
from core.errors import ValidationError as DomainValidation
from core.ids import uuid7
from core.settings import Settings
from gateway.graphql import errors as E
from gateway.graphql import types as T
from gateway.graphql.context import Context, guarded
from gateway.graphql.cost import query_limits_rule
from gateway.graphql.inputs import RefusedInputHandler, add_input_checks
from gateway.graphql.settlement import SettlementMutation, SettlementQuery
from gateway.ratelimit import REGISTER, hashing, rate_limits
from ledger import service as ledger
from ledger.errors import HoldNotFound
from members import codes as member_codes
from members import passwords
from members import service as members
from members.cards import is_valid_card_number
from partners import refunds as partner_refunds
from partners import service as partners

R = TypeVar("R")
MAX_PAGE = 100


# ---------------------------------------------------------------------------------------------
# Who may call what


def _principal_has(ctx: Context, scope: str) -> bool:
    return ctx.principal is not None and scope in ctx.principal.scopes


def _parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise DomainValidation(f"{what} is not a valid id", field=what) from None


class _Scoped(BasePermission):
    scope = ""
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return _principal_has(info.context, self.scope)


class IsOperator(_Scoped):
    scope = "operator"
    message = "this field needs an operator token"


class IsMember(_Scoped):
    scope = "member"
    message = "this field needs a member token"


_result = E.result_union


# ---------------------------------------------------------------------------------------------
# Member (the `me` query)


@strawberry.type(description="The member calling with a member token.")
class Me:
    id: strawberry.ID = strawberry.field(description="Member id.")
    card_number: str = strawberry.field(description="16-digit card number with a Luhn check digit.")
    email: str | None = strawberry.field(description="Login e-mail.")
    name: str | None = strawberry.field(description="Display name.")
    member_id: strawberry.Private[uuid.UUID]

    @strawberry.field(
        description="Status tier in the coalition (tiers are configured by the operator)."
    )
    def tier(self) -> str | None:
        return None

    @strawberry.field(description="Points available, pending and on hold.")
    async def balance(self, info: strawberry.Info) -> T.Balance:
        async with info.context.read() as conn:
            b = await ledger.balance(conn, member_id=self.member_id)
        return T.Balance(
            available=b.available, pending=b.pending, on_hold=b.on_hold, total=b.total, debt=b.debt
        )

    @strawberry.field(description="Points (available or pending) that expire within `days` days.")
    async def expiring_points(self, info: strawberry.Info, days: int = 30) -> int:
        if not 0 < days <= 3660:
            raise GraphQLError("days must be between 1 and 3660", extensions={"code": "VALIDATION"})
        async with info.context.read() as conn:
            b = await ledger.balance(
                conn, member_id=self.member_id, expiring_within=timedelta(days=days)
            )
        return b.expiring

    @strawberry.field(
        description="Movements on the member's points, newest first (Relay connection)."
    )
    async def activity(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> T.Connection[T.Activity]:
        if not 0 < first <= MAX_PAGE:
            raise GraphQLError(
                f"first must be between 1 and {MAX_PAGE}", extensions={"code": "VALIDATION"}
            )
        try:
            before = T.decode_cursor(after)
        except DomainError as exc:
            raise GraphQLError(exc.message, extensions={"code": "VALIDATION"}) from None
        async with info.context.read() as conn:
            items = await ledger.history(
                conn, member_id=self.member_id, limit=first + 1, before=before
            )
        return T.page(
            items,
            first=first,
            after=before,
            key=lambda i: i.entry_id,
            node=lambda i: T.Activity(
                id=strawberry.ID(str(i.entry_id)),
                transaction_id=strawberry.ID(str(i.transaction_id)),
                kind=i.kind,
                points=i.amount,
                order_ref=i.ref,
                at=i.effective_at,
                partner_id=i.partner_id,
            ),
        )


# ---------------------------------------------------------------------------------------------
# Query


@strawberry.type(description="Read operations.")
class Query(SettlementQuery):
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
            member_id=m.id,
        )

    @strawberry.field(
        description="Partners: all of them for the operator and members; a partner sees itself."
    )
    async def partners(self, info: strawberry.Info, first: int = 100) -> list[T.Partner]:
        ctx: Context = info.context
        if ctx.principal is None:
            raise GraphQLError("authentication required", extensions={"code": "FORBIDDEN"})
        if not 0 < first <= 500:
            raise GraphQLError("first must be between 1 and 500", extensions={"code": "VALIDATION"})
        if ctx.principal.kind == "partner":
            record = await ctx.partner_loader.load(ctx.principal.partner_id)
            return [T.Partner.of(record)] if record else []
        async with ctx.read() as conn:
            return [T.Partner.of(p) for p in await partners.list_partners(conn, limit=first)]

    @strawberry.field(
        description="A partner's earn rule in force (operator, or the partner itself)."
    )
    async def earn_rule(
        self, info: strawberry.Info, partner_id: strawberry.ID
    ) -> T.EarnRule | None:
        pid = _visible_partner(info.context, partner_id)
        if pid is None:
            return None
        cfg = await info.context.partner_config(pid)
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


def _visible_partner(ctx: Context, partner_id: str) -> uuid.UUID | None:
    """The partner id if the caller may see that partner's terms; None otherwise."""
    try:
        pid = uuid.UUID(str(partner_id))
    except ValueError:
        return None
    p = ctx.principal
    if p is None:
        raise GraphQLError("authentication required", extensions={"code": "FORBIDDEN"})
    if "operator" in p.scopes or (p.kind == "partner" and p.partner_id == pid):
        return pid
    return None


# ---------------------------------------------------------------------------------------------
# Inputs


@strawberry.input(description="A new partner.")
class CreatePartnerInput:
    name: str = strawberry.field(description="Display name.")
    category: str = strawberry.field(description="Business category.")
    currency: str = strawberry.field(description="Currency of its purchases (ISO 4217).")


@strawberry.input(
    description="Prices per point in the settlement currency, from `effectiveFrom` on."
)
class SetAgreementInput:
    partner_id: strawberry.ID = strawberry.field(description="The partner.")
    issue_price: str = strawberry.field(
        description="Decimal string: what the partner pays per point issued."
    )
    redemption_price: str = strawberry.field(
        description="Decimal string: what it is paid per point accepted."
    )
    effective_from: datetime = strawberry.field(description="RFC 3339 date-time with an offset.")


@strawberry.input(description="A category's own earn rate.")
class CategoryRateInput:
    category: str = strawberry.field(description="Free-form category string.")
    rate: str = strawberry.field(description="Points per currency unit, decimal string.")


@strawberry.input(description="A partner's earn rule (replaces the one in force).")
class SetEarnRuleInput:
    partner_id: strawberry.ID = strawberry.field(description="The partner.")
    base_rate: str = strawberry.field(description="Points per currency unit, decimal string.")
    category_rates: list[CategoryRateInput] = strawberry.field(
        default_factory=list, description="Rates replacing the base rate for these categories."
    )
    hold_days: int = strawberry.field(
        default=0, description="Return window in days (>= 0; 0 = at once)."
    )
    max_redeem_share: str = strawberry.field(
        default="1", description="Largest fraction of a bill payable in points, in (0, 1]."
    )
    max_points_per_transaction: int | None = strawberry.field(
        default=None, description="Optional cap on the points of one earn."
    )


@strawberry.input(description="A new OAuth client for a partner.")
class CreatePartnerClientInput:
    partner_id: strawberry.ID = strawberry.field(description="The partner it acts for.")
    scopes: list[str] = strawberry.field(
        description="Any of points:earn, points:redeem, catalog:write, settlement:read."
    )


@strawberry.input(description="A new member of the coalition.")
class RegisterMemberInput:
    email: str = strawberry.field(description="Login e-mail (unique).")
    password: str = strawberry.field(description="At least 8 characters.")
    name: str = strawberry.field(description="Display name.")


@T.plain_input  # the earn path: built without Strawberry's generic per-field conversion
@strawberry.input(description="Points for a purchase at the calling partner.")
class EarnInput:
    card_number: str = strawberry.field(description="The member's 16-digit card number.")
    amount: T.MoneyInput = strawberry.field(
        description="Purchase amount, positive, in the partner's currency."
    )
    category: str | None = strawberry.field(
        default=None, description="Category for category rates."
    )
    order_ref: str = strawberry.field(
        description="The partner's order reference (one earn per order)."
    )
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="A (partial) refund of one of the calling partner's orders.")
class RefundInput:
    order_ref: str = strawberry.field(
        description="The order's reference as given at earn/authorization."
    )
    amount: T.MoneyInput = strawberry.field(description="Amount refunded now, positive.")
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="Reserve a member's points as payment, with their redemption code.")
class AuthorizeRedemptionInput:
    redemption_code: str = strawberry.field(description="The code the member shows (12 digits).")
    points: int = strawberry.field(description="Points to reserve (> 0).")
    purchase_amount: T.MoneyInput = strawberry.field(
        description="The bill, positive, in the partner's currency."
    )
    order_ref: str = strawberry.field(description="The partner's order reference.")
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="Take up to the held points.")
class CaptureRedemptionInput:
    hold_id: strawberry.ID = strawberry.field(description="The hold from authorizeRedemption.")
    points: int = strawberry.field(
        description="Points to capture: at most the hold; the rest is released."
    )
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="Release a hold.")
class VoidRedemptionInput:
    hold_id: strawberry.ID = strawberry.field(description="The hold from authorizeRedemption.")
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="A new redemption code for the calling member.")
class CreateRedemptionCodeInput:
    max_points: int | None = strawberry.field(
        default=None, description="Most points the code lets a partner take."
    )
    partner_id: strawberry.ID | None = strawberry.field(
        default=None, description="Bind the code to this partner."
    )


# ---------------------------------------------------------------------------------------------
# Success types


@strawberry.type(description="The partner was created.")
class CreatePartnerSuccess:
    partner: T.Partner = strawberry.field(description="The new partner.")


@strawberry.type(description="The agreement was recorded.")
class SetAgreementSuccess:
    agreement: T.Agreement = strawberry.field(description="The new agreement.")


@strawberry.type(description="The earn rule is in force.")
class SetEarnRuleSuccess:
    earn_rule: T.EarnRule = strawberry.field(description="The rule now in force.")


@strawberry.type(description="The client was created; store the secret now, it is not shown again.")
class CreatePartnerClientSuccess:
    client_id: str = strawberry.field(description="OAuth client_id.")
    client_secret: str = strawberry.field(description="OAuth client_secret (shown once).")
    scopes: list[str] = strawberry.field(description="Scopes granted.")


@strawberry.type(description="The member is registered.")
class RegisterMemberSuccess:
    member: T.MemberCard = strawberry.field(description="The new member and their card number.")


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


CreatePartnerResult = _result("CreatePartnerResult", CreatePartnerSuccess)
SetAgreementResult = _result("SetAgreementResult", SetAgreementSuccess)
SetEarnRuleResult = _result("SetEarnRuleResult", SetEarnRuleSuccess)
CreatePartnerClientResult = _result("CreatePartnerClientResult", CreatePartnerClientSuccess)
RegisterMemberResult = _result("RegisterMemberResult", RegisterMemberSuccess)
EarnResult = _result("EarnResult", EarnSuccess)
RefundResult = _result("RefundResult", RefundSuccess)
AuthorizeRedemptionResult = _result("AuthorizeRedemptionResult", AuthorizeRedemptionSuccess)
CaptureRedemptionResult = _result("CaptureRedemptionResult", CaptureRedemptionSuccess)
VoidRedemptionResult = _result("VoidRedemptionResult", VoidRedemptionSuccess)
CreateRedemptionCodeResult = _result("CreateRedemptionCodeResult", CreateRedemptionCodeSuccess)


def _text(value: str, what: str, max_len: int = 200) -> str:
    value = value.strip()
    if not value or len(value) > max_len:
        raise DomainValidation(f"{what} must be 1..{max_len} characters", field=what)
    return value


# ---------------------------------------------------------------------------------------------
# Mutation


@strawberry.type(
    description="Write operations. Every mutation that moves points takes an idempotencyKey."
)
class Mutation(SettlementMutation):
    # -- operator ------------------------------------------------------------------------------

    @strawberry.mutation(description="Register a partner merchant (operator).")
    async def create_partner(
        self, info: strawberry.Info, input: CreatePartnerInput
    ) -> CreatePartnerResult:
        async def work(ctx: Context) -> CreatePartnerSuccess:
            async with ctx.unit_of_work() as conn:
                p = await partners.create(
                    conn, name=input.name, category=input.category, currency=input.currency
                )
            return CreatePartnerSuccess(partner=T.Partner.of(p))

        return await guarded(info, "operator", work)

    @strawberry.mutation(
        description="Record a partner's prices per point from an instant on (operator)."
    )
    async def set_agreement(
        self, info: strawberry.Info, input: SetAgreementInput
    ) -> SetAgreementResult:
        async def work(ctx: Context) -> SetAgreementSuccess:
            pid = _parse_id(input.partner_id, "partnerId")
            async with ctx.unit_of_work() as conn:
                a = await partners.set_agreement(
                    conn,
                    partner_id=pid,
                    issue_price=input.issue_price,
                    redemption_price=input.redemption_price,
                    effective_from=input.effective_from,
                    currency=ctx.settings.settlement_currency,
                    actor=ctx.actor,
                )
            ctx.caches.partner_config.invalidate(pid)  # the earn path reads agreements from it
            return SetAgreementSuccess(agreement=T.Agreement.of(a))

        return await guarded(info, "operator", work)

    @strawberry.mutation(description="Put a partner's earn rule in force (operator).")
    async def set_earn_rule(
        self, info: strawberry.Info, input: SetEarnRuleInput
    ) -> SetEarnRuleResult:
        async def work(ctx: Context) -> SetEarnRuleSuccess:
            pid = _parse_id(input.partner_id, "partnerId")
            rates: dict[str, Any] = {}
            for cr in input.category_rates:
                if cr.category in rates:
                    raise DomainValidation(
                        f"category {cr.category!r} appears twice", field="categoryRates"
                    )
                rates[cr.category] = cr.rate
            async with ctx.unit_of_work() as conn:
                rule = await partners.set_earn_rule(
                    conn,
                    partner_id=pid,
                    base_rate=input.base_rate,
                    category_rates=rates,
                    hold_days=input.hold_days,
                    max_redeem_share=input.max_redeem_share,
                    max_points_per_transaction=input.max_points_per_transaction,
                    actor=ctx.actor,
                )
            ctx.caches.partner_config.invalidate(pid)
            return SetEarnRuleSuccess(earn_rule=T.EarnRule.of(rule))

        return await guarded(info, "operator", work)

    @strawberry.mutation(
        description="Create an OAuth client for a partner; the secret is shown once (operator)."
    )
    async def create_partner_client(
        self, info: strawberry.Info, input: CreatePartnerClientInput
    ) -> CreatePartnerClientResult:
        from partners import clients

        async def work(ctx: Context) -> CreatePartnerClientSuccess:
            pid = _parse_id(input.partner_id, "partnerId")
            async with ctx.unit_of_work() as conn:
                await partners.get(conn, partner_id=pid)
                created = await clients.create_partner_client(
                    conn, partner_id=pid, scopes=list(input.scopes)
                )
            return CreatePartnerClientSuccess(
                client_id=created.client_id,
                client_secret=created.client_secret,
                scopes=list(created.scopes),
            )

        return await guarded(info, "operator", work)

    # -- public --------------------------------------------------------------------------------

    @strawberry.mutation(
        description="Join the coalition: returns the member's new card number. No token needed."
    )
    async def register_member(
        self, info: strawberry.Info, input: RegisterMemberInput
    ) -> RegisterMemberResult:
        ctx: Context = info.context
        limits = rate_limits(ctx.request)
        retry_after = limits.hit(REGISTER, f"ip:{limits.client_ip(ctx.request)}")
        if retry_after is not None:
            return E.LimitExceededError(
                code=ErrorCode.RATE_LIMITED.value,
                message=f"too many registrations from this address: retry in {retry_after} s",
            )
        try:
            email = _text(input.email, "email", 254).lower()
            if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
                raise DomainValidation("email is not an e-mail address", field="email")
            if not 8 <= len(input.password) <= 256:
                raise DomainValidation("password must be 8..256 characters", field="password")
            name = _text(input.name, "name")
            # argon2 is deliberately slow: off the event loop, within the hashing budget.
            password_hash = await hashing(ctx.request, passwords.hash_password, input.password)
            async with ctx.unit_of_work() as conn:
                m = await members.create(conn, email=email, name=name, password_hash=password_hash)
        except DomainError as exc:
            return E.to_graphql(exc)
        return RegisterMemberSuccess(
            member=T.MemberCard(id=strawberry.ID(str(m.id)), card_number=m.card_number)
        )

    # -- partner -------------------------------------------------------------------------------

    @strawberry.mutation(
        description="Credit points for a purchase at the calling partner (scope points:earn)."
    )
    async def earn(self, info: strawberry.Info, input: EarnInput) -> EarnResult:
        async def work(ctx: Context) -> EarnSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            pid = ctx.principal.partner_id
            if not is_valid_card_number(input.card_number):
                raise DomainValidation(
                    "cardNumber must be 16 digits with a valid Luhn check digit", field="cardNumber"
                )
            money = input.amount.parse(positive=True)
            order_ref = _text(input.order_ref, "orderRef")
            category = (
                _text(input.category, "category", 100) if input.category is not None else None
            )
            cfg = await ctx.partner_config(pid)
            if money.currency != cfg.partner.currency:
                raise DomainValidation(f"amount must be in {cfg.partner.currency}", field="amount")
            # What the partner sent, nothing derived from it: a retry replays the original
            # result whatever the partner's rules have become since.
            digest = ledger.earn_request_digest(
                card_number=input.card_number,
                amount=money.amount,
                currency=money.currency,
                category=category,
                ref=order_ref,
            )
            at = utcnow()
            try:
                cfg.require_agreement(at)  # from the cached config: no round trip
                if cfg.rule is None:
                    raise DomainValidation("this partner has no earn rule yet")
                points = cfg.rule.points_for(money.amount, category)
                if points <= 0:
                    raise DomainValidation("this purchase earns no points", field="amount")
            except DomainError:
                # Refused under the terms in force now; the retry of an earlier earn is not.
                replay = await _earn_replay(ctx, input.idempotency_key, digest)
                if replay is None:
                    raise
                return _earned(replay)
            member_id = await _member_by_card(ctx, input.card_number)
            request = ledger.EarnRequest(
                actor=ctx.actor,
                key_space=ctx.key_space,
                digest=digest,
                at=at,
                idempotency_key=input.idempotency_key,
                member_id=member_id,
                partner_id=pid,
                points=points,
                hold_days=cfg.rule.hold_days,
                validity_months=ctx.settings.points_validity_months,
                ref=order_ref,
                amount=money.amount,
                currency=money.currency,
                category=category,
            )
            r = await ctx.earns.earn(request)  # group commit: see ledger.batch
            return _earned(r)

        return await guarded(info, "points:earn", work, kind="partner")

    @strawberry.mutation(
        description="Refund (part of) an order: earned points are reversed and points paid with are "
        "returned, pro rata (scope points:earn)."
    )
    async def refund(self, info: strawberry.Info, input: RefundInput) -> RefundResult:
        async def work(ctx: Context) -> RefundSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            money = input.amount.parse(positive=True)
            async with ctx.unit_of_work() as conn:
                r = await partner_refunds.refund(
                    conn,
                    actor=ctx.actor,
                    partner_id=ctx.principal.partner_id,
                    order_ref=_text(input.order_ref, "orderRef"),
                    amount=money,
                    idempotency_key=input.idempotency_key,
                )
            return RefundSuccess(
                refund=T.Refund(
                    id=strawberry.ID(str(r.id)),
                    order_ref=r.order_ref,
                    amount=T.Money.of(r.amount.amount, r.amount.currency),
                    points_reversed=r.points_reversed,
                    points_returned=r.points_returned,
                ),
                replayed=r.replayed,
            )

        return await guarded(info, "points:earn", work, kind="partner")

    @strawberry.mutation(
        description="Reserve points as payment with the member's redemption code (scope points:redeem)."
    )
    async def authorize_redemption(
        self, info: strawberry.Info, input: AuthorizeRedemptionInput
    ) -> AuthorizeRedemptionResult:
        async def work(ctx: Context) -> AuthorizeRedemptionSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            return await _authorize(ctx, ctx.principal.partner_id, input)

        return await guarded(info, "points:redeem", work, kind="partner")

    @strawberry.mutation(
        description="Take up to the held points; the rest is released (scope points:redeem)."
    )
    async def capture_redemption(
        self, info: strawberry.Info, input: CaptureRedemptionInput
    ) -> CaptureRedemptionResult:
        async def work(ctx: Context) -> CaptureRedemptionSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            at = utcnow()
            # Points are accepted only under an agreement in force at the capture.
            (await ctx.partner_config(ctx.principal.partner_id)).require_agreement(at)
            async with ctx.unit_of_work() as conn:
                r = await ledger.capture(
                    conn,
                    actor=ctx.actor,
                    key_space=ctx.key_space,
                    idempotency_key=input.idempotency_key,
                    partner_id=ctx.principal.partner_id,
                    hold_id=_hold_id(input.hold_id),
                    points=input.points,
                    at=at,
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
            async with ctx.unit_of_work() as conn:
                r = await ledger.void(
                    conn,
                    actor=ctx.actor,
                    key_space=ctx.key_space,
                    idempotency_key=input.idempotency_key,
                    partner_id=ctx.principal.partner_id,
                    hold_id=_hold_id(input.hold_id),
                )
                hold = await ledger.get_hold(conn, hold_id=r.hold_id)
            return VoidRedemptionSuccess(
                hold=T.Hold(
                    id=strawberry.ID(str(r.hold_id)),
                    points=hold.points,
                    expires_at=hold.expires_at,
                    status=hold.status,
                ),
                replayed=r.replayed,
            )

        return await guarded(info, "points:redeem", work, kind="partner")

    # -- member --------------------------------------------------------------------------------

    @strawberry.mutation(
        description="Issue a single-use code that lets a partner take points (member token)."
    )
    async def create_redemption_code(
        self, info: strawberry.Info, input: CreateRedemptionCodeInput | None = None
    ) -> CreateRedemptionCodeResult:
        input = input or CreateRedemptionCodeInput()

        async def work(ctx: Context) -> CreateRedemptionCodeSuccess:
            assert ctx.principal is not None and ctx.principal.member_id is not None
            pid = _parse_id(input.partner_id, "partnerId") if input.partner_id is not None else None
            async with ctx.unit_of_work() as conn:
                if pid is not None:
                    await partners.get(conn, partner_id=pid)
                c = await member_codes.create(
                    conn,
                    member_id=ctx.principal.member_id,
                    max_points=input.max_points,
                    partner_id=pid,
                )
            return CreateRedemptionCodeSuccess(
                redemption_code=T.RedemptionCode(
                    code=c.code,
                    expires_at=c.expires_at,
                    max_points=c.max_points,
                    partner_id=strawberry.ID(str(pid)) if pid else None,
                )
            )

        return await guarded(info, "member", work, kind="member")


def _earned(r: ledger.EarnResult) -> EarnSuccess:
    return EarnSuccess(
        transaction=T.EarnTransaction(
            id=strawberry.ID(str(r.transaction_id)),
            points=r.points,
            status=r.status,
            available_at=r.available_at,
            expires_at=r.expires_at,
        ),
        replayed=r.replayed,
    )


async def _earn_replay(ctx: Context, key: str, digest: str) -> ledger.EarnResult | None:
    """The original result of an earn under this key and request, if there was one."""
    async with ctx.engine.connect() as conn:
        stored = await ledger.stored_result(
            conn, key_space=ctx.key_space, operation="earn", key=key, digest=digest
        )
    return None if stored is None else ledger.EarnResult.from_json(stored, replayed=True)


def _hold_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise HoldNotFound("hold not found") from None


async def _member_by_card(ctx: Context, card_number: str) -> uuid.UUID:
    return await ctx.caches.member_by_card.member_id(ctx.pool, card_number)


async def _authorize(
    ctx: Context, partner_id: uuid.UUID, input: AuthorizeRedemptionInput
) -> AuthorizeRedemptionSuccess:
    """Code -> member, bill share check, then the ledger hold; the code is used up only if the
    hold is granted (one unit of work), and every presentation is audited."""
    money = input.purchase_amount.parse(positive=True)
    order_ref = _text(input.order_ref, "orderRef")
    if isinstance(input.points, bool) or input.points <= 0 or input.points > ledger.MAX_POINTS:
        raise DomainValidation(f"points must be between 1 and {ledger.MAX_POINTS}", field="points")
    cfg = await ctx.partner_config(partner_id)
    if money.currency != cfg.partner.currency:
        raise DomainValidation(
            f"purchaseAmount must be in {cfg.partner.currency}", field="purchaseAmount"
        )
    at = utcnow()
    # What the partner sent, nothing derived from it (see the earn).
    payload = {
        "code": member_codes.normalise(input.redemption_code),
        "points": input.points,
        "amount": money.amount,
        "currency": money.currency,
        "ref": order_ref,
    }
    # Counted (and committed) before the code is looked at: a burst cannot outrun the throttle.
    async with ctx.engine.begin() as conn:
        attempt = await member_codes.begin_attempt(conn, actor=ctx.actor, partner_id=partner_id)
    valid: bool | None = None  # what the code turned out to be (None: not decided by it)
    try:
        async with ctx.unit_of_work() as conn:
            claim = await ledger.claim_key(
                conn,
                actor=ctx.actor,
                key_space=ctx.key_space,
                operation="authorizeRedemption",
                key=input.idempotency_key,
                payload=payload,
            )
            if isinstance(claim, dict):
                return AuthorizeRedemptionSuccess(hold=_hold_from_json(claim), replayed=True)
            # The partner's terms in force now; checked after the replay, which answers as the
            # original did whatever they have become since.
            cfg.require_agreement(at)
            share = cfg.rule.max_redeem_share if cfg.rule else Decimal(1)
            # Points are worth POINT_VALUE each in the settlement currency; a partner's bill in
            # another currency is outside this check (single-currency coalitions are the norm).
            max_points = int(
                (money.amount * share / ctx.settings.point_value).to_integral_value(ROUND_FLOOR)
            )
            if input.points > max_points:
                raise member_codes.CodeLimitExceeded(
                    f"at most {max_points} points may pay this bill ({share:%} of it)"
                )
            hold_id = uuid7()
            code = await member_codes.consume(
                conn,
                code=input.redemption_code,
                partner_id=partner_id,
                points=input.points,
                hold_id=hold_id,
            )
            h = await ledger.authorize(
                conn,
                actor=ctx.actor,
                key_space=ctx.key_space,
                at=at,
                idempotency_key=input.idempotency_key,
                member_id=code.member_id,
                partner_id=partner_id,
                points=input.points,
                ref=order_ref,
                purchase_amount=money.amount,
                currency=money.currency,
                ttl=timedelta(minutes=ctx.settings.hold_timeout_minutes),
                hold_id=hold_id,
            )
            result = {
                "id": str(h.hold_id),
                "points": h.points,
                "expires_at": h.expires_at.isoformat(),
                "status": h.status,
            }
            await ledger.store_key_result(conn, claim_id=claim, result=result)
        valid = True
    except member_codes.InvalidRedemptionCode:
        valid = False
        raise
    finally:
        # Its own transaction: the audit of a refused code must survive the refusal's rollback.
        async with ctx.engine.begin() as conn:
            await member_codes.finish_attempt(conn, attempt_id=attempt, success=valid)
    return AuthorizeRedemptionSuccess(hold=_hold_from_json(result), replayed=False)


def _hold_from_json(data: dict[str, Any]) -> T.Hold:
    return T.Hold(
        id=strawberry.ID(data["id"]),
        points=int(data["points"]),
        expires_at=datetime.fromisoformat(data["expires_at"]),
        status=data["status"],
    )


# ---------------------------------------------------------------------------------------------
# Subscriptions (graphql-transport-ws on /graphql)


@strawberry.type(description="Live updates over the websocket at /graphql (graphql-transport-ws).")
class Subscription:
    @strawberry.subscription(
        description="The calling member's balance: now, then each time it changes (checked "
        "every `everySeconds`, 1..60). Member token in the handshake or in connection_init.",
        permission_classes=[IsMember],
    )
    async def my_balance(
        self, info: strawberry.Info, every_seconds: int = 5
    ) -> AsyncGenerator[T.Balance, None]:
        if not 1 <= every_seconds <= 60:
            raise GraphQLError(
                "everySeconds must be between 1 and 60", extensions={"code": "VALIDATION"}
            )
        ctx: Context = info.context
        assert ctx.principal is not None and ctx.principal.member_id is not None
        last = None
        while True:
            async with ctx.engine.connect() as conn:
                b = await ledger.balance(conn, member_id=ctx.principal.member_id)
            if b != last:
                last = b
                yield T.Balance(
                    available=b.available,
                    pending=b.pending,
                    on_hold=b.on_hold,
                    total=b.total,
                    debt=b.debt,
                )
            await asyncio.sleep(every_seconds)  # polling keeps NOTIFY off the ledger's commit path


# ---------------------------------------------------------------------------------------------
# The schema and its protections


MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 2000
DEFAULT_MAX_COST = Settings.model_fields["graphql_max_cost"].default


def _should_mask(error: GraphQLError) -> bool:
    """Mask everything unexpected; validation, permission and our own GraphQLErrors pass."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class _Schema(strawberry.Schema):
    def get_fields(self, type_definition: Any) -> list[Any]:
        """Every field with arguments checks them before its resolver (gateway.graphql.inputs)."""
        return add_input_checks(super().get_fields(type_definition))

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Log unexpected errors in full (they are masked for the client); expected ones
        (validation, permissions) are the caller's business, not the operator's."""
        from strawberry.utils.logging import StrawberryLogger

        for error in errors:
            if _should_mask(error):
                StrawberryLogger.error(error, execution_context)


def build_schema(*, introspection: bool, max_cost: int = DEFAULT_MAX_COST) -> strawberry.Schema:
    """The schema with its limits. Validation rules are built ONCE here, so the validation
    cache (keyed by the rules) hits across requests."""
    from graphql.validation import NoSchemaIntrospectionCustomRule

    rules = [  # cost, depth and aliases in one walk (see gateway.graphql.cost)
        query_limits_rule(max_cost=max_cost, max_depth=MAX_DEPTH, max_aliases=MAX_ALIASES),
    ]
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    rules_tuple = list(rules)
    return _Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=list(E.ERROR_TYPES),
        exception_handlers=[RefusedInputHandler()],
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: ParserCache(maxsize=512),
            lambda: AddValidationRules(rules_tuple),
            lambda: ValidationCache(maxsize=512),
            lambda: MaskErrors(should_mask_error=_should_mask, error_message="Unexpected error."),
        ],
    )


def schema_sdl() -> str:
    """The schema as SDL, as committed in `schema.graphql`."""
    return build_schema(introspection=True).as_str() + "\n"
