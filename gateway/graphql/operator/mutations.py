"""The operator's changes to partner OAuth clients: disable one, rotate its secret."""

from __future__ import annotations

import strawberry

from gateway.graphql import errors as E
from gateway.graphql.access import guarded
from gateway.graphql.context import Context
from gateway.graphql.operator.types import PartnerClient
from loyalty import terms


@strawberry.input(description="A partner's OAuth client.")
class DisablePartnerClientInput:
    client_id: str = strawberry.field(description="OAuth client_id.")


@strawberry.input(description="A partner's OAuth client and how long its old secret still works.")
class RotatePartnerClientSecretInput:
    client_id: str = strawberry.field(description="OAuth client_id.")
    grace_hours: int = strawberry.field(
        default=24, description="Hours the current secret keeps working (0 to 720)."
    )


@strawberry.type(description="The client's credentials are refused from now on.")
class DisablePartnerClientSuccess:
    client: PartnerClient = strawberry.field(description="The client.")


@strawberry.type(description="A new secret: store it now, it is not shown again.")
class RotatePartnerClientSecretSuccess:
    client_id: str = strawberry.field(description="OAuth client_id.")
    client_secret: str = strawberry.field(description="The new client_secret (shown once).")
    scopes: list[str] = strawberry.field(description="Scopes granted.")


DisablePartnerClientResult = E.result_union(
    "DisablePartnerClientResult",
    DisablePartnerClientSuccess,
    terms.CHANGE_CLIENT_ERRORS | E.GUARDED,
)
RotatePartnerClientSecretResult = E.result_union(
    "RotatePartnerClientSecretResult",
    RotatePartnerClientSecretSuccess,
    terms.CHANGE_CLIENT_ERRORS | E.GUARDED,
)


@strawberry.type(description="Operator mutations of partner clients.")
class OperatorMutation:
    @strawberry.mutation(
        description="Stop accepting a partner client's credentials; tokens already issued "
        "live out their minutes (operator)."
    )
    async def disable_partner_client(
        self, info: strawberry.Info, input: DisablePartnerClientInput
    ) -> DisablePartnerClientResult:
        async def work(ctx: Context) -> DisablePartnerClientSuccess:
            record = await terms.disable_partner_client(ctx, client_id=input.client_id)
            return DisablePartnerClientSuccess(client=PartnerClient.of(record))

        return await guarded(info, "operator", work)

    @strawberry.mutation(
        description="A new secret for a partner client, shown once; the current one keeps "
        "working for graceHours (operator)."
    )
    async def rotate_partner_client_secret(
        self, info: strawberry.Info, input: RotatePartnerClientSecretInput
    ) -> RotatePartnerClientSecretResult:
        async def work(ctx: Context) -> RotatePartnerClientSecretSuccess:
            created = await terms.rotate_partner_client_secret(
                ctx, client_id=input.client_id, grace_hours=input.grace_hours
            )
            return RotatePartnerClientSecretSuccess(
                client_id=created.client_id,
                client_secret=created.client_secret,
                scopes=list(created.scopes),
            )

        return await guarded(info, "operator", work)
