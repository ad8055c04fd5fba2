"""Access and abuse (issue 9): throttles that hold under bursts."""

from __future__ import annotations

import asyncio
import secrets

from members import codes as member_codes
from tests.gateway.gql_helpers import AUTHORIZE, gql, key, operator_token, rub, setup_partner

# ---- item 7: the redemption-code throttle holds under a burst ------------------------------


async def test_a_burst_of_bad_redemption_codes_is_counted_one_by_one(client, engine, monkeypatch):
    monkeypatch.setattr(member_codes, "THROTTLE_FAILURES", 5)
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Guessed Till")

    async def guess() -> str:
        code = "".join(secrets.choice("0123456789") for _ in range(12))
        variables = {
            "input": {
                "redemptionCode": code,
                "points": 1,
                "purchaseAmount": rub("10"),
                "orderRef": "o",
                "idempotencyKey": key(),
            }
        }
        d = await gql(client, AUTHORIZE, variables, partner.token)
        return d["authorizeRedemption"]["code"]  # type: ignore[no-any-return]

    codes = await asyncio.gather(*(guess() for _ in range(20)))
    assert codes.count("INVALID_REDEMPTION_CODE") == 5
    assert codes.count("LIMIT_EXCEEDED") == 15


async def test_code_throttle_counts_attempts_before_their_outcome(engine, monkeypatch):
    """On separate connections: the count and the insert are serialised per client, and a
    valid code (or a request the code did not decide) stops counting."""
    monkeypatch.setattr(member_codes, "THROTTLE_FAILURES", 3)
    actor = f"client:burst-{secrets.token_hex(4)}"

    async def begin() -> int | None:
        try:
            async with engine.begin() as conn:
                return await member_codes.begin_attempt(conn, actor=actor, partner_id=None)
        except member_codes.CodeLimitExceeded:
            return None

    attempts = [a for a in await asyncio.gather(*(begin() for _ in range(10))) if a is not None]
    assert len(attempts) == 3
    async with engine.begin() as conn:
        await member_codes.finish_attempt(conn, attempt_id=attempts[0], success=True)
        await member_codes.finish_attempt(conn, attempt_id=attempts[1], success=None)
        await member_codes.finish_attempt(conn, attempt_id=attempts[2], success=False)
    again = [a for a in await asyncio.gather(*(begin() for _ in range(10))) if a is not None]
    assert len(again) == 2
