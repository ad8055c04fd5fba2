import os

from tests.gateway.gql_helpers import (
    EARN,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)


async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["worker"] == os.getpid()


async def test_metrics_count_requests_by_route(client):
    await client.post("/graphql", json={"query": "{ __typename }"})
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'coalition_http_requests_total{method="POST",route="/graphql",status="200"}' in r.text
    assert "coalition_http_request_duration_seconds_bucket" in r.text


def counter(text: str, name: str) -> int:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return int(float(line.split()[1]))


async def test_metrics_show_the_group_commit_of_earns(client, engine):
    op = await operator_token(client, engine)
    a = await setup_partner(client, op, name="Metrics A", base_rate="0.1")
    m = await register_and_login(client)
    before = (await client.get("/metrics")).text
    earn = {
        "cardNumber": m.card,
        "amount": rub("100.00"),
        "orderRef": "MX-1",
        "idempotencyKey": key(),
    }
    assert (await gql(client, EARN, {"input": earn}, a.token))["earn"][
        "__typename"
    ] == "EarnSuccess"
    again = (await gql(client, EARN, {"input": earn}, a.token))["earn"]  # a replay: single path
    assert again["replayed"] is True
    after = (await client.get("/metrics")).text
    for name, grew in (("batched_earns", 1), ("single_path", 1), ("failed_batches", 0)):
        metric = f"coalition_earn_{name}_total"
        assert counter(after, metric) - counter(before, metric) == grew, metric
