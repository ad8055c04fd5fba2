async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_metrics_count_requests_by_route(client):
    await client.post("/graphql", json={"query": "{ __typename }"})
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'coalition_http_requests_total{method="POST",route="/graphql",status="200"}' in r.text
    assert "coalition_http_request_duration_seconds_bucket" in r.text
