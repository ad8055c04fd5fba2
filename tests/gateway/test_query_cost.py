"""The query cost limit (fields x requested list sizes, refused before execution with
QUERY_TOO_COMPLEX) and the batched loading of a page of settlement periods: its nested fields
cost a fixed number of statements on one connection, however many periods the page holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import event

from core.settings import Settings
from gateway.app import create_app
from gateway.graphql.types import encode_cursor
from tests.gateway import oauth_helpers as oh
from tests.gateway.gql_helpers import gql, operator_token, register_and_login

NESTED = """
  statements { partner { id name } issuedPoints net { amount currency } }
  matrix { issuer { id } redeemer { id } points value { amount } }
  paymentInstructions { partner { id } payer payee amount { amount } }
  adjustments { kind points amount { amount } partner { id } }
"""
PAGE = (
    "query($first: Int!, $after: String) { settlementPeriods(first: $first, after: $after) { "
    "edges { node { id " + NESTED + " verification { sealed hashMatches } } } } }"
)
RUN = """
mutation($input: RunSettlementInput!) { runSettlement(input: $input) {
  __typename ... on RunSettlementSuccess { period { id } } ... on Error { code message } } }
"""
# The review's request: 30 aliases of a full page of periods with every nested list (small
# selections: the document stays under the token limit).
SMALL = "statements { net { amount } } matrix { points } paymentInstructions { payer } adjustments { kind }"
BOMB = (
    "{ "
    + " ".join(
        f"a{i}: settlementPeriods(first: 100) {{ edges {{ node {{ {SMALL} }} }} }}"
        for i in range(30)
    )
    + " }"
)
# The same through a fragment: fragments count wherever they are spread.
BOMB_FRAGMENT = (
    "fragment P on SettlementPeriod { "
    + NESTED
    + " } { "
    + " ".join(
        f"a{i}: settlementPeriods(first: 100) {{ edges {{ node {{ ...P }} }} }}" for i in range(30)
    )
    + " }"
)


def _cursor(at: datetime) -> str:
    """The cursor that pages to the periods starting before `at`."""
    return encode_cursor(int(at.timestamp() * 1_000_000))


class _Recorder:
    """SQL sent on the app's engine: each statement and the connection it went on."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, str]] = []
        self.engine: Any = None

    def __call__(self, conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        self.calls.append((conn, statement))

    def settlement(self) -> list[tuple[object, str]]:
        return [(c, s) for c, s in self.calls if "settlement_" in s]


@pytest.fixture
async def recorder(app):
    rec = _Recorder()
    engine = rec.engine = (await oh.starlette_app_of(app)).state.engine
    event.listen(engine.sync_engine, "before_cursor_execute", rec)
    yield rec
    event.remove(engine.sync_engine, "before_cursor_execute", rec)


async def _periods_in_1990(client, op: str) -> None:
    """Six daily periods in January 1990 (no other test settles that range)."""
    for day in range(1, 7):
        start = datetime(1990, 1, day, tzinfo=UTC)
        end = datetime(1990, 1, day + 1, tzinfo=UTC)
        d = await gql(
            client,
            RUN,
            {"input": {"periodStart": start.isoformat(), "periodEnd": end.isoformat()}},
            op,
        )
        assert d["runSettlement"]["__typename"] == "RunSettlementSuccess", d


async def test_a_page_of_periods_costs_a_fixed_number_of_statements_on_one_connection(
    app, client, engine, recorder
):
    op = await operator_token(client, engine)
    await _periods_in_1990(client, op)
    counts = []
    for before, expected in (
        (datetime(1990, 1, 3, tzinfo=UTC), 2),
        (datetime(1990, 2, 1, tzinfo=UTC), 6),
    ):
        recorder.calls.clear()
        d = await gql(client, PAGE, {"first": 20, "after": _cursor(before)}, op)
        edges = d["settlementPeriods"]["edges"]
        assert len(edges) == expected
        assert all(
            e["node"]["verification"] == {"sealed": False, "hashMatches": False} for e in edges
        )
        sql = recorder.settlement()
        # The page, statements (payment instructions are derived from them), matrix,
        # adjustments, verification: one statement each, all on the request's one connection.
        assert len(sql) <= 5, [s for _, s in sql]
        assert len({id(c) for c, _ in sql}) == 1, "more than one connection for one request"
        assert recorder.engine.pool.checkedout() == 0  # and it was given back at the end
        counts.append(len(sql))
    assert counts[0] == counts[1], counts


async def test_a_costly_query_is_refused_before_it_runs(client, engine, recorder):
    op = await operator_token(client, engine)
    for query in (BOMB, BOMB_FRAGMENT):
        recorder.calls.clear()
        r = await client.post(
            "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {op}"}
        )
        assert r.status_code == 200
        body = r.json()
        assert body.get("data") is None, body
        error = body["errors"][0]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX", body
        assert error["extensions"]["cost"] > error["extensions"]["maxCost"]
        assert recorder.settlement() == []  # nothing was executed


async def test_the_cost_limit_is_a_setting(settings, db_uri):
    app = create_app(
        Settings(**{**settings.model_dump(), "graphql_max_cost": 100}), database_url=db_uri
    )
    async with (
        LifespanManager(app) as m,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=m.app), base_url="http://testserver"
        ) as c,
    ):
        # 5 periods x (node + id + statements(10 x (net + amount))) > 100: refused.
        q = "{ settlementPeriods(first: 5) { edges { node { id statements { net { amount } } } } } }"
        r = await c.post("/graphql", json={"query": q})
        assert r.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        # A small one still runs (and is refused for the missing token, as before).
        r = await c.post(
            "/graphql", json={"query": "{ settlementPeriods(first: 2) { edges { node { id } } } }"}
        )
        assert r.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_member_query_reads_on_one_connection(client, recorder):
    m = await register_and_login(client)
    recorder.calls.clear()
    q = (
        "{ me { id balance { available } expiringPoints(days: 30) "
        "activity(first: 5) { edges { node { points partner { name } } } } } }"
    )
    await gql(client, q, token=m.token)
    # Not the token checks, nor the app's background workers (the webhook dispatcher and the
    # importer poll the same engine: one of their polls fell inside this window once).
    background = ("oauth_", "webhook_deliveries", "FROM imports")
    reads = [(c, s) for c, s in recorder.calls if not any(b in s for b in background)]
    assert len(reads) >= 3  # the member, its balance, its activity
    assert len({id(c) for c, _ in reads}) == 1, [s for _, s in reads]
    # balance and expiringPoints (same horizon) share one read of the balance.
    assert len([s for _, s in reads if "expiring" in s]) == 1, [s for _, s in reads]


async def test_fragments_spread_over_and_over_are_measured_once(client):
    """40 levels of fragments, each spreading the next two: 2^41 fields once expanded. Each
    fragment is measured once, so the answer comes at once (Strawberry's own depth and alias
    limiters expanded every spread: minutes for 25 levels); the document is refused."""
    levels = 40
    frags = [
        f"fragment {name}{i} on Query {{ ...F{i + 1} ...G{i + 1} }}"
        for i in range(levels)
        for name in "FG"
    ]
    frags += [f"fragment {name}{levels} on Query {{ a: __typename }}" for name in "FG"]
    r = await client.post("/graphql", json={"query": "{ ...F0 ...G0 } " + " ".join(frags)})
    assert r.status_code == 200
    errors = r.json()["errors"]
    assert {e["extensions"]["code"] for e in errors} == {"QUERY_TOO_COMPLEX"}, errors
    assert any("aliases" in e["message"] for e in errors)


async def test_depth_and_alias_limits_answer_with_the_same_code(client):
    bomb = "{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }"
    r = await client.post("/graphql", json={"query": bomb})
    assert r.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert "aliases" in r.json()["errors"][0]["message"]
