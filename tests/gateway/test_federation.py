"""The schema as an Apollo Federation v2 subgraph: `_service { sdl }`, `_entities` for `Member`
and `Partner` under the API's access rules, and a composition with another subgraph through
Apollo's own `@apollo/composition` (npm; skipped when node or npm are missing)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.gateway.gql_helpers import (
    EARN,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

SERVICE = "{ _service { sdl } }"
ENTITIES = """
query($r: [_Any!]!) { _entities(representations: $r) {
  __typename ... on Member { id cardNumber } ... on Partner { id name } } }
"""
HERE = Path(__file__).resolve().parent.parent / "federation"


async def entities(client: httpx.AsyncClient, token: str | None, reps: list[Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await client.post(
        "/graphql", json={"query": ENTITIES, "variables": {"r": reps}}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors", [])]


async def test_service_sdl_links_federation_v2_and_keys_the_entities(
    client: httpx.AsyncClient,
) -> None:
    sdl = (await gql(client, SERVICE))["_service"]["sdl"]
    assert '@link(url: "https://specs.apollo.dev/federation/v2.' in sdl
    assert 'type Member @key(fields: "id")' in sdl
    assert 'type Partner @key(fields: "id")' in sdl


async def test_entities_follow_the_access_rules(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Fed A")
    b = await setup_partner(client, op, name="Fed B")
    customer = await register_and_login(client)
    stranger = await register_and_login(client)
    d = await gql(
        client,
        EARN,
        {
            "input": {
                "cardNumber": customer.card,
                "amount": rub("100.00"),
                "category": "shop",
                "orderRef": "fed-1",
                "idempotencyKey": key(),
            }
        },
        a.token,
    )
    assert d["earn"]["__typename"] == "EarnSuccess", d
    mem = lambda m: {"__typename": "Member", "id": m.id}  # noqa: E731
    par = lambda p: {"__typename": "Partner", "id": p.id}  # noqa: E731

    # The operator resolves anyone.
    body = await entities(client, op, [mem(customer), mem(stranger), par(a), par(b)])
    assert "errors" not in body, body
    got = body["data"]["_entities"]
    assert [g["id"] for g in got] == [customer.id, stranger.id, a.id, b.id]
    assert got[0]["cardNumber"] == customer.card and got[2]["name"] == "Fed A"

    # A partner: itself and the members it has dealt with; nobody else.
    body = await entities(client, a.token, [par(a), par(b), mem(customer), mem(stranger)])
    got = body["data"]["_entities"]
    assert got[0]["id"] == a.id and got[1] is None
    assert got[2]["id"] == customer.id and got[3] is None
    assert codes(body) == ["FORBIDDEN", "FORBIDDEN"]
    body = await entities(client, b.token, [mem(customer)])
    assert body["data"]["_entities"] == [None] and codes(body) == ["FORBIDDEN"]

    # A member: itself only (and any partner, as `partners` shows them).
    body = await entities(client, customer.token, [mem(customer), mem(stranger), par(b)])
    got = body["data"]["_entities"]
    assert got[0]["id"] == customer.id and got[1] is None and got[2]["id"] == b.id
    assert codes(body) == ["FORBIDDEN"]

    # Nobody without a token.
    body = await entities(client, None, [mem(customer), par(a)])
    assert body["data"]["_entities"] == [None, None]
    assert codes(body) == ["FORBIDDEN", "FORBIDDEN"]


@pytest.mark.parametrize(
    "reps",
    [
        [{"__typename": "Member", "id": "not-a-uuid"}],
        [{"__typename": "Nope", "id": "0190a0a0-0000-7000-8000-000000000000"}],
        [{"__typename": "Me", "id": "0190a0a0-0000-7000-8000-000000000000"}],
        [{"id": "0190a0a0-0000-7000-8000-000000000000"}],
        [{"__typename": "Member", "id": "x", "email": "a@b"}],
        [{"__typename": "Member"}],
        ["Member"],
        [{"__typename": "Partner", "id": "\x00"}],
        [{"__typename": "Partner", "id": "0190a0a0-0000-7000-8000-000000000000"}] * 101,
    ],
)
async def test_bad_representations_are_refused_with_a_typed_error(
    client: httpx.AsyncClient, engine: AsyncEngine, reps: list[Any]
) -> None:
    op = await operator_token(client, engine)
    body = await entities(client, op, reps)
    assert codes(body) and set(codes(body)) == {"VALIDATION"}, body


# -- composition through Apollo's own library ------------------------------------------------

OTHER_SUBGRAPH = """
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
type Member @key(fields: "id") { id: ID! favouriteStore: String }
type Partner @key(fields: "id") { id: ID! rating: Float }
type Query { topMembers: [Member!]! }
"""


def _composer() -> Path:
    """A directory with tests/federation's package installed (`npm ci`), cached by the lock's
    hash under XDG_CACHE_HOME (or ~/.cache) when tests/federation has no node_modules."""
    if (HERE / "node_modules" / "@apollo" / "composition").is_dir():
        return HERE
    lock = (HERE / "package-lock.json").read_bytes()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = base / "coalition-federation" / hashlib.sha256(lock).hexdigest()[:16]
    if not (target / "node_modules" / "@apollo" / "composition").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(HERE / name, target / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=target,
            check=True,
            capture_output=True,
            timeout=600,
        )
    shutil.copy(HERE / "compose.mjs", target / "compose.mjs")
    return target


@pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to compose the subgraph with @apollo/composition",
)
async def test_the_subgraph_composes_with_another(client: httpx.AsyncClient) -> None:
    sdl = (await gql(client, SERVICE))["_service"]["sdl"]
    where = await asyncio.to_thread(_composer)
    subgraphs = [
        {"name": "coalition", "url": "http://coalition/graphql", "sdl": sdl},
        {"name": "stores", "url": "http://stores/graphql", "sdl": OTHER_SUBGRAPH},
    ]
    run = await asyncio.to_thread(
        subprocess.run,
        ["node", str(where / "compose.mjs")],
        cwd=where,
        input=json.dumps(subgraphs),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(run.stdout)
    assert result["errors"] == []
    supergraph = result["supergraph"]
    assert '@join__type(graph: COALITION, key: "id")' in supergraph
    assert '@join__type(graph: STORES, key: "id")' in supergraph
    assert "favouriteStore: String @join__field(graph: STORES)" in supergraph
    assert "earn(input: EarnInput!): EarnResult!" in supergraph
    assert "topMembers: [Member!]! @join__field(graph: STORES)" in supergraph
