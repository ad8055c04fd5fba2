"""Operator users sign in to the console (the public client `coalition-console`) on the members'
login page, and get operator tokens; the access matrix between members, operator users and the
two public clients."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import text

from core import clock
from gateway.oauth import login
from gateway.oauth.auth import authenticate_token
from members import operators, passwords
from partners import clients
from tests.gateway.oauth_helpers import (
    BASE_URL,
    authorize_url,
    login_form,
    make_member,
    member_tokens,
    pkce_pair,
    starlette_app_of,
)

CONSOLE = clients.CONSOLE_CLIENT_ID
CONSOLE_REDIRECT_URI = f"{BASE_URL}/console/callback"
PARTNERS = "{ partners { id name } }"


@pytest.fixture(autouse=True, scope="module")
def cheap_password_hashing():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            passwords, "hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        )
        yield


@pytest.fixture(scope="module")
async def sapp(app):
    return await starlette_app_of(app)


@pytest.fixture
def engine_(sapp):
    return sapp.state.engine


@pytest.fixture
def browser(app) -> Callable[..., AsyncIterator[httpx.AsyncClient]]:
    """A client from its own IP address, so login throttling in one test spares the others."""

    @asynccontextmanager
    async def open_browser() -> AsyncIterator[httpx.AsyncClient]:
        ip = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
        transport = httpx.ASGITransport(app=app, client=(ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
            yield c

    return open_browser


async def make_operator_user(engine, password: str = "operator password 1") -> tuple[str, str]:
    email = f"op-{secrets.token_hex(6)}@example.com"
    async with engine.begin() as conn:
        await operators.add(conn, email=email, password=password)
    return email, password


def console_url(challenge: str, *, scope: str | None = "operator", state: str = "c0ns") -> str:
    params = {
        "response_type": "code",
        "client_id": CONSOLE,
        "redirect_uri": CONSOLE_REDIRECT_URI,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if scope:
        params["scope"] = scope
    return "/oauth/authorize?" + urlencode(params)


async def sign_in(b: httpx.AsyncClient, url: str, email: str, password: str) -> httpx.Response:
    csrf = await login_form(b, url)
    return await b.post(url, data={"csrf_token": csrf, "email": email, "password": password})


def code_of(r: httpx.Response) -> str:
    assert r.status_code == 302, r.text
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CONSOLE_REDIRECT_URI
    return parse_qs(location.query)["code"][0]


async def exchange(b: httpx.AsyncClient, code: str, verifier: str) -> httpx.Response:
    return await b.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CONSOLE_REDIRECT_URI,
            "client_id": CONSOLE,
            "code_verifier": verifier,
        },
    )


async def console_tokens(b: httpx.AsyncClient, email: str, password: str) -> dict:
    verifier, challenge = pkce_pair()
    r = await exchange(
        b, code_of(await sign_in(b, console_url(challenge), email, password)), verifier
    )
    assert r.status_code == 200, r.text
    return r.json()


async def graphql(b: httpx.AsyncClient, token: str, query: str) -> dict:
    r = await b.post(
        "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_an_operator_user_signs_in_to_the_console_and_gets_an_operator_token(
    sapp, browser, engine_
):
    email, password = await make_operator_user(engine_)
    async with browser() as b:
        verifier, challenge = pkce_pair()
        page = await b.get(console_url(challenge))
        assert page.status_code == 200 and "Coalition console" in page.text
        assert "Administer the coalition" in page.text
        # Any case of the email, as for members.
        code = code_of(await sign_in(b, console_url(challenge), email.upper(), password))
        r = await exchange(b, code, verifier)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["scope"] == "operator" and body["refresh_token"]
        p = await authenticate_token(sapp, body["access_token"])
        assert p.kind == "operator" and p.scopes == {"operator"} and p.client_id == CONSOLE
        assert p.member_id is None and p.partner_id is None
        assert p.operator_user_id is not None and p.actor == f"operator_user:{p.operator_user_id}"
        data = await graphql(b, body["access_token"], PARTNERS)
        assert "errors" not in data and isinstance(data["data"]["partners"], list)

        # The refresh token works, for a console session (hours, not the app's 30 days).
        r = await b.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": body["refresh_token"],
                "client_id": CONSOLE,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "operator"
    async with engine_.connect() as conn:
        ttl = (
            await conn.execute(
                text(
                    "SELECT max(expires_at - issued_at) FROM oauth_refresh_tokens "
                    "WHERE operator_user_id = :u"
                ),
                {"u": p.operator_user_id},
            )
        ).scalar_one()
    assert ttl <= timedelta(hours=12)


async def test_a_member_cannot_sign_in_to_the_console(browser, engine_):
    email, password, _ = await make_member(engine_)
    async with browser() as b:
        _, challenge = pkce_pair()
        r = await sign_in(b, console_url(challenge), email, password)
        assert r.status_code == 401 and "Incorrect email or password" in r.text
        assert "location" not in r.headers


async def test_an_operator_user_gets_no_member_token_from_the_app(browser, engine_):
    email, password = await make_operator_user(engine_)
    async with browser() as b:
        _, challenge = pkce_pair()
        r = await sign_in(b, authorize_url(challenge), email, password)
        assert r.status_code == 401 and "location" not in r.headers


async def test_the_same_email_as_member_and_operator_user_reaches_each_account_by_its_client(
    browser, engine_
):
    """One person with both accounts: the app's sign-in reads the member's password, the
    console's the operator user's; neither password opens the other account."""
    email, member_password, _ = await make_member(engine_)
    async with engine_.begin() as conn:
        await operators.add(conn, email=email, password="the operator password")
    async with browser() as b:
        _, challenge = pkce_pair()
        r = await sign_in(b, console_url(challenge), email, member_password)
        assert r.status_code == 401
        tokens = await member_tokens(b, email=email, password=member_password)
        assert tokens["scope"] == "member"
        r = await sign_in(b, authorize_url(challenge), email, "the operator password")
        assert r.status_code == 401
        console = await console_tokens(b, email, "the operator password")
        assert console["scope"] == "operator"


async def test_the_console_client_grants_no_other_scope(browser, engine_):
    email, password = await make_operator_user(engine_)
    async with browser() as b:
        for scope in ("member", "operator member", "points:earn"):
            _, challenge = pkce_pair()
            r = await b.get(console_url(challenge, scope=scope))
            assert r.status_code == 302 and "error=invalid_scope" in r.headers["location"]
        # The member app cannot ask for the operator scope either.
        _, challenge = pkce_pair()
        r = await b.get(authorize_url(challenge, scope="operator"))
        assert r.status_code == 302 and "error=invalid_scope" in r.headers["location"]
        # No scope: the console's one.
        verifier, challenge = pkce_pair()
        code = code_of(await sign_in(b, console_url(challenge, scope=None), email, password))
        r = await exchange(b, code, verifier)
        assert r.json()["scope"] == "operator"


async def test_a_console_code_is_no_member_app_code(browser, engine_):
    """A code is bound to the client it was issued to: the app cannot redeem the console's."""
    email, password = await make_operator_user(engine_)
    async with browser() as b:
        verifier, challenge = pkce_pair()
        code = code_of(await sign_in(b, console_url(challenge), email, password))
        r = await b.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": f"{BASE_URL}/app/callback",
                "client_id": clients.APP_CLIENT_ID,
                "code_verifier": verifier,
            },
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_a_disabled_operator_user_is_refused(browser, engine_):
    email, password = await make_operator_user(engine_)
    async with browser() as b:
        tokens = await console_tokens(b, email, password)
        verifier, challenge = pkce_pair()
        pending = code_of(await sign_in(b, console_url(challenge), email, password))
        async with engine_.begin() as conn:
            assert await operators.set_disabled(conn, email=email, disabled=True, at=clock.utcnow())
        _, other = pkce_pair()
        r = await sign_in(b, console_url(other), email, password)
        assert r.status_code == 403 and "disabled" in r.text and "location" not in r.headers
        # A code issued before, and the refresh token, are refused too.
        r = await exchange(b, pending, verifier)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        r = await b.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": CONSOLE,
            },
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        async with engine_.begin() as conn:
            await operators.set_disabled(conn, email=email, disabled=False, at=clock.utcnow())
        assert (await console_tokens(b, email, password))["scope"] == "operator"


async def test_wrong_passwords_of_an_operator_user_are_throttled(browser, engine_, monkeypatch):
    email, password = await make_operator_user(engine_)
    _, challenge = pkce_pair()
    url = console_url(challenge)
    async with browser() as b:
        csrf = await login_form(b, url)
        for _ in range(login.EMAIL_LIMIT - 1):
            r = await b.post(url, data={"csrf_token": csrf, "email": email, "password": "wrong"})
            assert r.status_code == 401 and "Incorrect email or password" in r.text
        r = await b.post(url, data={"csrf_token": csrf, "email": email, "password": "wrong"})
        assert r.status_code == 429 and "Too many failed sign-in attempts" in r.text
    async with browser() as elsewhere:  # the right password, from another address: still locked
        r = await sign_in(elsewhere, url, email, password)
        assert r.status_code == 429
        real = clock.utcnow()
        monkeypatch.setattr(clock, "utcnow", lambda: real + login.WINDOW + timedelta(seconds=1))
        assert code_of(await sign_in(elsewhere, url, email, password))


async def test_operator_users_are_unique_by_email_in_any_case(engine_):
    email, _ = await make_operator_user(engine_)
    async with engine_.begin() as conn:
        with pytest.raises(Exception, match="already exists"):
            await operators.add(conn, email=email.upper())
    async with engine_.begin() as conn:
        for bad in ("not-an-email", "a b@example.com", "@example.com"):
            with pytest.raises(Exception, match="email"):
                await operators.add(conn, email=bad)


async def test_add_operator_user_command_prints_a_password_that_signs_in(browser, db_uri):
    email = f"cli-{secrets.token_hex(4)}@example.com"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "add-operator-user",
        email,
        env={**os.environ, "DATABASE_URL": db_uri},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    last = json.loads(out.decode().strip().splitlines()[-1])
    assert last["email"] == email and len(last["password"]) >= 16
    async with browser() as b:
        assert (await console_tokens(b, email, last["password"]))["scope"] == "operator"


async def test_the_console_issues_no_token_for_a_member_code(browser, engine_):
    """Defence in depth: should a code of the console ever name a member (no sign-in makes
    one), the grant refuses it rather than give a member the operator scope."""
    from gateway.oauth import store

    _, _, member = await make_member(engine_)
    verifier, challenge = pkce_pair()
    code = secrets.token_urlsafe(32)
    async with engine_.begin() as conn:
        await store.insert_code(
            conn,
            code=code,
            client_id=CONSOLE,
            member_id=member.id,
            redirect_uri=CONSOLE_REDIRECT_URI,
            scope="operator",
            code_challenge=challenge,
            code_challenge_method="S256",
            now=clock.utcnow(),
            ttl=timedelta(minutes=5),
        )
    async with browser() as b:
        r = await exchange(b, code, verifier)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
