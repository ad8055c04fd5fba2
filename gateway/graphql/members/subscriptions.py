"""Member subscriptions (graphql-transport-ws on /graphql)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import strawberry
from graphql import GraphQLError

from gateway.graphql import types as T
from gateway.graphql.access import IsMember
from gateway.graphql.context import Context
from ledger import service as ledger


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
