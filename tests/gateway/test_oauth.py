"""The OAuth 2.0 authorization server, through HTTP as partners and the member app use it."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from argon2 import PasswordHasher
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import event, text
from starlette.requests import Request

from core import clock
from core.errors import ValidationError
from gateway.oauth import keys as keys_mod
from gateway.oauth import login, revocation
from gateway.oauth.adapters import transport_allowed
from gateway.oauth.auth import AuthError, Principal, authenticate
from gateway.oauth.state import oauth_state
from members import passwords
from partners import clients
from partners import service as partners
from partners.errors import ClientNotFound, PartnerNotFound
from tests.gateway.oauth_helpers import (
    APP_CLIENT_ID,
    APP_REDIRECT_URI,
    BASE_URL,
    authorization_code,
    authorize_url,
    basic_auth,
    client_credentials_token,
    exchange_code,
    login_form,
    make_member,
    make_operator_client,
    make_partner_client,
    member_tokens,
    pkce_pair,
    starlette_app_of,
)

ALL_PARTNER = " ".join(clients.PARTNER_SCOPES)


@pytest.fixture(autouse=True, scope="module")
def cheap_password_hashing():
    """Member passwords at argon2's lowest cost: these tests are about the flows, not argon2."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            passwords, "hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        )
        yield


@pytest.fixture(scope="module")
async def sapp(app):
    """The Starlette app itself (its state holds the engine and the OAuth caches)."""
    return await starlette_app_of(app)


@pytest.fixture
def engine_(sapp):
    return sapp.state.engine


@pytest.fixture
def browser(app) -> Callable[[str], AsyncIterator[httpx.AsyncClient]]:
    """A client from its own IP address, so login throttling in one test spares the others."""

    @asynccontextmanager
    async def open_browser(ip: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
        ip = (
            ip
            or f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
        )
        transport = httpx.ASGITransport(app=app, client=(ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
            yield c

    return open_browser


@pytest.fixture
def pin_clock(monkeypatch) -> Callable[[timedelta], None]:
    """Move `core.clock.utcnow` by an offset from the real now."""
    real = clock.utcnow

    def pin(offset: timedelta) -> None:
        at = real() + offset
        monkeypatch.setattr(clock, "utcnow", lambda: at)

    return pin


@pytest.fixture
def pin_clock_at(monkeypatch) -> Callable[[datetime], None]:
    """Pin `core.clock.utcnow` to an absolute instant."""

    def pin(at: datetime) -> None:
        monkeypatch.setattr(clock, "utcnow", lambda: at)

    return pin


def jwt_parts(token: str) -> tuple[dict, dict]:
    def part(s: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))

    header, claims, _ = token.split(".")
    return part(header), part(claims)


def b64url(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


async def principal(app, token: str | None, scheme: str = "Bearer") -> Principal | None:
    headers = [] if token is None else [(b"authorization", f"{scheme} {token}".encode())]
    return await authenticate(Request({"type": "http", "headers": headers, "app": app}))


# ---- client credentials ---------------------------------------------------------------


async def test_client_credentials_issues_an_rfc9068_jwt(sapp, client, engine_):
    partner, creds = await make_partner_client(engine_, scopes=["points:earn", "points:redeem"])
    before = int(clock.utcnow().timestamp())
    body = await client_credentials_token(client, creds)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["scope"] == "points:earn points:redeem"  # no scope asked: all registered ones
    assert "refresh_token" not in body

    header, claims = jwt_parts(body["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256"
    assert claims["iss"] == BASE_URL
    assert claims["aud"] == f"{BASE_URL}/graphql"
    assert claims["sub"] == creds.client_id == claims["client_id"]
    assert claims["scope"] == "points:earn points:redeem"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["iat"] >= before
    assert claims["jti"]
    assert claims["kind"] == "partner" and claims["partner_id"] == str(partner.id)

    jwks = (await client.get("/.well-known/jwks.json")).json()
    keys = {k["kid"]: k for k in jwks["keys"]}
    assert header["kid"] in keys
    assert "d" not in keys[header["kid"]]  # public halves only
    verified = jwt.decode(
        body["access_token"], RSAKey.import_key(keys[header["kid"]]), algorithms=["RS256"]
    )
    assert verified.claims["jti"] == claims["jti"]

    p = await principal(sapp, body["access_token"])
    assert p == Principal(
        kind="partner",
        client_id=creds.client_id,
        scopes=frozenset({"points:earn", "points:redeem"}),
        partner_id=partner.id,
        member_id=None,
        token_id=claims["jti"],
    )


async def test_basic_credentials_are_form_decoded(client, engine_):
    # Ids and secrets we generate are URL-safe; these are not, so encoding matters.
    cid = f"acme store:{secrets.token_hex(3)}+ü/%"
    secret = "s3cret with spaces+plus:colon/slash%25&amp"
    await make_partner_client(engine_, scopes=["points:earn"], client_id=cid, client_secret=secret)
    r = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic_auth(cid, secret)
    )
    assert r.status_code == 200, r.text
    assert jwt_parts(r.json()["access_token"])[1]["client_id"] == cid
    # The same credentials sent without form-encoding decode to something else.
    raw = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    r = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {raw}"},
    )
    assert r.status_code == 401


async def test_generated_credentials_are_url_safe(engine_):
    _, creds = await make_partner_client(engine_)
    safe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert set(creds.client_id) <= safe and set(creds.client_secret) <= safe
    assert len(creds.client_secret) >= 43


async def test_wrong_or_unknown_credentials_are_refused(client, engine_):
    _, creds = await make_partner_client(engine_)
    for cid, secret in ((creds.client_id, "wrong-secret"), ("no-such-client", creds.client_secret)):
        r = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(cid, secret),
        )
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_client"
        assert r.headers["www-authenticate"].startswith("Basic ")
    # Secrets in the body (client_secret_post) are not accepted: client_secret_basic only.
    r = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
        },
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_scopes_subset_all_and_unknown(client, engine_):
    _, creds = await make_partner_client(engine_, scopes=["points:earn", "settlement:read"])
    assert (await client_credentials_token(client, creds, "settlement:read"))[
        "scope"
    ] == "settlement:read"
    assert (await client_credentials_token(client, creds))["scope"] == "points:earn settlement:read"
    auth = basic_auth(creds.client_id, creds.client_secret)
    for scope in ("points:everything", "points:earn catalog:write", "operator", "member"):
        r = await client.post(
            "/oauth/token", data={"grant_type": "client_credentials", "scope": scope}, headers=auth
        )
        assert r.status_code == 400, scope
        assert r.json()["error"] == "invalid_scope"


async def test_partner_client_cannot_use_other_grants(client, engine_):
    _, creds = await make_partner_client(engine_)
    auth = basic_auth(creds.client_id, creds.client_secret)
    r = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "a", "password": "b"},
        headers=auth,
    )
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = await client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "x"}, headers=auth
    )
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


async def test_secret_rotation_keeps_old_secret_for_the_grace_period(client, engine_, pin_clock):
    _, creds = await make_partner_client(engine_, scopes=["points:earn"])
    async with engine_.begin() as conn:
        rotated = await clients.rotate_secret(
            conn, client_id=creds.client_id, grace=timedelta(hours=1)
        )
    assert rotated.client_id == creds.client_id and rotated.client_secret != creds.client_secret

    async def status(secret: str) -> int:
        r = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(creds.client_id, secret),
        )
        return r.status_code

    assert await status(creds.client_secret) == 200
    assert await status(rotated.client_secret) == 200
    pin_clock(timedelta(minutes=61))
    assert await status(creds.client_secret) == 401
    assert await status(rotated.client_secret) == 200


async def test_disabled_client_is_refused(client, engine_):
    _, creds = await make_partner_client(engine_)
    await client_credentials_token(client, creds)
    async with engine_.begin() as conn:
        await clients.disable(conn, client_id=creds.client_id)
    r = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(creds.client_id, creds.client_secret),
    )
    assert r.status_code == 401


async def test_standard_client_library_gets_a_partner_token(sapp, app, engine_):
    """authlib's own httpx client, configured from the metadata document like an integration."""
    partner, creds = await make_partner_client(engine_, scopes=["points:earn", "catalog:write"])
    transport = httpx.ASGITransport(app=app)
    async with AsyncOAuth2Client(
        client_id=creds.client_id,
        client_secret=creds.client_secret,
        token_endpoint_auth_method="client_secret_basic",
        scope="points:earn",
        transport=transport,
        base_url=BASE_URL,
    ) as oauth:
        meta = (
            await oauth.request(
                "GET", "/.well-known/oauth-authorization-server", withhold_token=True
            )
        ).json()
        token = await oauth.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["scope"] == "points:earn"
        assert token["expires_at"] > token["expires_in"]
        p = await principal(sapp, token["access_token"])
        assert p is not None and p.partner_id == partner.id and p.scopes == {"points:earn"}
        # And the client sends it as a bearer token on its requests.
        r = await oauth.get("/healthz")
        assert r.request.headers["authorization"] == f"Bearer {token['access_token']}"


async def test_operator_token(sapp, client, engine_):
    creds = await make_operator_client(engine_)
    body = await client_credentials_token(client, creds)
    assert body["scope"] == "operator"
    p = await principal(sapp, body["access_token"])
    assert p is not None and p.kind == "operator" and p.scopes == {"operator"}
    assert p.partner_id is None and p.member_id is None


async def test_bootstrap_operator_command(client, db_uri):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "bootstrap-operator",
        env={**__import__("os").environ, "DATABASE_URL": db_uri},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    last = json.loads(out.decode().strip().splitlines()[-1])
    assert set(last) == {"client_id", "client_secret"}
    creds = clients.ClientCredentials(last["client_id"], last["client_secret"], ("operator",))
    assert (await client_credentials_token(client, creds))["scope"] == "operator"


# ---- authorization code + PKCE ----------------------------------------------------------


async def test_authorization_code_with_pkce_through_the_login_form(sapp, client, engine_):
    email, password, member = await make_member(engine_)
    verifier, challenge = pkce_pair()

    r = await client.get(authorize_url(challenge))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-frame-options"] == "DENY" and "no-store" in r.headers["cache-control"]
    for field in ('name="email"', 'name="password"', 'name="csrf_token"', "Coalition app"):
        assert field in r.text

    code = await authorization_code(
        client, email=email.upper(), password=password, challenge=challenge
    )
    r = await exchange_code(client, code, verifier)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "member" and body["expires_in"] == 600 and body["refresh_token"]
    assert "no-store" in r.headers["cache-control"]
    header, claims = jwt_parts(body["access_token"])
    assert header["typ"] == "at+jwt"
    assert claims["sub"] == str(member.id) and claims["client_id"] == APP_CLIENT_ID
    assert claims["kind"] == "member" and "partner_id" not in claims

    p = await principal(sapp, body["access_token"])
    assert p is not None and p.kind == "member" and p.member_id == member.id
    assert p.scopes == {"member"} and p.partner_id is None and p.client_id == APP_CLIENT_ID


async def test_pkce_plain_or_missing_is_refused(client):
    verifier, challenge = pkce_pair()
    for url in (
        authorize_url(verifier, method="plain"),
        authorize_url(None, method=None),
        authorize_url(challenge, method=None),
    ):
        r = await client.get(url)
        assert r.status_code == 302, url
        q = parse_qs(urlsplit(r.headers["location"]).query)
        assert q["error"] == ["invalid_request"] and q["state"] == ["st4te"]
        assert r.headers["location"].startswith(APP_REDIRECT_URI)


async def test_bad_client_or_redirect_uri_shows_an_error_page_not_a_redirect(client):
    _, challenge = pkce_pair()
    for url in (
        authorize_url(challenge).replace("coalition-app", "nobody"),
        authorize_url(challenge).replace("app%2Fcallback", "evil"),
    ):
        r = await client.get(url)
        assert r.status_code == 400 and "location" not in r.headers
        assert "not valid" in r.text


async def test_code_is_single_use_and_reuse_revokes_its_tokens(sapp, client, engine_):
    email, password, _ = await make_member(engine_)
    verifier, challenge = pkce_pair()
    code = await authorization_code(client, email=email, password=password, challenge=challenge)
    first = await exchange_code(client, code, verifier)
    assert first.status_code == 200
    again = await exchange_code(client, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: what the code produced is revoked too.
    r = await client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.json()["refresh_token"],
            "client_id": APP_CLIENT_ID,
        },
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    with pytest.raises(AuthError) as e:
        await principal(sapp, first.json()["access_token"])
    assert e.value.code == "TOKEN_REVOKED"


async def test_concurrent_exchanges_of_one_code_issue_one_token(client, engine_):
    email, password, _ = await make_member(engine_)
    verifier, challenge = pkce_pair()
    code = await authorization_code(client, email=email, password=password, challenge=challenge)
    results = await asyncio.gather(*(exchange_code(client, code, verifier) for _ in range(4)))
    assert sorted(r.status_code for r in results) == [200, 400, 400, 400]


async def test_wrong_or_missing_verifier_is_refused(client, engine_):
    email, password, _ = await make_member(engine_)
    verifier, challenge = pkce_pair()
    code = await authorization_code(client, email=email, password=password, challenge=challenge)
    other, _ = pkce_pair()
    r = await exchange_code(client, code, other)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": APP_REDIRECT_URI,
            "client_id": APP_CLIENT_ID,
        },
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    # The right verifier still works: failed attempts did not consume the code.
    assert (await exchange_code(client, code, verifier)).status_code == 200


async def test_expired_code_is_refused(client, engine_, pin_clock):
    email, password, _ = await make_member(engine_)
    verifier, challenge = pkce_pair()
    code = await authorization_code(client, email=email, password=password, challenge=challenge)
    pin_clock(timedelta(minutes=6))
    r = await exchange_code(client, code, verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_deny_redirects_with_access_denied(client):
    _, challenge = pkce_pair()
    url = authorize_url(challenge)
    csrf = await login_form(client, url)
    r = await client.post(url, data={"csrf_token": csrf, "decision": "deny"})
    assert r.status_code == 302
    q = parse_qs(urlsplit(r.headers["location"]).query)
    assert q["error"] == ["access_denied"] and q["state"] == ["st4te"] and "code" not in q


# ---- refresh tokens ------------------------------------------------------------------


async def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_family(sapp, client, engine_):
    email, password, member = await make_member(engine_)
    tokens = await member_tokens(client, email=email, password=password)

    async def refresh(token: str) -> httpx.Response:
        return await client.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": token,
                "client_id": APP_CLIENT_ID,
            },
        )

    r = await refresh(tokens["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != tokens["refresh_token"]
    assert second["access_token"] != tokens["access_token"] and second["scope"] == "member"
    assert jwt_parts(second["access_token"])[1]["sub"] == str(member.id)

    r = await refresh(tokens["refresh_token"])  # the rotated one again: refused...
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await refresh(second["refresh_token"])  # ...and the whole family is revoked
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    with pytest.raises(AuthError) as e:
        await principal(sapp, second["access_token"])
    assert e.value.code == "TOKEN_REVOKED"


async def test_refresh_token_is_bound_to_its_client(client, engine_):
    email, password, _ = await make_member(engine_)
    tokens = await member_tokens(client, email=email, password=password)
    _, creds = await make_partner_client(engine_)
    r = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic_auth(creds.client_id, creds.client_secret),
    )
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


# ---- key rotation, expiry, verification ---------------------------------------------


async def test_signing_key_rotation(sapp, client, engine_):
    _, creds = await make_partner_client(engine_)
    old = (await client_credentials_token(client, creds))["access_token"]
    old_kid = jwt_parts(old)[0]["kid"]
    keys = oauth_state(sapp).keys

    new_kid = await keys.rotate(engine_)
    new = (await client_credentials_token(client, creds))["access_token"]
    assert jwt_parts(new)[0]["kid"] == new_kid != old_kid
    published = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert {old_kid, new_kid} <= published
    assert (await principal(sapp, old)) is not None  # the old key still verifies
    assert (await principal(sapp, new)) is not None

    assert not await keys.retire(engine_, new_kid)  # never the key that signs
    assert await keys.retire(engine_, old_kid)
    published = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert old_kid not in published and new_kid in published
    with pytest.raises(AuthError) as e:
        await principal(sapp, old)
    assert e.value.code == "INVALID_TOKEN"
    assert (await principal(sapp, new)) is not None


async def test_a_rotation_signs_even_after_a_key_made_by_a_clock_ahead(sapp, client, engine_):
    """Another process (or a moved clock) stored the last key with a later timestamp than this
    process's now: a rotation here must still make the new key the signer."""
    _, creds = await make_partner_client(engine_)
    keys = oauth_state(sapp).keys
    async with engine_.begin() as conn:
        await keys_mod.create_signing_key(conn, now=clock.utcnow() + timedelta(hours=1))
    new_kid = await keys.rotate(engine_)
    token = (await client_credentials_token(client, creds))["access_token"]
    assert jwt_parts(token)[0]["kid"] == new_kid


async def test_expired_token_is_refused(sapp, client, engine_, pin_clock_at):
    _, creds = await make_partner_client(engine_)
    token = (await client_credentials_token(client, creds))["access_token"]
    claims = jwt_parts(token)[1]
    assert claims["exp"] - claims["iat"] == 600
    # Pin against the token's own clock, not "now": a slow runner may take seconds to get here.
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    pin_clock_at(expires - timedelta(seconds=1))
    assert (await principal(sapp, token)) is not None
    pin_clock_at(expires)
    with pytest.raises(AuthError) as e:
        await principal(sapp, token)
    assert e.value.code == "TOKEN_EXPIRED"


async def test_authenticate_rejects_bad_tokens(sapp, client, engine_):
    assert await principal(sapp, None) is None
    _, creds = await make_partner_client(engine_)
    good = (await client_credentials_token(client, creds))["access_token"]
    h, c, s = good.split(".")
    forged_claims = b64url({**jwt_parts(good)[1], "scope": "operator"})
    stranger = RSAKey.generate_key(2048, private=True, auto_kid=True)
    cases = {
        "garbage": "not-a-token",
        "forged": f"{h}.{forged_claims}.{s}",
        "unsigned": f"{b64url({'alg': 'none', 'typ': 'at+jwt'})}.{c}.",
        "unknown key": jwt.encode(
            {"alg": "RS256", "typ": "at+jwt", "kid": stranger.kid}, jwt_parts(good)[1], stranger
        ),
        "not an access token": jwt.encode(
            {"alg": "RS256", "kid": stranger.kid}, jwt_parts(good)[1], stranger
        ),
    }
    for name, token in cases.items():
        with pytest.raises(AuthError) as e:
            await principal(sapp, token)
        assert e.value.code == "INVALID_TOKEN", name
    with pytest.raises(AuthError) as e:
        await principal(sapp, good, scheme="Basic")
    assert e.value.code == "INVALID_TOKEN"
    assert 'error="invalid_token"' in e.value.www_authenticate


async def test_verification_costs_no_database_round_trip(sapp, client, engine_, monkeypatch):
    _, creds = await make_partner_client(engine_)
    token = (await client_credentials_token(client, creds))["access_token"]
    await principal(sapp, token)  # caches warm
    now = revocation.monotonic()
    monkeypatch.setattr(revocation, "monotonic", lambda: now)
    oauth_state(sapp).revoked.invalidate()
    await principal(sapp, token)
    statements: list[str] = []

    def count(*args) -> None:
        statements.append(args[2])

    event.listen(engine_.sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(20):
            assert (await principal(sapp, token)) is not None
    finally:
        event.remove(engine_.sync_engine, "before_cursor_execute", count)
    assert statements == []


async def test_revocations_by_other_processes_apply_within_the_refresh_period(
    client, engine_, monkeypatch
):
    """The bound when no notification arrives (the listener disconnected; here a list that
    does not listen): the next reload, REFRESH_SECONDS at most."""
    _, creds = await make_partner_client(engine_)
    token = (await client_credentials_token(client, creds))["access_token"]
    jti = jwt_parts(token)[1]["jti"]
    t = [1_000.0]
    monkeypatch.setattr(revocation, "monotonic", lambda: t[0])
    deaf = revocation.RevocationList()
    assert not await deaf.is_revoked(engine_, jti)
    async with engine_.begin() as conn:  # as another process's /oauth/revoke would
        await conn.execute(
            text(
                "INSERT INTO oauth_revoked_tokens (jti, expires_at, revoked_at) "
                "VALUES (:j, now() + interval '10 minutes', now())"
            ),
            {"j": jti},
        )
    assert not await deaf.is_revoked(engine_, jti)  # the documented staleness window
    t[0] += revocation.REFRESH_SECONDS
    assert await deaf.is_revoked(engine_, jti)


# ---- metadata, introspection, revocation ----------------------------------------------


async def test_metadata_document(client, monkeypatch):
    r = await client.get("/.well-known/oauth-authorization-server")
    assert r.status_code == 200
    meta = r.json()
    assert meta["issuer"] == BASE_URL
    assert meta["token_endpoint"] == f"{BASE_URL}/oauth/token"
    assert meta["authorization_endpoint"] == f"{BASE_URL}/oauth/authorize"
    assert meta["jwks_uri"] == f"{BASE_URL}/.well-known/jwks.json"
    assert meta["introspection_endpoint"] == f"{BASE_URL}/oauth/introspect"
    assert meta["revocation_endpoint"] == f"{BASE_URL}/oauth/revoke"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    assert set(meta["grant_types_supported"]) == {
        "authorization_code",
        "client_credentials",
        "refresh_token",
    }
    assert set(meta["scopes_supported"]) == set(clients.ALL_SCOPES)
    assert "client_secret_basic" in meta["token_endpoint_auth_methods_supported"]
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the test issuer is plain http
    AuthorizationServerMetadata(meta).validate()


async def test_introspection(client, engine_):
    _, creds = await make_partner_client(engine_, scopes=["points:earn"])
    _, other = await make_partner_client(engine_)
    token = (await client_credentials_token(client, creds))["access_token"]
    auth = basic_auth(creds.client_id, creds.client_secret)

    r = await client.post("/oauth/introspect", data={"token": token}, headers=auth)
    assert r.status_code == 200
    info = r.json()
    claims = jwt_parts(token)[1]
    assert info["active"] is True and info["client_id"] == creds.client_id
    assert (
        info["scope"] == "points:earn"
        and info["exp"] == claims["exp"]
        and info["jti"] == claims["jti"]
    )

    r = await client.post("/oauth/introspect", data={"token": "nonsense"}, headers=auth)
    assert r.json() == {"active": False}
    # Another partner may not look at this token.
    r = await client.post(
        "/oauth/introspect",
        data={"token": token},
        headers=basic_auth(other.client_id, other.client_secret),
    )
    assert r.json() == {"active": False}
    # Unauthenticated introspection is refused.
    r = await client.post("/oauth/introspect", data={"token": token})
    assert r.status_code == 401


async def test_operator_introspects_a_member_refresh_token(client, engine_):
    email, password, member = await make_member(engine_)
    tokens = await member_tokens(client, email=email, password=password)
    op = await make_operator_client(engine_)
    auth = basic_auth(op.client_id, op.client_secret)
    r = await client.post(
        "/oauth/introspect",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers=auth,
    )
    info = r.json()
    assert (
        info["active"] is True
        and info["sub"] == str(member.id)
        and info["client_id"] == APP_CLIENT_ID
    )
    r = await client.post("/oauth/introspect", data={"token": tokens["access_token"]}, headers=auth)
    assert r.json()["active"] is True and r.json()["sub"] == str(member.id)


async def test_revoking_an_access_token(sapp, client, engine_):
    _, creds = await make_partner_client(engine_)
    token = (await client_credentials_token(client, creds))["access_token"]
    auth = basic_auth(creds.client_id, creds.client_secret)
    assert (await principal(sapp, token)) is not None

    r = await client.post(
        "/oauth/revoke", data={"token": token, "token_type_hint": "access_token"}, headers=auth
    )
    assert r.status_code == 200
    r = await client.post("/oauth/introspect", data={"token": token}, headers=auth)
    assert r.json() == {"active": False}
    with pytest.raises(AuthError) as e:  # at once in this process, without waiting for a reload
        await principal(sapp, token)
    assert e.value.code == "TOKEN_REVOKED"
    # Unknown tokens are "revoked" quietly (RFC 7009 §2.2); other clients' tokens are not theirs.
    assert (
        await client.post("/oauth/revoke", data={"token": "whatever"}, headers=auth)
    ).status_code == 200
    _, other = await make_partner_client(engine_)
    other_token = (await client_credentials_token(client, other))["access_token"]
    r = await client.post("/oauth/revoke", data={"token": other_token}, headers=auth)
    assert r.status_code == 400
    assert (await principal(sapp, other_token)) is not None


async def test_the_app_revokes_its_refresh_token_on_logout(sapp, client, engine_):
    email, password, _ = await make_member(engine_)
    tokens = await member_tokens(client, email=email, password=password)
    r = await client.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": APP_CLIENT_ID}
    )
    assert r.status_code == 200
    r = await client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": APP_CLIENT_ID,
        },
    )
    assert r.status_code == 400
    with pytest.raises(AuthError):  # the access token of the same grant goes with it
        await principal(sapp, tokens["access_token"])


# ---- the login page: CSRF, throttling -----------------------------------------------


async def test_login_without_valid_csrf_token_is_refused(browser, engine_):
    email, password, _ = await make_member(engine_)
    _, challenge = pkce_pair()
    url = authorize_url(challenge)
    async with browser() as b:
        csrf = await login_form(b, url)
        for data in (
            {"email": email, "password": password},
            {"email": email, "password": password, "csrf_token": csrf[:-2] + "xx"},
        ):
            r = await b.post(url, data=data)
            assert r.status_code == 403 and "location" not in r.headers
            assert "expired" in r.text
    async with browser() as other:  # a token without the cookie it belongs to
        r = await other.post(url, data={"email": email, "password": password, "csrf_token": csrf})
        assert r.status_code == 403


async def test_failed_logins_are_throttled_per_email(browser, engine_, pin_clock):
    email, password, _ = await make_member(engine_)
    _, challenge = pkce_pair()
    url = authorize_url(challenge)
    async with browser() as b:
        csrf = await login_form(b, url)
        for _ in range(login.EMAIL_LIMIT - 1):
            r = await b.post(url, data={"csrf_token": csrf, "email": email, "password": "wrong"})
            assert r.status_code == 401 and "Incorrect email or password" in r.text
        r = await b.post(url, data={"csrf_token": csrf, "email": email, "password": "wrong"})
        assert r.status_code == 429 and "Too many failed sign-in attempts" in r.text
        assert int(r.headers["retry-after"]) > 0
        # Even the right password is refused while locked, from any address.
    async with browser() as b2:
        csrf = await login_form(b2, url)
        r = await b2.post(url, data={"csrf_token": csrf, "email": email, "password": password})
        assert r.status_code == 429 and "15 minutes" in r.text
        pin_clock(login.WINDOW + timedelta(seconds=1))
        r = await b2.post(url, data={"csrf_token": csrf, "email": email, "password": password})
        assert r.status_code == 302 and "code=" in r.headers["location"]


async def test_failed_logins_are_throttled_per_ip(browser, engine_, monkeypatch):
    monkeypatch.setattr(login, "IP_LIMIT", 3)
    email, password, _ = await make_member(engine_)
    _, challenge = pkce_pair()
    url = authorize_url(challenge)
    async with browser() as b:
        csrf = await login_form(b, url)
        for i in range(2):
            r = await b.post(
                url, data={"csrf_token": csrf, "email": f"nobody{i}@example.com", "password": "x"}
            )
            assert r.status_code == 401
        r = await b.post(
            url, data={"csrf_token": csrf, "email": "nobody9@example.com", "password": "x"}
        )
        assert r.status_code == 429
        r = await b.post(url, data={"csrf_token": csrf, "email": email, "password": password})
        assert r.status_code == 429
    async with browser() as elsewhere:
        await authorization_code(elsewhere, email=email, password=password, challenge=challenge)


async def test_login_page_escapes_and_keeps_the_email(browser, engine_):
    _, challenge = pkce_pair()
    url = authorize_url(challenge)
    async with browser() as b:
        csrf = await login_form(b, url)
        r = await b.post(
            url, data={"csrf_token": csrf, "email": '"><script>x</script>', "password": "x"}
        )
        assert r.status_code == 401
        assert "<script>x" not in r.text and "&lt;script&gt;" in r.text


async def test_login_upgrades_an_outdated_password_hash(client, engine_, monkeypatch):
    email, password, _ = await make_member(engine_)
    stronger = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(passwords, "hasher", stronger)
    await member_tokens(client, email=email, password=password)
    async with engine_.connect() as conn:
        _, new_hash = await passwords.get_credentials(conn, email=email)
    assert "t=2" in new_hash and passwords.verify_password(new_hash, password)


# ---- domain: the client registry ------------------------------------------------------


async def test_client_registry_validation(conn):
    partner = await partners.create(conn, name="P", category="shop", currency="RUB")
    with pytest.raises(ValidationError):
        await clients.create_partner_client(conn, partner_id=partner.id, scopes=["operator"])
    with pytest.raises(ValidationError):
        await clients.create_partner_client(conn, partner_id=partner.id, scopes=[])
    with pytest.raises(PartnerNotFound):
        await clients.create_partner_client(conn, partner_id=uuid.uuid4(), scopes=["points:earn"])
    creds = await clients.create_partner_client(
        conn, partner_id=partner.id, scopes=["settlement:read", "points:earn", "points:earn"]
    )
    assert creds.scopes == ("points:earn", "settlement:read")
    with pytest.raises(ValidationError):  # ids are unique
        await clients.create_partner_client(
            conn, partner_id=partner.id, scopes=["points:earn"], client_id=creds.client_id
        )
    record = await clients.get(conn, client_id=creds.client_id)
    assert record is not None and record.secret_hash is not None
    assert (
        record.secret_hash.startswith("$argon2id$")
        and creds.client_secret not in record.secret_hash
    )
    assert clients.verify_secret(record, creds.client_secret)
    assert not clients.verify_secret(record, creds.client_secret + "x")
    listed = await clients.list_for_partner(conn, partner_id=partner.id)
    assert [c.client_id for c in listed] == [creds.client_id]
    with pytest.raises(ClientNotFound):  # the public app has no secret to rotate
        await clients.rotate_secret(conn, client_id=APP_CLIENT_ID)
    app_client = await clients.get(conn, client_id=APP_CLIENT_ID)
    assert app_client is not None and app_client.is_public and app_client.scopes == ("member",)
    assert app_client.redirect_uris == ("/app/callback",)


def test_transport_policy():
    # An https issuer gets authlib's rule (TLS, or loopback); an http issuer opted out of TLS.
    assert transport_allowed("https://coalition.example/oauth/token", "https://coalition.example")
    assert transport_allowed("http://127.0.0.1:8000/oauth/token", "https://coalition.example")
    assert not transport_allowed(
        "http://coalition.example/oauth/token", "https://coalition.example"
    )
    assert transport_allowed("http://testserver/oauth/token", "http://testserver")
