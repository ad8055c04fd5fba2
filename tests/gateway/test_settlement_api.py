"""Settlement through HTTP: runSettlement, settlementPeriods (Relay), statements, matrix,
payment instructions, closeSettlementPeriod with its seal; partner views; files; reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.clock import utcnow
from tests.gateway.gql_helpers import (
    AUTHORIZE,
    CAPTURE,
    CREATE_CODE,
    EARN,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

PERIOD_FIELDS = """
  id periodStart periodEnd status contentHash operatorMargin { amount currency }
  statements { partner { id name } issuedPoints reversedPoints redeemedPoints returnedPoints
               issuanceCharge { amount } reimbursement { amount } net { amount currency } }
  matrix { issuer { id } redeemer { id } points value { amount } }
  paymentInstructions { partner { id } payer payee amount { amount } }
"""
RUN = (
    "mutation($input: RunSettlementInput!) { runSettlement(input: $input) { __typename "
    "... on RunSettlementSuccess { period {"
    + PERIOD_FIELDS
    + "} } ... on Error { code message } } }"
)
CLOSE = (
    "mutation($input: CloseSettlementPeriodInput!) { closeSettlementPeriod(input: $input) { __typename "
    "... on CloseSettlementPeriodSuccess { period { id status contentHash verification { sealed hashMatches ledgerMatches } } } "
    "... on Error { code message } } }"
)
PERIODS = (
    "query($first: Int!, $after: String) { settlementPeriods(first: $first, after: $after) { "
    "edges { cursor node {" + PERIOD_FIELDS + "} } pageInfo { hasNextPage endCursor } } }"
)
RECONCILE = """
mutation($input: ReconcileStatementInput!) { reconcileStatement(input: $input) { __typename
  ... on ReconcileStatementSuccess { report { matched mismatched missingInLedger missingInFile
        lines { status orderRef kind filePoints ledgerPoints } } }
  ... on Error { code message } } }
"""


async def test_settlement_through_the_api(client, engine):
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Settle A", base_rate="0.2")  # prices 1.20 / 0.95
    b = await setup_partner(client, op, name="Settle B")
    c = await setup_partner(client, op, name="Settle C")
    m = await register_and_login(client)
    start = utcnow() - timedelta(seconds=1)
    await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": m.card,
                "amount": rub("1500.00"),
                "orderRef": "SA-1",
                "idempotencyKey": key(),
            }
        },
        a.token,
    )
    code = (await gql(client, CREATE_CODE, {"input": {}}, m.token))["createRedemptionCode"]["code"]
    hold = await gql(
        client,
        AUTHORIZE,
        {
            "input": {
                "redemptionCode": code,
                "points": 120,
                "purchaseAmount": rub("500"),
                "orderRef": "SB-1",
                "idempotencyKey": key(),
            }
        },
        b.token,
    )
    hold_id = hold["authorizeRedemption"]["hold"]["id"]
    await gql(
        client,
        CAPTURE,
        {"input": {"holdId": hold_id, "points": 100, "idempotencyKey": key()}},
        b.token,
    )
    end = utcnow()  # after every event above, and not in the future once the run starts
    rng = {"periodStart": start.isoformat(), "periodEnd": end.isoformat()}

    run = (await gql(client, RUN, {"input": rng}, op))["runSettlement"]
    assert run["__typename"] == "RunSettlementSuccess", run
    period = run["period"]
    by_partner = {s["partner"]["id"]: s for s in period["statements"]}
    sa, sb = by_partner[a.id], by_partner[b.id]
    assert (sa["issuedPoints"], sa["issuanceCharge"]["amount"], sa["net"]["amount"]) == (
        300,
        "360.00",
        "-360.00",
    )
    assert (sb["redeemedPoints"], sb["reimbursement"]["amount"], sb["net"]["amount"]) == (
        100,
        "95.00",
        "95.00",
    )
    assert period["operatorMargin"]["amount"] == "265.00"  # -(sum of nets)
    assert {
        (x["issuer"]["id"], x["redeemer"]["id"], x["points"], x["value"]["amount"])
        for x in period["matrix"]
    } == {(a.id, b.id, 100, "95.00")}
    pay = {
        p["partner"]["id"]: (p["payer"], p["payee"], p["amount"]["amount"])
        for p in period["paymentInstructions"]
    }
    assert pay[a.id] == ("partner", "operator", "360.00") and pay[b.id] == (
        "operator",
        "partner",
        "95.00",
    )
    # Running the same range again is idempotent.
    again = (await gql(client, RUN, {"input": rng}, op))["runSettlement"]["period"]
    assert again["id"] == period["id"] and again["statements"] == period["statements"]

    # Partner views: B sees its own statement and the cell in its column; C sees nothing of theirs.
    page = (await gql(client, PERIODS, {"first": 50}, b.token))["settlementPeriods"]
    mine = next(e["node"] for e in page["edges"] if e["node"]["id"] == period["id"])
    assert [s["partner"]["id"] for s in mine["statements"]] == [b.id]
    assert [(x["issuer"]["id"], x["redeemer"]["id"]) for x in mine["matrix"]] == [(a.id, b.id)]
    assert mine["operatorMargin"] is None
    theirs = next(
        e["node"]
        for e in (await gql(client, PERIODS, {"first": 50}, c.token))["settlementPeriods"]["edges"]
        if e["node"]["id"] == period["id"]
    )
    assert theirs["statements"] == [] and theirs["matrix"] == []  # C had no activity
    earn_only = await setup_partner(client, op, name="Settle D", scopes=["points:earn"])
    for token in (m.token, earn_only.token):  # a member; a partner lacking settlement:read
        r = await client.post(
            "/graphql",
            json={"query": PERIODS, "variables": {"first": 5}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    # Files: A's statement as CSV and PDF for A and the operator; B is refused A's.
    csv_url = f"/settlement/periods/{period['id']}/statements/{a.id}.csv"
    r = await client.get(csv_url, headers={"Authorization": f"Bearer {a.token}"})
    assert r.status_code == 200 and "SA-1" in r.text
    r = await client.get(csv_url.replace(".csv", ".pdf"), headers={"Authorization": f"Bearer {op}"})
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    assert (
        await client.get(csv_url, headers={"Authorization": f"Bearer {b.token}"})
    ).status_code == 404
    assert (await client.get(csv_url)).status_code == 401
    r = await client.get("/settlement/liability.csv", headers={"Authorization": f"Bearer {op}"})
    assert r.status_code == 200 and "Settle A" in r.text
    assert (
        await client.get(
            "/settlement/liability.csv", headers={"Authorization": f"Bearer {a.token}"}
        )
    ).status_code == 403

    # Reconciliation: B's own file, with one planted difference and one line the ledger lacks.
    csv_text = "order_ref,kind,points,amount\r\nSB-1,capture,90,95.00\r\nSB-9,capture,5,4.75\r\n"
    rep = await gql(
        client, RECONCILE, {"input": {"periodId": period["id"], "csv": csv_text}}, b.token
    )
    report = rep["reconcileStatement"]["report"]
    assert (report["mismatched"], report["missingInLedger"], report["matched"]) == (1, 1, 0)
    bad = await gql(
        client, RECONCILE, {"input": {"periodId": period["id"], "csv": "nope\n1,2"}}, b.token
    )
    assert bad["reconcileStatement"]["code"] == "VALIDATION"
    r = await client.post(
        f"/settlement/periods/{period['id']}/reconciliations",
        content=csv_text.encode(),
        headers={"Authorization": f"Bearer {b.token}", "Content-Type": "text/csv"},
    )
    assert r.status_code == 201 and r.json()["mismatched"] == 1

    # Close: sealed, verifiable; a second close changes nothing; closing a future period is refused.
    closed = (await gql(client, CLOSE, {"input": {"periodId": period["id"]}}, op))[
        "closeSettlementPeriod"
    ]
    assert closed["period"]["status"] == "closed" and closed["period"]["contentHash"]
    assert closed["period"]["verification"] == {
        "sealed": True,
        "hashMatches": True,
        "ledgerMatches": True,
    }
    twice = (await gql(client, CLOSE, {"input": {"periodId": period["id"]}}, op))[
        "closeSettlementPeriod"
    ]
    assert twice["period"]["contentHash"] == closed["period"]["contentHash"]
    assert (await gql(client, CLOSE, {"input": {"periodId": period["id"]}}, a.token))[
        "closeSettlementPeriod"
    ]["code"] == "FORBIDDEN"
    future = datetime.now(UTC) + timedelta(days=1)
    res = await gql(
        client,
        RUN,
        {"input": {"periodStart": end.isoformat(), "periodEnd": future.isoformat()}},
        op,
    )
    current = res["runSettlement"]["period"]  # the present period can be run, not closed
    assert current["status"] == "open"
    refused = (await gql(client, CLOSE, {"input": {"periodId": current["id"]}}, op))[
        "closeSettlementPeriod"
    ]
    assert refused["code"] == "VALIDATION" and "future" in refused["message"]
