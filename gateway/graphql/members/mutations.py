"""Member mutations: joining the coalition."""

from __future__ import annotations

from collections.abc import Callable

import strawberry

from core.errors import DomainError, ErrorCode
from gateway.graphql import errors as E
from gateway.graphql import types as T
from gateway.graphql.context import Context
from gateway.ratelimit import REGISTER, hashing, rate_limits
from loyalty import register as registration


@strawberry.input(description="A new member of the coalition.")
class RegisterMemberInput:
    email: str = strawberry.field(description="Login e-mail (unique).")
    password: str = strawberry.field(description="At least 8 characters.")
    name: str = strawberry.field(description="Display name.")
    referral_code: str | None = strawberry.field(
        default=None,
        description="A member's referral code (`me { referralCode }`), if a member invited "
        "them: both get the referral bonus once the new member's first earn is recorded. An "
        "unknown code is refused (VALIDATION) and nothing is created.",
    )


@strawberry.type(description="The member is registered.")
class RegisterMemberSuccess:
    member: T.MemberCard = strawberry.field(description="The new member and their card number.")


RegisterMemberResult = E.result_union(
    "RegisterMemberResult", RegisterMemberSuccess, registration.ERRORS | {ErrorCode.RATE_LIMITED}
)


@strawberry.type(description="Member mutations.")
class MembersMutation:
    @strawberry.mutation(
        description="Join the coalition: returns the member's new card number. No token needed."
    )
    async def register_member(
        self, info: strawberry.Info, input: RegisterMemberInput
    ) -> RegisterMemberResult:
        ctx: Context = info.context
        limits = rate_limits(ctx.request)
        retry_after = await limits.hit(REGISTER, f"ip:{limits.client_ip(ctx.request)}")
        if retry_after is not None:
            return E.LimitExceededError(
                code=ErrorCode.RATE_LIMITED.value,
                message=f"too many registrations from this address: retry in {retry_after} s",
            )

        async def hash_off_loop(fn: Callable[[str], str], password: str) -> str:
            # argon2 is deliberately slow: off the event loop, within the hashing budget.
            return await hashing(ctx.request, fn, password)

        try:
            m = await registration.register(
                ctx,
                email=input.email,
                password=input.password,
                name=input.name,
                hashing=hash_off_loop,
                referral_code=input.referral_code,
            )
        except DomainError as exc:
            return E.to_graphql(exc)
        return RegisterMemberSuccess(
            member=T.MemberCard(id=strawberry.ID(str(m.id)), card_number=m.card_number)
        )
