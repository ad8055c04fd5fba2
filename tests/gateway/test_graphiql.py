"""GraphiQL works without internet access; with it off, GET /graphql says where queries go."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest
from asgi_lifespan import LifespanManager

from core.settings import Settings
from gateway.app import create_app
from tests.gateway.conftest import BASE_URL


class _Assets(HTMLParser):
    """The scripts and stylesheets a page loads: (url, integrity)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.urls.append((a["src"] or "", a.get("integrity")))
        if tag == "link" and a.get("rel") == "stylesheet":
            self.urls.append((a.get("href") or "", a.get("integrity")))


async def test_graphiql_loads_every_asset_from_the_app(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    parser = _Assets()
    parser.feed(page.text)
    urls = [url for url, _ in parser.urls]
    assert any(url.endswith("graphiql.min.js") for url in urls), urls
    assert any(url.endswith(".css") for url in urls), urls
    for url, integrity in parser.urls:
        # Same origin: a path on this app, never http(s):// or //host elsewhere.
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0, url
        if integrity:  # the page's Subresource Integrity hash matches what the app serves
            algo, _, digest = integrity.partition("-")
            actual = base64.b64encode(hashlib.new(algo, asset.content).digest()).decode()
            assert actual == digest, url
    assert "unpkg.com" not in page.text and "jsdelivr" not in page.text


@pytest.fixture
async def ide_off(db_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=db_uri, public_url=BASE_URL, graphql_introspection=False)
    application = create_app(settings, database_url=db_uri)
    async with (
        LifespanManager(application) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=BASE_URL) as c,
    ):
        yield c


@pytest.mark.parametrize("accept", ["text/html", "*/*"])
async def test_get_graphql_with_graphiql_off_says_what_to_do(
    ide_off: httpx.AsyncClient, accept: str
) -> None:
    r = await ide_off.get("/graphql", headers={"Accept": accept})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["errors"][0]
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert "POST GraphQL queries here" in error["message"]
    assert "GRAPHQL_INTROSPECTION=1" in error["message"]
    # No GraphiQL page, no assets either.
    assert (await ide_off.get("/static/graphiql/graphiql.min.js")).status_code == 404
