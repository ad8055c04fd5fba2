"""Helpers for tests that need OAuth clients, members and tokens (through HTTP, like a user).

partner, creds = await make_partner_client(engine, scopes=["points:earn"])
token = await client_credentials_token(client, creds)
email, password, member = await make_member(engine)
tokens = await member_tokens(client, email=email, password=password)
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from members import passwords
from members import service as members
from partners import clients
from partners import service as partners

BASE_URL = "http://testserver"
APP_CLIENT_ID = clients.APP_CLIENT_ID
APP_REDIRECT_URI = f"{BASE_URL}/app/callback"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


async def starlette_app_of(asgi_app: Any) -> Any:
    """The Starlette app behind `asgi_app` (the `app` fixture wraps it for lifespan state):
    Starlette records itself in the scope of every request it serves."""
    seen: dict[str, Any] = {}

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        seen["scope"] = scope
        await asgi_app(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=spy), base_url=BASE_URL) as c:
        await c.get("/healthz")
    return seen["scope"]["app"]


def basic_auth(client_id: str, client_secret: str) -> dict[str, str]:
    """An Authorization header, form-encoding id and secret as RFC 6749 §2.3.1 says."""
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def pkce_pair() -> tuple[str, str]:
    """A PKCE code_verifier and its S256 code_challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def make_partner(engine: AsyncEngine, name: str = "Partner") -> partners.PartnerRecord:
    async with engine.begin() as conn:
        return await partners.create(conn, name=name, category="shop", currency="RUB")


async def make_partner_client(
    engine: AsyncEngine,
    *,
    scopes: list[str] | tuple[str, ...] = clients.PARTNER_SCOPES,
    partner: partners.PartnerRecord | None = None,
    **kw: Any,
) -> tuple[partners.PartnerRecord, clients.ClientCredentials]:
    partner = partner or await make_partner(engine)
    async with engine.begin() as conn:
        creds = await clients.create_partner_client(
            conn, partner_id=partner.id, scopes=scopes, **kw
        )
    return partner, creds


async def make_operator_client(engine: AsyncEngine) -> clients.ClientCredentials:
    async with engine.begin() as conn:
        return await clients.create_operator_client(conn)


async def make_member(
    engine: AsyncEngine, password: str = "correct horse battery staple"
) -> tuple[str, str, members.MemberRecord]:
    email = f"m-{secrets.token_hex(6)}@example.com"
    async with engine.begin() as conn:
        member = await members.create(
            conn, email=email, name="Test Member", password_hash=passwords.hash_password(password)
        )
    return email, password, member


async def client_credentials_token(
    client: httpx.AsyncClient, creds: clients.ClientCredentials, scope: str | None = None
) -> dict[str, Any]:
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    r = await client.post(
        "/oauth/token", data=data, headers=basic_auth(creds.client_id, creds.client_secret)
    )
    assert r.status_code == 200, r.text
    return r.json()


def authorize_url(
    challenge: str | None,
    *,
    method: str | None = "S256",
    state: str = "st4te",
    scope: str | None = "member",
) -> str:
    params = {
        "response_type": "code",
        "client_id": APP_CLIENT_ID,
        "redirect_uri": APP_REDIRECT_URI,
        "state": state,
    }
    if scope:
        params["scope"] = scope
    if challenge:
        params["code_challenge"] = challenge
    if method:
        params["code_challenge_method"] = method
    return "/oauth/authorize?" + urlencode(params)


async def login_form(client: httpx.AsyncClient, url: str) -> str:
    """GET the login page like a browser; returns its CSRF token (the cookie is in the jar)."""
    r = await client.get(url)
    assert r.status_code == 200, r.text
    m = CSRF_RE.search(r.text)
    assert m, r.text
    return m.group(1)


async def authorization_code(
    client: httpx.AsyncClient, *, email: str, password: str, challenge: str, state: str = "st4te"
) -> str:
    """Sign in through the HTML form; returns the code from the redirect to /app/callback."""
    url = authorize_url(challenge, state=state)
    csrf = await login_form(client, url)
    r = await client.post(url, data={"csrf_token": csrf, "email": email, "password": password})
    assert r.status_code == 302, r.text
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == APP_REDIRECT_URI
    query = parse_qs(location.query)
    assert query["state"] == [state]
    return query["code"][0]


async def exchange_code(client: httpx.AsyncClient, code: str, verifier: str) -> httpx.Response:
    return await client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": APP_REDIRECT_URI,
            "client_id": APP_CLIENT_ID,
            "code_verifier": verifier,
        },
    )


async def member_tokens(client: httpx.AsyncClient, *, email: str, password: str) -> dict[str, Any]:
    """A member's access and refresh tokens, obtained as the member web app would."""
    verifier, challenge = pkce_pair()
    code = await authorization_code(client, email=email, password=password, challenge=challenge)
    r = await exchange_code(client, code, verifier)
    assert r.status_code == 200, r.text
    return r.json()
