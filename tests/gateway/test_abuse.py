"""Access and abuse (issue 9, items 7, 8, 9, 12, 14, 15): throttles that hold under bursts,
rate limits per caller, the client IP behind proxies, client-id enumeration, hostile input on
the OAuth endpoints."""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from asgi_lifespan import LifespanManager

from core.settings import Settings
from gateway.app import create_app
from gateway.oauth import login
from members import codes as member_codes
from members import passwords
from partners import clients
from tests.gateway import oauth_helpers as oh
from tests.gateway.gql_helpers import (
    AUTHORIZE,
    REGISTER,
    gql,
    key,
    operator_token,
    register_and_login,
    rub,
    setup_partner,
)

BASE_URL = oh.BASE_URL


@asynccontextmanager
async def app_with(settings: Settings, db_uri: str, **overrides: Any) -> AsyncIterator[Any]:
    """An app of its own, with some settings changed (tiny limits, trusted proxies)."""
    application = create_app(
        Settings(**{**settings.model_dump(), **overrides}), database_url=db_uri
    )
    async with LifespanManager(application) as manager:
        yield manager.app


def http(app: Any, ip: str = "127.0.0.1", **kw: Any) -> httpx.AsyncClient:
    """A client whose TCP peer address is `ip`."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL, **kw)


def random_ip() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


async def register(c: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
    email = f"r-{secrets.token_hex(6)}@example.com"
    variables = {"input": {"email": email, "password": "long enough pass", "name": "R"}}
    r = await c.post("/graphql", json={"query": REGISTER, "variables": variables}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]["registerMember"]  # type: ignore[no-any-return]


@pytest.fixture
def checked_passwords(monkeypatch) -> list[str]:
    """The passwords the login form verified, in order (the hasher is spied on, not the DB)."""
    seen: list[str] = []
    real = passwords.verify_password

    def spy(password_hash: str | None, password: str) -> bool:
        seen.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", spy)
    return seen


# ---- item 7: the login lockout and the redemption-code throttle hold under a burst -----------


async def test_a_burst_of_wrong_passwords_checks_at_most_the_limit(app, engine, checked_passwords):
    email, password, _ = await oh.make_member(engine)
    url = oh.authorize_url(oh.pkce_pair()[1])
    async with http(app, random_ip()) as b:
        csrf = await oh.login_form(b, url)

        async def attempt(pw: str) -> httpx.Response:
            return await b.post(url, data={"csrf_token": csrf, "email": email, "password": pw})

        responses = await asyncio.gather(*(attempt(f"wrong-{i}") for i in range(30)))
        assert len(checked_passwords) == login.EMAIL_LIMIT
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [401] * (login.EMAIL_LIMIT - 1) + [429] * (31 - login.EMAIL_LIMIT)
        r = await attempt(password)  # the right one, after the limit: refused unchecked
        assert r.status_code == 429 and password not in checked_passwords


async def test_the_right_password_in_a_burst_gets_in_only_within_the_limit(
    app, engine, checked_passwords
):
    email, password, _ = await oh.make_member(engine)
    url = oh.authorize_url(oh.pkce_pair()[1])
    tries = [f"wrong-{i}" for i in range(29)]
    tries.insert(15, password)
    async with http(app, random_ip()) as b:
        csrf = await oh.login_form(b, url)
        responses = await asyncio.gather(
            *(
                b.post(url, data={"csrf_token": csrf, "email": email, "password": pw})
                for pw in tries
            )
        )
    right = responses[15]
    wrong_checked = [p for p in checked_passwords if p != password]
    if password in checked_passwords:
        # It had one of the first EMAIL_LIMIT slots; its success restarts the email's count.
        assert right.status_code == 302
        assert checked_passwords.index(password) < login.EMAIL_LIMIT
        assert len(wrong_checked) <= 2 * login.EMAIL_LIMIT - 1
    else:
        assert right.status_code == 429
        assert len(wrong_checked) == login.EMAIL_LIMIT


async def test_a_burst_of_bad_redemption_codes_is_counted_one_by_one(client, engine, monkeypatch):
    monkeypatch.setattr(member_codes, "THROTTLE_FAILURES", 5)
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Guessed Till")

    async def guess() -> str:
        code = "".join(secrets.choice("0123456789") for _ in range(12))
        variables = {
            "input": {
                "redemptionCode": code,
                "points": 1,
                "purchaseAmount": rub("10"),
                "orderRef": "o",
                "idempotencyKey": key(),
            }
        }
        d = await gql(client, AUTHORIZE, variables, partner.token)
        return d["authorizeRedemption"]["code"]  # type: ignore[no-any-return]

    codes = await asyncio.gather(*(guess() for _ in range(20)))
    assert codes.count("INVALID_REDEMPTION_CODE") == 5
    assert codes.count("LIMIT_EXCEEDED") == 15


async def test_code_throttle_counts_attempts_before_their_outcome(engine, monkeypatch):
    """On separate connections: the count and the insert are serialised per client, and a
    valid code (or a request the code did not decide) stops counting."""
    monkeypatch.setattr(member_codes, "THROTTLE_FAILURES", 3)
    actor = f"client:burst-{secrets.token_hex(4)}"

    async def begin() -> int | None:
        try:
            async with engine.begin() as conn:
                return await member_codes.begin_attempt(conn, actor=actor, partner_id=None)
        except member_codes.CodeLimitExceeded:
            return None

    attempts = [a for a in await asyncio.gather(*(begin() for _ in range(10))) if a is not None]
    assert len(attempts) == 3
    async with engine.begin() as conn:
        await member_codes.finish_attempt(conn, attempt_id=attempts[0], success=True)
        await member_codes.finish_attempt(conn, attempt_id=attempts[1], success=None)
        await member_codes.finish_attempt(conn, attempt_id=attempts[2], success=False)
    again = [a for a in await asyncio.gather(*(begin() for _ in range(10))) if a is not None]
    assert len(again) == 2


# ---- item 8: X-Forwarded-For only from trusted proxies -------------------------------------


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    from gateway.ratelimit import forwarded_client, trusted_networks

    trusted = trusted_networks("10.0.0.0/8, 192.168.1.1")
    assert forwarded_client("127.0.0.1", ["1.2.3.4"], trusted) == "127.0.0.1"
    assert forwarded_client("127.0.0.1", ["1.2.3.4"], ()) == "127.0.0.1"
    assert forwarded_client("10.1.1.1", ["1.2.3.4"], trusted) == "1.2.3.4"
    # Hops added by trusted proxies are skipped; what the client wrote left of them is not read.
    assert forwarded_client("10.1.1.1", ["6.6.6.6, 1.2.3.4, 192.168.1.1"], trusted) == "1.2.3.4"
    assert forwarded_client("10.1.1.1", ["6.6.6.6", "1.2.3.4"], trusted) == "1.2.3.4"
    assert forwarded_client("10.1.1.1", ["garbage, 10.2.2.2"], trusted) == "10.2.2.2"
    assert forwarded_client("10.1.1.1", [], trusted) == "10.1.1.1"


async def test_ip_limits_key_on_the_peer_unless_it_is_a_trusted_proxy(settings, db_uri):
    async with app_with(
        settings, db_uri, rate_limit_register="1/hour", trusted_proxies="10.200.0.0/16"
    ) as a:
        async with http(a, "127.0.0.1") as untrusted:
            assert (await register(untrusted, **{"X-Forwarded-For": "1.1.1.1"}))[
                "__typename"
            ] == "RegisterMemberSuccess"
            # Another forged address changes nothing: the peer is the key.
            again = await register(untrusted, **{"X-Forwarded-For": "2.2.2.2"})
            assert again["code"] == "RATE_LIMITED"
        async with http(a, "10.200.0.7") as proxy:
            for client_ip in ("3.3.3.3", "4.4.4.4"):
                d = await register(proxy, **{"X-Forwarded-For": client_ip})
                assert d["__typename"] == "RegisterMemberSuccess"
            d = await register(proxy, **{"X-Forwarded-For": "3.3.3.3"})
            assert d["code"] == "RATE_LIMITED"


# ---- item 9: one bucket per member ---------------------------------------------------------


async def test_one_member_flooding_does_not_limit_another(settings, db_uri):
    async with (
        app_with(settings, db_uri, rate_limit_per_second=0.001, rate_limit_burst=3) as a,
        http(a) as c,
    ):
        first = await register_and_login(c)
        second = await register_and_login(c)

        async def me(token: str) -> int:
            r = await c.post(
                "/graphql",
                json={"query": "{ me { id } }"},
                headers={"Authorization": f"Bearer {token}"},
            )
            return r.status_code

        assert [await me(first.token) for _ in range(4)] == [200, 200, 200, 429]
        assert await me(second.token) == 200


# ---- item 12: /oauth/* and /settlement/* are rate-limited; argon2 stays off the loop -------


async def test_token_endpoint_is_limited_per_client(settings, db_uri, engine):
    _, creds = await oh.make_partner_client(engine, scopes=["points:earn"])
    _, other = await oh.make_partner_client(engine, scopes=["points:earn"])
    async with app_with(settings, db_uri, rate_limit_oauth_client="2/minute") as a, http(a) as c:

        async def token(cr: clients.ClientCredentials, secret: str | None = None) -> Any:
            return await c.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                headers=oh.basic_auth(cr.client_id, secret or cr.client_secret),
            )

        assert (await token(creds)).status_code == 200
        assert (await token(creds, "wrong")).status_code == 401
        r = await token(creds)
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert 0 < int(r.headers["retry-after"]) <= 60
        assert (await token(other)).status_code == 200


async def test_oauth_routes_are_limited_per_ip(settings, db_uri):
    async with app_with(settings, db_uri, rate_limit_oauth_ip="3/minute") as a:
        url = oh.authorize_url(oh.pkce_pair()[1])
        async with http(a, "10.77.0.1") as c:
            assert [(await c.get(url)).status_code for _ in range(3)] == [200] * 3
            r = await c.post("/oauth/revoke", data={"token": "x", "client_id": "coalition-app"})
            assert r.status_code == 429 and "retry-after" in r.headers
        async with http(a, "10.77.0.2") as elsewhere:
            assert (await elsewhere.get(url)).status_code == 200


async def test_settlement_routes_are_limited_per_caller(settings, db_uri, engine):
    op = await oh.make_operator_client(engine)
    op2 = await oh.make_operator_client(engine)
    async with app_with(settings, db_uri, rate_limit_settlement="2/minute") as a, http(a) as c:
        t1 = (await oh.client_credentials_token(c, op))["access_token"]
        t2 = (await oh.client_credentials_token(c, op2))["access_token"]

        async def liability(token: str) -> httpx.Response:
            return await c.get(
                "/settlement/liability.csv", headers={"Authorization": f"Bearer {token}"}
            )

        assert [(await liability(t1)).status_code for _ in range(2)] == [200, 200]
        r = await liability(t1)
        assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
        assert int(r.headers["retry-after"]) > 0
        assert (await liability(t2)).status_code == 200


async def test_argon2_runs_off_the_loop_at_most_n_at_once(app, engine, monkeypatch):
    loop_thread = threading.get_ident()
    threads: list[int] = []
    busy = {"now": 0, "max": 0}
    lock = threading.Lock()
    real_verify = passwords.verify_password
    real_hash = clients.hash_secret

    def spy_verify(password_hash: str | None, password: str) -> bool:
        with lock:
            busy["now"] += 1
            busy["max"] = max(busy["max"], busy["now"])
        try:
            threads.append(threading.get_ident())
            # A real argon2 cost, so that concurrent checks overlap if they are let to.
            PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("x")
            return real_verify(password_hash, password)
        finally:
            with lock:
                busy["now"] -= 1

    def spy_hash(secret: str) -> str:
        threads.append(threading.get_ident())
        return real_hash(secret)

    monkeypatch.setattr(passwords, "verify_password", spy_verify)
    monkeypatch.setattr(clients, "hash_secret", spy_hash)
    await oh.make_partner_client(engine)  # hashes its new secret
    url = oh.authorize_url(oh.pkce_pair()[1])

    async def login_from_own_ip() -> None:
        async with http(app, random_ip()) as b:
            csrf = await oh.login_form(b, url)
            data = {"csrf_token": csrf, "email": f"{secrets.token_hex(4)}@x.org", "password": "p"}
            assert (await b.post(url, data=data)).status_code == 401

    await asyncio.gather(*(login_from_own_ip() for _ in range(8)))
    assert len(threads) == 9 and loop_thread not in threads
    assert busy["max"] == 1  # PASSWORD_HASH_THREADS


# ---- item 14: client ids cannot be enumerated; registration is limited per IP --------------


async def test_unknown_client_and_wrong_secret_get_the_same_answer(client, engine, monkeypatch):
    _, creds = await oh.make_partner_client(engine)
    unknown = "pc_" + secrets.token_urlsafe(16)
    for path, data in (
        ("/oauth/token", {"grant_type": "client_credentials"}),
        ("/oauth/introspect", {"token": "x"}),
        ("/oauth/revoke", {"token": "x"}),
    ):
        wrong = await client.post(path, data=data, headers=oh.basic_auth(creds.client_id, "nope"))
        absent = await client.post(path, data=data, headers=oh.basic_auth(unknown, "nope"))
        assert wrong.status_code == absent.status_code == 401, (path, wrong.text)
        assert wrong.content == absent.content, path
        assert wrong.headers["www-authenticate"] == absent.headers["www-authenticate"]
        assert wrong.json()["error"] == "invalid_client"
    # A public client id that does not exist answers like one that does not match.
    form = {"token": "x", "client_id": "app_" + secrets.token_urlsafe(8)}
    r = await client.post("/oauth/revoke", data=form)
    assert r.json() == {
        "error": "invalid_client",
        "error_description": wrong.json()["error_description"],
    }


async def test_the_login_page_does_not_tell_which_client_ids_exist(client, engine):
    _, creds = await oh.make_partner_client(engine)
    unknown = "pc_" + secrets.token_urlsafe(16)
    for extra in ("", "&redirect_uri=http://elsewhere.example/cb"):
        pages = [
            await client.get(f"/oauth/authorize?response_type=code&client_id={cid}&state=s{extra}")
            for cid in (creds.client_id, unknown)
        ]
        assert pages[0].status_code == pages[1].status_code == 400
        assert pages[0].content == pages[1].content


async def test_an_unknown_client_costs_a_dummy_argon2_check(client, monkeypatch):
    calls: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append("verify")
            return super().verify(hash, password)

    monkeypatch.setattr(clients, "_hasher", Counting(time_cost=1, memory_cost=8, parallelism=1))
    dummy = getattr(clients, "_dummy_hash", None)
    if dummy is not None:
        dummy.cache_clear()
    try:
        r = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers=oh.basic_auth("pc_" + secrets.token_urlsafe(16), "secret"),
        )
    finally:
        if dummy is not None:
            dummy.cache_clear()
    assert r.status_code == 401 and calls == ["verify"]


async def test_registration_is_limited_per_ip(settings, db_uri):
    async with app_with(settings, db_uri, rate_limit_register="3/hour") as a:
        async with http(a, "10.88.0.1") as c:
            results = [await register(c) for _ in range(4)]
            assert [d["__typename"] for d in results[:3]] == ["RegisterMemberSuccess"] * 3
            assert results[3]["__typename"] == "LimitExceededError"
            assert results[3]["code"] == "RATE_LIMITED"
        async with http(a, "10.88.0.2") as other:
            assert (await register(other))["__typename"] == "RegisterMemberSuccess"


# ---- item 15: NUL and lone surrogates in client ids and the login e-mail -------------------

BAD = ["%00", "a%00b", "%ED%A0%80", "%F0%9F"]


def _basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
async def test_bad_client_ids_are_refused_on_every_endpoint(client, path):
    form = {"grant_type": "client_credentials", "token": "x"}
    for bad in BAD:
        body = "&".join(
            [f"{k}={v}" for k, v in form.items()] + [f"client_id={bad}", "grant_type=x"]
        )
        r = await client.post(
            path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client", (bad, r.text)
    for raw in (b"\x00:secret", b"a\x00b:secret", b"\xed\xa0\x80:secret", b"%00:secret"):
        r = await client.post(path, data=form, headers=_basic(raw))
        assert r.status_code in (400, 401), (raw, r.text)
        assert r.json()["error"] in ("invalid_client", "invalid_request"), (raw, r.text)


async def test_bad_client_id_on_the_login_page_is_a_400(client):
    for bad in BAD:
        r = await client.get(
            f"/oauth/authorize?response_type=code&client_id={bad}&redirect_uri=x&state=s"
        )
        assert r.status_code == 400 and "text/html" in r.headers["content-type"], bad


async def test_bad_login_email_shows_the_form_again(app, engine):
    url = oh.authorize_url(oh.pkce_pair()[1])
    async with http(app, random_ip()) as b:
        csrf = await oh.login_form(b, url)
        for bad in ("a%00b@example.com", "%ED%A0%80@example.com", "x@example.com%00"):
            r = await b.post(
                url,
                content=f"csrf_token={csrf}&email={bad}&password=pw".encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert r.status_code in (400, 401), (bad, r.text)
            assert "Sign in" in r.text or "sign in" in r.text.lower()


def test_is_clean():
    from gateway.oauth.adapters import is_clean

    assert is_clean("pc_abc") and is_clean("ü@example.com")
    assert not is_clean("a\x00b") and not is_clean("\ud800") and not is_clean("x\udfff")
