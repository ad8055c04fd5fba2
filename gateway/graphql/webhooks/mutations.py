"""Webhooks (a partner's own events): create, list, delete, the delivery log, redeliver. Each
resolver calls one use case of `loyalty.webhooks`."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry
from graphql import GraphQLError

from core.errors import DomainError
from gateway.graphql import errors as E
from gateway.graphql import types as T
from gateway.graphql.access import authenticated, forbidden, guarded
from gateway.graphql.context import Context
from loyalty import webhooks
from partners.webhooks import DeliveryRecord, WebhookRecord


@strawberry.type(description="A partner's endpoint for its events.")
class Webhook:
    id: strawberry.ID = strawberry.field(description="Webhook id.")
    url: str = strawberry.field(description="Where events are POSTed.")
    events: list[str] = strawberry.field(description="The event types it receives.")
    created_at: datetime = strawberry.field(description="When it was created.")
    secret: str | None = strawberry.field(
        description="The signing secret (HMAC-SHA256 key of `Coalition-Signature`): only in "
        "createWebhook's result, shown once."
    )

    @classmethod
    def of(cls, w: WebhookRecord) -> Webhook:
        return cls(
            id=strawberry.ID(str(w.id)),
            url=w.url,
            events=list(w.events),
            created_at=w.created_at,
            secret=w.secret,
        )


@strawberry.type(description="One event sent (or to be sent) to one webhook, and how it went.")
class WebhookDelivery:
    id: strawberry.ID = strawberry.field(description="Delivery id (for redeliverWebhook).")
    event_id: strawberry.ID = strawberry.field(
        description="The event's id: the same on every attempt and redelivery."
    )
    event_type: str = strawberry.field(description="e.g. earn.recorded.")
    status: str = strawberry.field(
        description="pending (being retried), delivered (a 2xx answer) or failed (24 hours of "
        "retries without one, or the webhook was deleted)."
    )
    attempts: int = strawberry.field(description="Attempts so far.")
    next_attempt_at: datetime = strawberry.field(description="When a pending one is tried next.")
    last_attempt_at: datetime | None = strawberry.field(description="The latest attempt.")
    last_status_code: int | None = strawberry.field(
        description="The HTTP status of the latest attempt (null: no answer)."
    )
    last_error: str | None = strawberry.field(description="Why the latest attempt failed.")
    delivered_at: datetime | None = strawberry.field(description="When it was delivered.")
    created_at: datetime = strawberry.field(description="When it was queued.")

    @classmethod
    def of(cls, d: DeliveryRecord) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(str(d.id)),
            event_id=strawberry.ID(str(d.event_id)),
            event_type=d.event_type,
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_attempt_at=d.last_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            delivered_at=d.delivered_at,
            created_at=d.created_at,
        )


@strawberry.input(description="A new webhook for the calling partner's own events.")
class CreateWebhookInput:
    url: str = strawberry.field(
        description="https URL whose host resolves to public addresses only (http to a "
        "loopback address only with WEBHOOK_ALLOW_INSECURE=1)."
    )
    events: list[str] = strawberry.field(
        description="Event types: earn.recorded, refund.recorded, redemption.authorized, "
        "redemption.captured, redemption.voided, bonus.awarded, settlement.closed."
    )


@strawberry.input(description="Stop a webhook.")
class DeleteWebhookInput:
    webhook_id: strawberry.ID = strawberry.field(description="The webhook.")


@strawberry.input(description="Send a delivery's event again.")
class RedeliverWebhookInput:
    delivery_id: strawberry.ID = strawberry.field(
        description="The delivery (from webhookDeliveries)."
    )


@strawberry.type(description="The webhook exists; keep its secret, it is not shown again.")
class CreateWebhookSuccess:
    webhook: Webhook = strawberry.field(description="The webhook, with its secret.")


@strawberry.type(description="The webhook is stopped.")
class DeleteWebhookSuccess:
    webhook_id: strawberry.ID = strawberry.field(description="The stopped webhook.")


@strawberry.type(description="A new delivery of the same event is queued, due now.")
class RedeliverWebhookSuccess:
    delivery: WebhookDelivery = strawberry.field(description="The new delivery.")


CreateWebhookResult = E.result_union(
    "CreateWebhookResult", CreateWebhookSuccess, webhooks.CREATE_ERRORS | E.GUARDED
)
DeleteWebhookResult = E.result_union(
    "DeleteWebhookResult", DeleteWebhookSuccess, webhooks.CHANGE_ERRORS | E.GUARDED
)
RedeliverWebhookResult = E.result_union(
    "RedeliverWebhookResult", RedeliverWebhookSuccess, webhooks.CHANGE_ERRORS | E.GUARDED
)


def _partner(ctx: Context) -> uuid.UUID:
    principal = authenticated(ctx)
    if principal.kind != "partner" or principal.partner_id is None:
        raise forbidden("webhooks need a partner token (a partner's own events)")
    return principal.partner_id


def _invalid(message: str, field: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "VALIDATION", "field": field})


@strawberry.type(description="Webhook queries.")
class WebhooksQuery:
    @strawberry.field(description="The calling partner's webhooks (partner token).")
    async def webhooks(self, info: strawberry.Info) -> list[Webhook]:
        pid = _partner(info.context)
        return [Webhook.of(w) for w in await webhooks.listed(info.context, partner_id=pid)]

    @strawberry.field(
        description="A webhook's deliveries, newest first (Relay connection; partner token, "
        "its own webhooks; an unknown or another partner's webhook has none)."
    )
    async def webhook_deliveries(
        self,
        info: strawberry.Info,
        webhook_id: strawberry.ID,
        first: int = 20,
        after: str | None = None,
    ) -> T.Connection[WebhookDelivery]:
        ctx: Context = info.context
        pid = _partner(ctx)
        if not 0 < first <= webhooks.MAX_PAGE:
            raise _invalid(f"first must be between 1 and {webhooks.MAX_PAGE}", "first")
        try:
            cursor = T.decode_id_cursor(after)
            rows = await webhooks.deliveries(
                ctx, partner_id=pid, webhook_id=webhook_id, first=first + 1, after=cursor
            )
        except DomainError as exc:
            raise _invalid(exc.message, str(exc.details.get("field", "after"))) from None
        return T.page(
            rows,
            first=first,
            after=None if cursor is None else 0,
            key=lambda d: d.id.int,
            node=WebhookDelivery.of,
        )


@strawberry.type(description="Webhook mutations.")
class WebhooksMutation:
    @strawberry.mutation(
        description="Create a webhook for the calling partner's own events; the answer holds "
        "its signing secret, shown once."
    )
    async def create_webhook(
        self, info: strawberry.Info, input: CreateWebhookInput
    ) -> CreateWebhookResult:
        async def work(ctx: Context) -> CreateWebhookSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            w = await webhooks.create(
                ctx,
                partner_id=ctx.principal.partner_id,
                url=input.url,
                events=input.events,
                actor=ctx.actor,
            )
            return CreateWebhookSuccess(webhook=Webhook.of(w))

        return await guarded(info, _PARTNER_SCOPES, work, kind="partner")

    @strawberry.mutation(description="Stop one of the calling partner's webhooks.")
    async def delete_webhook(
        self, info: strawberry.Info, input: DeleteWebhookInput
    ) -> DeleteWebhookResult:
        async def work(ctx: Context) -> DeleteWebhookSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            await webhooks.delete(
                ctx, partner_id=ctx.principal.partner_id, webhook_id=input.webhook_id
            )
            return DeleteWebhookSuccess(webhook_id=input.webhook_id)

        return await guarded(info, _PARTNER_SCOPES, work, kind="partner")

    @strawberry.mutation(
        description="Send a delivery's event again, now (same event id), to its webhook."
    )
    async def redeliver_webhook(
        self, info: strawberry.Info, input: RedeliverWebhookInput
    ) -> RedeliverWebhookResult:
        async def work(ctx: Context) -> RedeliverWebhookSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            d = await webhooks.redeliver(
                ctx, partner_id=ctx.principal.partner_id, delivery_id=input.delivery_id
            )
            return RedeliverWebhookSuccess(delivery=WebhookDelivery.of(d))

        return await guarded(info, _PARTNER_SCOPES, work, kind="partner")


# Any partner client may manage its webhooks: the events are its own.
_PARTNER_SCOPES = ("points:earn", "points:redeem", "catalog:write", "settlement:read")
