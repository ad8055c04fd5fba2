"""The operator's own points through the API: a matrix cell and a liability line with
`issuer: null`, the period's operator totals (operator only), rewards in the statements."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

from members import service as members
from tests.gateway.gql_helpers import gql, key, operator_token, setup_partner
from tests.settlement.helpers import bonus, earn, reward

MONTH = datetime(2021, 5, 1, tzinfo=UTC)
RUN = """
mutation($input: RunSettlementInput!) { runSettlement(input: $input) { __typename
  ... on RunSettlementSuccess { period { id operatorIssuedPoints operatorBreakagePoints
        operatorBreakageValue { amount } breakagePoints
        statements { partner { id } issuedPoints redeemedPoints issuanceCharge { amount }
                     reimbursement { amount } }
        matrix { issuer { id } redeemer { id } points value { amount } } } }
  ... on Error { code message } } }
"""
PERIOD = """
query($id: ID!) { settlementPeriod(id: $id) { operatorIssuedPoints operatorBreakageValue { amount }
  matrix { issuer { id } redeemer { id } points } } }
"""
CLOSE = """
mutation($input: CloseSettlementPeriodInput!) { closeSettlementPeriod(input: $input) {
  ... on CloseSettlementPeriodSuccess { period { status verification { hashMatches ledgerMatches } } }
  ... on Error { code message } } }
"""
LIABILITY = "{ pointsLiability { issuer { id } points issuePrice value { amount } } }"


async def test_operator_points_have_no_issuer_in_the_api(client, engine) -> None:
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Issuer A")  # prices 1.20 / 0.95
    r = await setup_partner(client, op, name="Rewards R")
    async with engine.begin() as conn:
        m = (await members.create(conn, email=f"{key()}@example.com", name="M")).id
    days = [MONTH + timedelta(days=d) for d in (1, 2, 3)]
    await bonus(engine, m, None, 150, days[0], reason="signup", validity_months=600)
    await earn(engine, m, uuid.UUID(a.id), 50, days[1], validity_months=600)
    # Earliest expiry first: 120 of the sign-up points (they expire first).
    await reward(engine, m, uuid.UUID(r.id), 120, days[2], ref="gift-1")
    rng = {
        "periodStart": MONTH.isoformat(),
        "periodEnd": datetime(2021, 6, 1, tzinfo=UTC).isoformat(),
    }

    run = (await gql(client, RUN, {"input": rng}, op))["runSettlement"]
    assert run["__typename"] == "RunSettlementSuccess", run
    period = run["period"]
    st = {s["partner"]["id"]: s for s in period["statements"]}
    assert (st[a.id]["issuedPoints"], st[a.id]["issuanceCharge"]["amount"]) == (50, "60.00")
    assert (st[r.id]["redeemedPoints"], st[r.id]["reimbursement"]["amount"]) == (120, "114.00")
    assert [
        (c["issuer"], c["redeemer"]["id"], c["points"], c["value"]["amount"])
        for c in period["matrix"]
    ] == [(None, r.id, 120, "114.00")]
    assert (period["operatorIssuedPoints"], period["operatorBreakagePoints"]) == (150, 0)
    assert period["operatorBreakageValue"]["amount"] == "0.00"

    # R sees the operator's cell in its column, not the operator's totals; A sees no cell.
    mine = (await gql(client, PERIOD, {"id": period["id"]}, r.token))["settlementPeriod"]
    assert mine["operatorIssuedPoints"] is None and mine["operatorBreakageValue"] is None
    assert [(c["issuer"], c["redeemer"]["id"]) for c in mine["matrix"]] == [(None, r.id)]
    theirs = (await gql(client, PERIOD, {"id": period["id"]}, a.token))["settlementPeriod"]
    assert theirs["matrix"] == []

    # The liability: the operator's 30 points left at the face value of a point (POINT_VALUE).
    lines = (await gql(client, LIABILITY, {}, op))["pointsLiability"]
    assert [(x["issuer"], x["points"], x["issuePrice"], x["value"]["amount"]) for x in lines] == [
        ({"id": a.id}, 50, "1.20000000", "60.00"),
        (None, 30, "1.00000000", "30.00"),
    ]
    body = (
        await client.get("/settlement/liability.csv", headers={"Authorization": f"Bearer {op}"})
    ).text
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [(x["issuer_id"], x["issuer"], x["points"], x["value"]) for x in rows] == [
        (a.id, "Issuer A", "50", "60.00"),
        ("", "operator", "30", "30.00"),
    ]

    closed = (await gql(client, CLOSE, {"input": {"periodId": period["id"]}}, op))[
        "closeSettlementPeriod"
    ]
    assert closed["period"] == {
        "status": "closed",
        "verification": {"hashMatches": True, "ledgerMatches": True},
    }
