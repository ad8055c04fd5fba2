"""The document cache (gateway.graphql.documents): a document seen before is neither parsed nor
validated again, yet every request is still refused or checked as if it were the first: the
cost, depth and alias limits and the other validation rules answer with the same errors, and a
cached document that passed runs with each request's own variables, coerced and checked (input
checks, scopes, the use case's rules). The cache is bounded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.graphql.documents import DocumentStore
from gateway.graphql.schema import MAX_CACHED_DOCUMENTS, build_schema
from tests.gateway import oauth_helpers as oh
from tests.gateway.conftest import BASE_URL
from tests.gateway.gql_helpers import (
    EARN,
    MemberHandle,
    PartnerHandle,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)
from tests.gateway.test_bad_input import row_counts
from tests.gateway.test_query_cost import BOMB


@dataclass
class World:
    op: str
    partner: PartnerHandle
    member: MemberHandle


@pytest.fixture(scope="module")
async def world(app, engine) -> World:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        op = await operator_token(c, engine)
        partner = await setup_partner(c, op, name="Cached documents")
        member = await register_and_login(c)
    return World(op, partner, member)


async def documents_of(app: Any) -> DocumentStore:
    """The store of the app's schema."""
    starlette = await oh.starlette_app_of(app)
    route = next(r for r in starlette.routes if getattr(r, "path", None) == "/graphql")
    return route.endpoint.view.schema.documents  # type: ignore[no-any-return]


async def post(client: httpx.AsyncClient, body: bytes | dict[str, Any], token: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = await client.post(
        "/graphql",
        content=content,
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_cached_costly_document_is_refused_on_every_request(app, client, world):
    documents = await documents_of(app)
    for attempt in range(3):
        body = await post(client, {"query": BOMB}, world.op)
        assert body.get("data") is None, body
        error = body["errors"][0]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX", (attempt, body)
        assert error["extensions"]["cost"] > error["extensions"]["maxCost"]
        if attempt == 0:
            size, hits = len(documents), documents.hits
    assert len(documents) == size  # one entry: the later requests were answered from it
    assert documents.hits == hits + 2


async def test_a_cached_earn_document_checks_each_requests_values(app, client, engine, world):
    documents = await documents_of(app)

    def earn(**changes: Any) -> dict[str, Any]:
        k = key()
        values = {
            "cardNumber": world.member.card,
            "amount": rub("100.00"),
            "orderRef": f"doc-{k}",
            "idempotencyKey": k,
            **changes,
        }
        return {"query": EARN, "variables": {"input": values}}

    first = await post(client, earn(), world.partner.token)
    assert first["data"]["earn"]["__typename"] == "EarnSuccess", first
    size, hits = len(documents), documents.hits
    before = await row_counts(engine)

    # The same text each time; what changes is the request's values and caller.
    nul = json.dumps(earn(orderRef="doc-MARK")).replace("MARK", "\\u0000").encode()
    result = (await post(client, nul, world.partner.token))["data"]["earn"]
    assert result["__typename"] == "ValidationError" and result["code"] == "VALIDATION", result
    assert "NUL" in result["message"]

    wrong_type = await post(client, earn(idempotencyKey=5), world.partner.token)
    assert wrong_type.get("data") is None and "String cannot represent" in str(wrong_type)

    negative = (await post(client, earn(amount=rub("-1.00")), world.partner.token))["data"]
    assert negative["earn"]["__typename"] == "ValidationError", negative

    huge = (await post(client, earn(amount=rub("1" * 13 + ".00")), world.partner.token))["data"]
    assert huge["earn"]["__typename"] == "ValidationError", huge

    operator = (await post(client, earn(), world.op))["data"]["earn"]
    assert operator["__typename"] == "ForbiddenError", operator  # not a partner's token

    assert await row_counts(engine) == before  # every one of them refused, nothing written
    assert len(documents) == size  # and all of them answered from the cached document
    assert documents.hits == hits + 5

    again = await post(client, earn(), world.partner.token)
    assert again["data"]["earn"]["__typename"] == "EarnSuccess", again


async def test_a_document_that_does_not_parse_is_refused_every_time_and_not_kept(
    app, client, world
):
    documents = await documents_of(app)
    size = len(documents)
    for _ in range(2):
        body = await post(client, {"query": "{ __typename"}, world.op)
        assert body["errors"][0]["message"].startswith("Syntax Error"), body
    assert len(documents) == size


async def test_the_store_is_bounded_and_keeps_the_schemas_rules():
    schema = build_schema(introspection=False)
    introspection = "{ __schema { queryType { name } } }"
    for _ in range(2):  # off without GRAPHQL_INTROSPECTION, cached or not
        result = await schema.execute(introspection)
        assert result.errors and "introspection" in result.errors[0].message.lower()
    for i in range(MAX_CACHED_DOCUMENTS + 10):
        result = await schema.execute(f"query Q{i} {{ __typename }}")
        assert result.errors is None and result.data == {"__typename": "Query"}
    assert len(schema.documents) == MAX_CACHED_DOCUMENTS  # the oldest went first
    result = await schema.execute(introspection)  # evicted, validated anew: still refused
    assert result.errors and "introspection" in result.errors[0].message.lower()
    # Another schema (introspection on) has a store of its own, with its own rules.
    open_schema = build_schema(introspection=True)
    assert (await open_schema.execute(introspection)).errors is None
