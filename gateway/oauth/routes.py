"""HTTP endpoints of the authorization server (API.md):

POST /oauth/token, GET|POST /oauth/authorize, POST /oauth/introspect, POST /oauth/revoke,
GET /.well-known/oauth-authorization-server (RFC 8414), GET /.well-known/jwks.json.

Each handler follows server.py's prefetch / decide / apply split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import InsecureTransportError, OAuth2Error, scope_to_list
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from core import clock
from gateway.oauth import login, pages
from gateway.oauth.adapters import StarletteOAuth2Request, is_clean, parse_basic, transport_allowed
from gateway.oauth.entities import Client, MemberUser, OperatorUser, User
from gateway.oauth.server import OAuthServer
from gateway.oauth.state import OAuthState, oauth_state
from gateway.oauth.unit import Unit
from gateway.ratelimit import OAUTH_CLIENT, OAUTH_IP, hashing, limited, rate_limits
from members import operators, passwords
from partners.clients import ALL_SCOPES

MAX_FIELDS = 50
NO_MEMBER_SIGN_IN = "This application is not registered for sign-in."

log = logging.getLogger(__name__)


def metadata(issuer: str) -> dict[str, Any]:
    """The RFC 8414 authorization server metadata document."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "scopes_supported": list(ALL_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "code_challenge_methods_supported": ["S256"],
    }


def _context(request: Request) -> tuple[OAuthState, Any, Unit, OAuthServer]:
    state = oauth_state(request.app)
    unit = Unit(state, now=clock.utcnow())
    return state, request.app.state.engine, unit, OAuthServer(unit)


async def _form(request: Request) -> list[tuple[str, str]]:
    async with request.form(max_files=0, max_fields=MAX_FIELDS) as form:
        return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]


def _oauth_request(
    request: Request, *, form: list[tuple[str, str]], payload_from: str
) -> StarletteOAuth2Request:
    return StarletteOAuth2Request(
        method=request.method,
        url=str(request.url),
        headers=request.headers,
        args=list(request.query_params.multi_items()),
        form=form,
        payload_from=payload_from,
    )


async def token(request: Request) -> Response:
    """The token endpoint: client_credentials, authorization_code (+PKCE), refresh_token."""
    state, engine, unit, server = _context(request)
    if not transport_allowed(str(request.url), state.issuer):
        return server.handle_error_response(None, InsecureTransportError())
    oreq = _oauth_request(request, form=await _form(request), payload_from="form")
    async with engine.connect() as conn:
        await unit.prefetch_clients(conn, oreq)
        await unit.prefetch_grant(conn, oreq)
    unit.signing_key = await state.keys.signing_key(engine)
    response = await hashing(request, server.create_token_response, oreq)
    return await unit.finish(engine, response, refuse=lambda d: server.refuse(oreq, d))


async def _token_endpoint(request: Request, name: str) -> Response:
    state, engine, unit, server = _context(request)
    if not transport_allowed(str(request.url), state.issuer):
        return server.handle_error_response(None, InsecureTransportError())
    oreq = _oauth_request(request, form=await _form(request), payload_from="form")
    token_value = oreq.form.get("token")
    async with engine.connect() as conn:
        await unit.prefetch_clients(conn, oreq)
        if token_value:
            await unit.prefetch_token(conn, engine, token_value)
    response = await hashing(request, server.create_endpoint_response, name, oreq)
    return await unit.finish(engine, response, refuse=lambda d: server.refuse(oreq, d))


async def introspect(request: Request) -> Response:
    """RFC 7662 token introspection (authoritative: revocations are read from the database)."""
    return await _token_endpoint(request, "introspection")


async def revoke(request: Request) -> Response:
    """RFC 7009 token revocation (access tokens by jti; refresh tokens with their grant)."""
    return await _token_endpoint(request, "revocation")


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**pages.HEADERS, **(headers or {})})


async def _login_form(
    request: Request,
    state: OAuthState,
    key: bytes,
    grant: Any,
    *,
    email: str = "",
    error: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    secure = state.issuer.startswith("https://")
    cookie = login.csrf_cookie_name(secure)
    nonce = request.cookies.get(cookie)
    if not nonce or len(nonce) > 200:
        nonce = login.new_csrf_nonce()
    action = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    body = pages.login_page(
        client_name=grant.client.record.name,
        scopes=scope_to_list(grant.request.scope) or [],
        action=action,
        csrf_field=login.CSRF_FIELD,
        csrf_token=login.csrf_token(key, nonce),
        email=email,
        error=error,
    )
    response = _html(body, status, headers)
    response.set_cookie(
        cookie, nonce, max_age=3600, path="/", secure=secure, httponly=True, samesite="strict"
    )
    return response


async def authorize(request: Request) -> Response:
    """The login and consent page (GET shows it, POST signs in and redirects): members for the
    member app, operator users for the console (the client decides which accounts it reads)."""
    state, engine, unit, server = _context(request)
    if not transport_allowed(str(request.url), state.issuer):
        return _html(pages.error_page("Sign-in requires HTTPS."), 400)
    form = await _form(request) if request.method == "POST" else []
    oreq = _oauth_request(request, form=[], payload_from="args")
    async with engine.connect() as conn:
        await unit.prefetch_clients(conn, oreq)
    try:
        grant = server.get_consent_grant(request=oreq, end_user=None)
    except OAuth2Error as error:
        if error.redirect_uri:  # the client and its redirect URI are known: tell the client
            return server.handle_error_response(oreq, error)
        client = unit.clients.get(oreq.payload.client_id or "")
        if client is None or "authorization_code" not in client.record.grant_types:
            # An unknown id and a client that cannot sign members in (a partner's) look alike:
            # the page must not tell which client ids exist.
            return _html(pages.error_page(NO_MEMBER_SIGN_IN), 400)
        return _html(pages.error_page(error.description or error.error or "invalid request"), 400)
    key = await state.csrf_key(engine)
    if request.method != "POST":  # GET (and HEAD) show the form
        return await _login_form(request, state, key, grant)

    fields = dict(form)
    cookie = request.cookies.get(login.csrf_cookie_name(state.issuer.startswith("https://")))
    if not login.check_csrf(key, cookie, fields.get(login.CSRF_FIELD)):
        return await _login_form(
            request,
            state,
            key,
            grant,
            status=403,
            error="This form has expired or did not come from this page. Please sign in again.",
        )
    if fields.get("decision") == "deny":
        return server.create_authorization_response(request=oreq, grant_user=None, grant=grant)

    email = (fields.get("email") or "").strip()
    password = fields.get("password") or ""
    if (
        not email
        or not password
        or len(email) > 320
        or len(password) > 1024
        or not is_clean(email)
        or not is_clean(password)
    ):
        return await _login_form(
            request,
            state,
            key,
            grant,
            email=email[:320] if is_clean(email) else "",
            status=400,
            error="Enter your email and password.",
        )
    ip = rate_limits(request).client_ip(request)
    # The attempt is counted (and committed) before the password is checked: concurrent
    # attempts cannot all pass a check made before any of them was counted.
    async with engine.begin() as conn:
        attempt = await login.begin_attempt(conn, email=email, ip=ip, now=unit.now)
    locked = attempt.refused
    if locked is None:
        account = await _account(engine, grant.client, email)
        ok = await hashing(request, passwords.verify_password, account.password_hash, password)
        if ok and account.user is not None and account.password_hash is not None:
            if account.disabled:
                log.info("sign-in of disabled operator user %r from %s", email, ip)
                return await _login_form(
                    request,
                    state,
                    key,
                    grant,
                    email=email,
                    status=403,
                    error="This account has been disabled. Ask an administrator to enable it.",
                )
            return await _signed_in(
                request,
                engine,
                unit,
                server,
                oreq,
                grant,
                account.user,
                email,
                ip,
                password,
                account.password_hash,
            )
        log.info("failed sign-in for %r from %s", email, ip)
        locked = attempt.locks_on_failure
        if locked is None:
            return await _login_form(
                request,
                state,
                key,
                grant,
                email=email,
                status=401,
                error="Incorrect email or password.",
            )
    log.warning("sign-in locked for %r from %s for %s", email, ip, locked.retry_after)
    return await _login_form(
        request,
        state,
        key,
        grant,
        email=email,
        status=429,
        headers={"Retry-After": str(int(locked.retry_after.total_seconds()) + 1)},
        error=(
            "Too many failed sign-in attempts. For your security, sign-in is paused for "
            f"{locked.minutes} minute{'s' if locked.minutes != 1 else ''}; try again later."
        ),
    )


@dataclass(frozen=True)
class _Account:
    """Whom a sign-in names: a member for the member app, an operator user for the console
    (None and no hash when nobody has the email: the password check still runs, as long)."""

    user: User | None
    password_hash: str | None
    disabled: bool = False


async def _account(engine: Any, client: Client, email: str) -> _Account:
    async with engine.connect() as conn:
        if client.signs_in_operator_users:
            found = await operators.get_credentials(conn, email=email)
            if found is None:
                return _Account(None, None)
            return _Account(OperatorUser(found.id), found.password_hash, found.disabled)
        credentials = await passwords.get_credentials(conn, email=email)
    if credentials is None:
        return _Account(None, None)
    return _Account(MemberUser(credentials[0]), credentials[1])


async def _signed_in(
    request: Request,
    engine: Any,
    unit: Unit,
    server: OAuthServer,
    oreq: StarletteOAuth2Request,
    grant: Any,
    user: User,
    email: str,
    ip: str,
    password: str,
    password_hash: str,
) -> Response:
    response = server.create_authorization_response(request=oreq, grant_user=user, grant=grant)

    async def clear_failures(conn: Any) -> None:
        await login.record_success(conn, email=email, ip=ip)

    unit.ops.append(clear_failures)
    if passwords.needs_rehash(password_hash):
        new_hash = await hashing(request, passwords.hash_password, password)

        async def rehash(conn: Any) -> None:
            if isinstance(user, OperatorUser):
                await operators.set_password_hash(
                    conn, user_id=user.operator_user_id, password_hash=new_hash
                )
            else:
                await passwords.set_password_hash(
                    conn, member_id=user.member_id, password_hash=new_hash
                )

        unit.ops.append(rehash)
    return await unit.finish(engine, response, refuse=lambda d: server.refuse(oreq, d))


async def server_metadata(request: Request) -> JSONResponse:
    """RFC 8414 metadata."""
    return JSONResponse(
        metadata(oauth_state(request.app).issuer), headers={"Cache-Control": "public, max-age=3600"}
    )


async def jwks(request: Request) -> JSONResponse:
    """The public keys that verify access tokens (every key not retired)."""
    keys = await oauth_state(request.app).keys.jwks(request.app.state.engine)
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=60"})


async def _limit_keys(request: Request) -> list[tuple[str, str]]:
    """/oauth/* counts against the client IP, and the client id of Basic credentials when sent.
    (A client id in the form is not a key: the member app's is shared by every member.)"""
    keys = [(OAUTH_IP, f"ip:{rate_limits(request).client_ip(request)}")]
    basic = parse_basic(request.headers)
    if basic is not None:
        keys.append((OAUTH_CLIENT, f"client:{basic[0]}"))
    return keys


def _too_many(retry_after: int) -> Response:
    return JSONResponse(
        {
            "error": "rate_limited",
            "error_description": f"Too many requests: retry in {retry_after} s.",
        },
        status_code=429,
    )


def routes() -> list[BaseRoute]:
    """The authorization server's routes, for `create_app`."""

    def limit(endpoint: Any) -> Any:
        return limited(endpoint, _limit_keys, _too_many)

    return [
        Route("/oauth/token", limit(token), methods=["POST"]),
        Route("/oauth/authorize", limit(authorize), methods=["GET", "POST"]),
        Route("/oauth/introspect", limit(introspect), methods=["POST"]),
        Route("/oauth/revoke", limit(revoke), methods=["POST"]),
        Route("/.well-known/oauth-authorization-server", server_metadata, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    ]
