"""Bonus queries."""

from __future__ import annotations

import strawberry

from gateway.graphql.access import IsOperator
from gateway.graphql.bonuses.types import BonusRules
from loyalty import bonuses


@strawberry.type(description="Bonus queries.")
class BonusesQuery:
    @strawberry.field(
        description="The bonus rules in force (operator).", permission_classes=[IsOperator]
    )
    async def bonus_rules(self, info: strawberry.Info) -> BonusRules:
        return BonusRules.of(await bonuses.rules(info.context))
