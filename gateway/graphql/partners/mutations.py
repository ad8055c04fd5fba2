"""The operator's partner mutations: partners, agreements, earn rules, OAuth clients."""

from __future__ import annotations

import strawberry

from gateway.graphql import errors as E
from gateway.graphql import types as T
from gateway.graphql.access import guarded
from gateway.graphql.context import Context
from gateway.graphql.partners.inputs import (
    CreatePartnerClientInput,
    CreatePartnerInput,
    SetAgreementInput,
    SetEarnRuleInput,
)
from loyalty import terms


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


CreatePartnerResult = E.result_union(
    "CreatePartnerResult", CreatePartnerSuccess, terms.CREATE_PARTNER_ERRORS | E.GUARDED
)


SetAgreementResult = E.result_union(
    "SetAgreementResult", SetAgreementSuccess, terms.SET_AGREEMENT_ERRORS | E.GUARDED
)


SetEarnRuleResult = E.result_union(
    "SetEarnRuleResult", SetEarnRuleSuccess, terms.SET_EARN_RULE_ERRORS | E.GUARDED
)


CreatePartnerClientResult = E.result_union(
    "CreatePartnerClientResult", CreatePartnerClientSuccess, terms.CREATE_CLIENT_ERRORS | E.GUARDED
)


@strawberry.type(description="Partner mutations (operator).")
class PartnersMutation:
    @strawberry.mutation(description="Register a partner merchant (operator).")
    async def create_partner(
        self, info: strawberry.Info, input: CreatePartnerInput
    ) -> CreatePartnerResult:
        async def work(ctx: Context) -> CreatePartnerSuccess:
            p = await terms.create_partner(
                ctx, name=input.name, category=input.category, currency=input.currency
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
            a = await terms.set_agreement(
                ctx,
                actor=ctx.actor,
                partner_id=input.partner_id,
                issue_price=input.issue_price,
                redemption_price=input.redemption_price,
                effective_from=input.effective_from,
            )
            return SetAgreementSuccess(agreement=T.Agreement.of(a))

        return await guarded(info, "operator", work)

    @strawberry.mutation(description="Put a partner's earn rule in force (operator).")
    async def set_earn_rule(
        self, info: strawberry.Info, input: SetEarnRuleInput
    ) -> SetEarnRuleResult:
        async def work(ctx: Context) -> SetEarnRuleSuccess:
            rule = await terms.set_earn_rule(
                ctx,
                actor=ctx.actor,
                partner_id=input.partner_id,
                base_rate=input.base_rate,
                category_rates=input.category_rates,
                hold_days=input.hold_days,
                max_redeem_share=input.max_redeem_share,
                max_points_per_transaction=input.max_points_per_transaction,
            )
            return SetEarnRuleSuccess(earn_rule=T.EarnRule.of(rule))

        return await guarded(info, "operator", work)

    @strawberry.mutation(
        description="Create an OAuth client for a partner; the secret is shown once (operator)."
    )
    async def create_partner_client(
        self, info: strawberry.Info, input: CreatePartnerClientInput
    ) -> CreatePartnerClientResult:
        async def work(ctx: Context) -> CreatePartnerClientSuccess:
            created = await terms.create_partner_client(
                ctx, partner_id=input.partner_id, scopes=input.scopes
            )
            return CreatePartnerClientSuccess(
                client_id=created.client_id,
                client_secret=created.client_secret,
                scopes=list(created.scopes),
            )

        return await guarded(info, "operator", work)
