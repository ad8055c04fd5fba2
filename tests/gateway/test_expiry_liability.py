"""Issue 9 item 4: the expiry job never runs in the future, and after any expiry run the
members' balances and the points liability agree."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from core.clock import utcnow
from ledger import service as ledger
from ledger.errors import LedgerValidation
from tests.gateway.gql_helpers import ME, gql, operator_token, register_and_login, setup_partner

LIABILITY = "query { pointsLiability { points issuer { id } } }"


async def _earn(engine: AsyncEngine, member: str, partner: str, points: int, days_ago: int) -> None:
    async with engine.begin() as conn:
        await ledger.earn(
            conn,
            actor=f"partner:{partner}",
            idempotency_key=f"exp-{secrets.token_hex(6)}",
            member_id=uuid.UUID(member),
            partner_id=uuid.UUID(partner),
            points=points,
            at=utcnow() - timedelta(days=days_ago),
        )


async def _figures(client, op: str, partner: str, tokens: list[str]) -> tuple[int, int]:
    """(sum of the members' balance totals, the partner's line of the points liability)."""
    totals = 0
    for token in tokens:
        me = (await gql(client, ME, {"first": 1}, token))["me"]
        totals += me["balance"]["total"]
    lines = (await gql(client, LIABILITY, None, op))["pointsLiability"]
    liability = sum(x["points"] for x in lines if x["issuer"]["id"] == partner)
    return totals, liability


async def test_balances_and_liability_agree_after_an_expiry_run_in_the_past(client, engine) -> None:
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Expiry " + secrets.token_hex(3))
    members = [await register_and_login(client) for _ in range(3)]
    a, b, c = members
    # 36-month validity: earned 40 months ago (expired long ago), 36 months + 10 days ago
    # (expired 10 days ago), and recent lots.
    await _earn(engine, a.id, partner.id, 100, days_ago=40 * 31)
    await _earn(engine, a.id, partner.id, 50, days_ago=30)
    await _earn(engine, b.id, partner.id, 200, days_ago=3 * 365 + 10 + 1)
    await _earn(engine, b.id, partner.id, 30, days_ago=2)
    await _earn(engine, c.id, partner.id, 70, days_ago=37 * 31)
    tokens = [m.token for m in members]

    # The job runs as of 20 days ago: a's and c's old lots are swept, b's expired since.
    report = await ledger.expire_points(engine, at=utcnow() - timedelta(days=20))
    assert report.points == 170  # the module has a database of its own: only these lots
    totals, liability = await _figures(client, op, partner.id, tokens)
    assert (totals, liability) == (80, 80)

    # Run up to now: the same figures (b's lot was gone already; now it is swept).
    await ledger.expire_points(engine)
    assert await _figures(client, op, partner.id, tokens) == (80, 80)


async def test_expiry_in_the_future_is_refused_by_the_service(client, engine) -> None:
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Future " + secrets.token_hex(3))
    m = await register_and_login(client)
    await _earn(engine, m.id, partner.id, 300, days_ago=1)
    later = utcnow() + timedelta(days=4 * 365)  # every lot of today has expired by then
    with pytest.raises(LedgerValidation, match="in the future"):
        await ledger.expire_points(engine, at=later)
    with pytest.raises(LedgerValidation, match="in the future"):
        await ledger.release_expired_holds(engine, at=later)
    assert await _figures(client, op, partner.id, [m.token]) == (300, 300)


def test_expiry_in_the_future_is_refused_by_the_cli(monkeypatch) -> None:
    from gateway import cli

    # Refused before anything is read or written: the command must not reach the database.
    monkeypatch.setattr(cli, "_url", lambda: pytest.fail("connected to the database"))
    runner = CliRunner()
    for at in ("2999-08-30", f"{utcnow() + timedelta(minutes=5):%Y-%m-%dT%H:%M:%S}"):
        result = runner.invoke(cli.app, ["expire", "--at", at])
        assert result.exit_code == 2, result.output
        assert "is in the future" in result.output
    result = runner.invoke(cli.app, ["settle", "--at", "2999-08-30"])
    assert result.exit_code == 2 and "is in the future" in result.output
