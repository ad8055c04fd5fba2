"""Tier queries."""

from __future__ import annotations

import strawberry

from gateway.graphql.tiers.types import TierLadder
from loyalty import tiers


@strawberry.type(description="Tier queries.")
class TiersQuery:
    @strawberry.field(
        description="The tier ladder in force, lowest first; no token needed (the member app "
        "shows it)."
    )
    async def tiers(self, info: strawberry.Info) -> TierLadder:
        return TierLadder.of(await tiers.ladder(info.context))
