"""authlib's framework-neutral `AuthorizationServer`, adapted to Starlette and an async database.

authlib has no Starlette integration; its Flask one shows the hooks a framework provides
(`create_oauth2_request`, `create_json_request`, `handle_response`, `send_signal`,
`query_client`, `save_token`), which `OAuthServer` implements here.

Sync and async. authlib's request handling is synchronous, our database access is not. Rather
than giving authlib a blocking connection, each request is handled in three steps, with a
`Unit` (one per request) carrying the data between them:

1. prefetch (async): read everything the grant can ask for: the client(s) named by the request,
   the authorization code or refresh token presented, the current signing key;
2. decide (sync, in a worker thread): authlib validates the request and builds the response.
   Its storage hooks read only from the Unit and *record* writes instead of performing them.
   The thread keeps argon2 (client secrets) and RSA signing off the event loop;
3. apply (async): the recorded writes run in one transaction. Single use is enforced there:
   consuming a code or rotating a refresh token is a conditional UPDATE, so of two concurrent
   requests with the same code only one commits; the other gets `invalid_grant` and, as
   RFC 6749 §4.1.2 and RFC 9700 §4.14 ask for a reused code or refresh token, the tokens issued
   from that grant are revoked.

An access token that was signed but whose transaction did not commit is never sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from authlib.common.security import generate_token, is_secure_transport
from authlib.oauth2 import rfc7009, rfc7662
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    AuthorizationServer,
    ClientMixin,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    JsonPayload,
    JsonRequest,
    OAuth2Payload,
    OAuth2Request,
    TokenMixin,
    grants,
    scope_to_list,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import RSAKey
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.datastructures import Headers, ImmutableMultiDict
from starlette.responses import Response

from gateway.oauth import store
from gateway.oauth.keys import ALG, signing_keyset
from gateway.oauth.state import OAuthState
from gateway.oauth.tokens import ACCESS_TOKEN_TTL, AuthError, audience, verify_access_token
from partners import clients
from partners.clients import ALL_SCOPES, OPERATOR_SCOPE, ClientRecord

log = logging.getLogger(__name__)

CODE_TTL = timedelta(minutes=5)
MAX_CLIENT_ID = 128
# One answer for an unknown client id, a wrong secret and a wrong method: the error must not
# tell which client ids exist (and an unknown id costs a dummy argon2 check, as a real one).
CLIENT_AUTH_FAILED = "Client authentication failed."
REFRESH_TOKEN_TTL = timedelta(days=30)


class Conflict(Exception):
    """A recorded write lost a race (code or refresh token used meanwhile)."""

    def __init__(self, description: str, family_id: uuid.UUID) -> None:
        super().__init__(description)
        self.description = description
        self.family_id = family_id


# ---- requests and responses ------------------------------------------------------------


def transport_allowed(url: str, issuer: str) -> bool:
    """authlib refuses OAuth over plain HTTP (except loopback). A deployment that publishes an
    `http://` issuer has opted out of TLS (development, tests, a private demo network); one that
    publishes `https://` gets authlib's rule."""
    return is_secure_transport(url) or not issuer.startswith("https://")


def is_clean(value: str) -> bool:
    """False for text PostgreSQL cannot store or UTF-8 cannot encode (NUL, lone surrogates):
    such a client id or e-mail is refused before it reaches the database."""
    return "\x00" not in value and not any("\ud800" <= ch <= "\udfff" for ch in value)


def parse_basic(headers: Any) -> tuple[str, str] | None:
    """Client id and secret from `Authorization: Basic`, form-decoded (RFC 6749 §2.3.1)."""
    auth = headers.get("Authorization") or ""
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if ":" not in decoded:
        return None
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


class StarlettePayload(OAuth2Payload):
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._data: dict[str, str] = {}
        self._datalist: dict[str, list[str]] = {}
        for key, value in items:
            self._data.setdefault(key, value)
            self._datalist.setdefault(key, []).append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:  # type: ignore[override]
        return self._datalist


class StarletteOAuth2Request(OAuth2Request):
    """An OAuth2Request built from an already-read Starlette request (authlib never awaits).

    `payload_from` says where the OAuth parameters are: the query for the authorization
    endpoint, the form body for the token, introspection and revocation endpoints.
    """

    def __init__(
        self,
        *,
        method: str,
        url: str,
        headers: Headers,
        args: list[tuple[str, str]],
        form: list[tuple[str, str]],
        payload_from: str,
    ) -> None:
        # The transport was checked by the caller with `transport_allowed`; authlib's own check
        # (TLS or loopback only) would refuse an explicitly plain-HTTP deployment.
        parts = urlsplit(url)
        super().__init__(method, urlunsplit(("https", *parts[1:])), headers=headers)
        self.uri = url
        self._args = ImmutableMultiDict(args)
        self._form = ImmutableMultiDict(form)
        self.payload = StarlettePayload(args if payload_from == "args" else form)

    @property
    def args(self) -> ImmutableMultiDict:  # type: ignore[override]
        return self._args

    @property
    def form(self) -> ImmutableMultiDict:  # type: ignore[override]
        return self._form


class StarletteJsonPayload(JsonPayload):
    def __init__(self, data: Any) -> None:
        self._data = data

    @property
    def data(self) -> Any:
        return self._data


class StarletteJsonRequest(JsonRequest):
    """A JsonRequest from an already-read body (for JSON endpoints such as client registration)."""

    def __init__(self, *, method: str, url: str, headers: Headers, body: bytes) -> None:
        super().__init__(method, url, headers)
        self.payload = StarletteJsonPayload(json.loads(body) if body else {})


def response_from(status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
    """A Starlette response for authlib's (status, body, headers) triple."""
    if isinstance(body, dict):
        body = json.dumps(body)
    return Response(content=body or b"", status_code=status, headers=dict(headers))


# ---- authlib models over our records ---------------------------------------------------


@dataclass(frozen=True)
class MemberUser:
    """The resource owner of a member token."""

    member_id: uuid.UUID

    def get_user_id(self) -> str:
        return str(self.member_id)


class Client(ClientMixin):
    """authlib's view of a registered client."""

    def __init__(self, record: ClientRecord, *, issuer: str, now: datetime) -> None:
        self.record = record
        self.now = now
        # A redirect URI starting with "/" is relative to PUBLIC_URL (the coalition's own app).
        self.redirect_uris = [issuer + u if u.startswith("/") else u for u in record.redirect_uris]

    @property
    def token_kind(self) -> str:
        """The `kind` claim of tokens issued to this client."""
        return "member" if self.record.kind == "app" else self.record.kind

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        # No scope: every scope registered for the client (API.md). Otherwise all of the
        # requested scopes must be registered; None makes authlib answer invalid_scope.
        if not scope:
            return " ".join(self.record.scopes)
        requested = list(dict.fromkeys(scope_to_list(scope)))
        if not requested or not set(requested) <= set(self.record.scopes):
            return None
        return " ".join(requested)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return clients.verify_secret(self.record, client_secret, at=self.now)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.record.disabled_at is not None:
            return False
        return method == ("none" if self.record.is_public else "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.record.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.record.grant_types


class Code(AuthorizationCodeMixin):
    def __init__(self, row: store.CodeRow) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str | None:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


class RefreshToken(TokenMixin):
    def __init__(self, row: store.RefreshRow, *, now: datetime) -> None:
        self.row = row
        self.now = now
        self.client_id = row.client_id

    def check_client(self, client: Client) -> bool:
        return self.row.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return int((self.row.expires_at - self.row.issued_at).total_seconds())

    def is_expired(self) -> bool:
        return self.now >= self.row.expires_at

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None or self.row.rotated_at is not None

    def introspection(self) -> dict[str, Any]:
        return {
            "active": True,
            "client_id": self.row.client_id,
            "scope": self.row.scope,
            "sub": str(self.row.member_id),
            "iat": int(self.row.issued_at.timestamp()),
            "exp": int(self.row.expires_at.timestamp()),
        }


class AccessToken(TokenMixin):
    def __init__(self, claims: dict[str, Any], *, revoked: bool, now: datetime) -> None:
        self.claims = claims
        self.revoked = revoked
        self.now = now
        self.client_id = claims["client_id"]

    def check_client(self, client: Client) -> bool:
        return self.claims["client_id"] == client.get_client_id()

    def get_scope(self) -> str:
        return str(self.claims.get("scope") or "")

    def get_expires_in(self) -> int:
        return int(self.claims["exp"]) - int(self.claims["iat"])

    def is_expired(self) -> bool:
        return int(self.now.timestamp()) >= int(self.claims["exp"])

    def is_revoked(self) -> bool:
        return self.revoked

    def introspection(self) -> dict[str, Any]:
        c = self.claims
        payload = {"active": True, "token_type": "Bearer", "scope": self.get_scope()}
        for name in ("client_id", "sub", "aud", "iss", "exp", "iat", "jti", "kind", "partner_id"):
            if name in c:
                payload[name] = c[name]
        return payload


# ---- the per-request unit of work ------------------------------------------------------

Op = Callable[[AsyncConnection], Awaitable[None]]


class Unit:
    """What one OAuth request may read (prefetched) and the writes it decided on."""

    def __init__(self, state: OAuthState, *, now: datetime) -> None:
        self.state = state
        self.issuer = state.issuer
        self.now = now
        self.clients: dict[str, Client | None] = {}
        self.code: tuple[str, store.CodeRow | None] | None = None
        self.refresh: tuple[str, store.RefreshRow | None] | None = None
        self.access: tuple[str, AccessToken | None] | None = None
        self.signing_key: RSAKey | None = None
        self.issued_jti: str | None = None
        self.issued_exp: datetime | None = None
        self.ops: list[Op] = []
        self.security_ops: list[Op] = []  # applied even when the request is refused
        self.revoked: dict[str, datetime] = {}

    # prefetch ----------------------------------------------------------------------------

    async def prefetch_clients(self, conn: AsyncConnection, request: OAuth2Request) -> None:
        ids = []
        basic = parse_basic(request.headers)
        if basic:
            ids.append(basic[0])
        if request.payload.client_id:
            ids.append(request.payload.client_id)
        for client_id in ids:
            if client_id not in self.clients:
                if not is_clean(client_id) or len(client_id) > MAX_CLIENT_ID:
                    self.clients[client_id] = None  # no such client can exist
                    continue
                record = await clients.get(conn, client_id=client_id)
                self.clients[client_id] = (
                    Client(record, issuer=self.issuer, now=self.now) if record else None
                )

    async def prefetch_grant(self, conn: AsyncConnection, request: OAuth2Request) -> None:
        grant_type = request.payload.grant_type
        if grant_type == "authorization_code" and request.form.get("code"):
            code = request.form["code"]
            self.code = (code, await store.get_code(conn, code=code))
        elif grant_type == "refresh_token" and request.form.get("refresh_token"):
            token = request.form["refresh_token"]
            self.refresh = (token, await store.get_refresh_token(conn, token=token))

    async def prefetch_token(self, conn: AsyncConnection, engine: AsyncEngine, token: str) -> None:
        """For introspection and revocation: the access token (a JWT) or refresh token."""
        if token.count(".") == 2:
            try:
                claims = await verify_access_token(
                    token,
                    keys=self.state.keys,
                    engine=engine,
                    issuer=self.issuer,
                    check_expiry=False,
                )
            except AuthError:
                claims = None
            if claims is not None:
                revoked = await store.is_access_token_revoked(conn, jti=claims["jti"])
                self.access = (token, AccessToken(claims, revoked=revoked, now=self.now))
                return
            self.access = (token, None)
        self.refresh = (token, await store.get_refresh_token(conn, token=token))

    # reads (called by authlib, in the worker thread) --------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        if client_id not in self.clients:
            raise LookupError(f"client {client_id!r} was not prefetched")
        return self.clients[client_id]

    def query_code(self, code: str, client: Client) -> Code | None:
        if self.code is None or self.code[0] != code:
            raise LookupError("authorization code was not prefetched")
        row = self.code[1]
        if row is None or row.client_id != client.get_client_id():
            return None
        if row.used_at is not None:
            # Replayed code: revoke what was issued from it (RFC 6749 §4.1.2).
            self._revoke_family_anyway(row.id)
            return None
        if self.now >= row.expires_at:
            return None
        return Code(row)

    def query_refresh_token(self, token: str) -> RefreshToken | None:
        if self.refresh is None or self.refresh[0] != token:
            raise LookupError("refresh token was not prefetched")
        row = self.refresh[1]
        if row is None or row.revoked_at is not None or self.now >= row.expires_at:
            return None
        if row.rotated_at is not None:
            # A rotated token came back: it leaked, or its family did. Revoke the family.
            self._revoke_family_anyway(row.family_id)
            return None
        return RefreshToken(row, now=self.now)

    def query_token(self, token: str, hint: str | None) -> AccessToken | RefreshToken | None:
        """Introspection and revocation: whichever kind of token `token` is (hints are hints)."""
        if self.access is not None and self.access[0] == token and self.access[1] is not None:
            return self.access[1]
        if self.refresh is not None and self.refresh[0] == token and self.refresh[1] is not None:
            return RefreshToken(self.refresh[1], now=self.now)
        return None

    # writes (recorded by authlib's hooks, applied by `finish`) -----------------------------

    def save_code(self, code: str, request: OAuth2Request) -> None:
        client, user = request.client, request.user
        data = request.payload.data
        kwargs = {
            "code": code,
            "client_id": client.get_client_id(),
            "member_id": user.member_id,
            "redirect_uri": request.payload.redirect_uri,
            "scope": request.scope,
            "code_challenge": data["code_challenge"],
            "code_challenge_method": data["code_challenge_method"],
            "now": self.now,
            "ttl": CODE_TTL,
        }

        async def op(conn: AsyncConnection) -> None:
            await store.insert_code(conn, **kwargs)

        self.ops.append(op)

    def consume_code(self, code: Code) -> None:
        row, now = code.row, self.now

        async def op(conn: AsyncConnection) -> None:
            if not await store.consume_code(conn, code_id=row.id, now=now):
                raise Conflict("The authorization code was already used.", row.id)

        self.ops.append(op)

    def rotate_refresh_token(self, token: RefreshToken) -> None:
        row, now = token.row, self.now

        async def op(conn: AsyncConnection) -> None:
            if not await store.rotate_refresh_token(conn, token_id=row.id, now=now):
                raise Conflict("The refresh token was already used.", row.family_id)

        self.ops.append(op)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        if "refresh_token" not in token:
            return  # access tokens are self-contained JWTs: nothing to store
        if request.refresh_token is not None:
            # RFC 6749 §6: the new refresh token has the scope of the one it replaces.
            family_id, scope = request.refresh_token.row.family_id, request.refresh_token.row.scope
        else:
            family_id, scope = (
                request.authorization_code.row.id,
                request.authorization_code.row.scope,
            )
        kwargs = {
            "token": token["refresh_token"],
            "family_id": family_id,
            "client_id": request.client.get_client_id(),
            "member_id": request.user.member_id,
            "scope": scope,
            "now": self.now,
            "ttl": REFRESH_TOKEN_TTL,
            "access_jti": self.issued_jti,
            "access_expires_at": self.issued_exp,
        }

        async def op(conn: AsyncConnection) -> None:
            await store.insert_refresh_token(conn, **kwargs)

        self.ops.append(op)

    def revoke(self, token: AccessToken | RefreshToken) -> None:
        now = self.now
        if isinstance(token, AccessToken):
            jti = token.claims["jti"]
            exp = datetime.fromtimestamp(int(token.claims["exp"]), tz=now.tzinfo)

            async def op(conn: AsyncConnection) -> None:
                await store.revoke_access_token(conn, jti=jti, expires_at=exp, now=now)
                self.revoked[jti] = exp

            self.ops.append(op)
        else:
            # RFC 7009 §2.1: revoking a refresh token also revokes the access tokens of its grant.
            family_id = token.row.family_id

            async def op(conn: AsyncConnection) -> None:
                self.revoked.update(await store.revoke_family(conn, family_id=family_id, now=now))

            self.ops.append(op)

    def _revoke_family_anyway(self, family_id: uuid.UUID) -> None:
        now = self.now

        async def op(conn: AsyncConnection) -> None:
            self.revoked.update(await store.revoke_family(conn, family_id=family_id, now=now))

        self.security_ops.append(op)

    async def finish(
        self, engine: AsyncEngine, response: Response, *, refuse: Callable[[str], Response]
    ) -> Response:
        """Apply the recorded writes in one transaction; on a lost race answer `refuse(...)`."""
        if response.status_code < 400 and self.ops:
            try:
                async with engine.begin() as conn:
                    for op in self.ops:
                        await op(conn)
            except Conflict as conflict:
                self._revoke_family_anyway(conflict.family_id)
                self.revoked.clear()
                response = refuse(conflict.description)
        if self.security_ops:
            async with engine.begin() as conn:
                for op in self.security_ops:
                    await op(conn)
        if self.revoked:
            self.state.revoked.add(self.revoked)
        return response


# ---- authlib: token generator, grants, endpoints, server -------------------------------


class AccessTokenGenerator(JWTBearerTokenGenerator):
    """RFC 9068 access tokens signed with the current database key, timed by `core.clock`."""

    def __init__(self, unit: Unit) -> None:
        super().__init__(
            issuer=unit.issuer,
            alg=ALG,
            refresh_token_generator=lambda **kw: generate_token(48),
            expires_generator=ACCESS_TOKEN_TTL,
        )
        self.unit = unit

    def get_jwks(self) -> Any:
        assert self.unit.signing_key is not None, "signing key not prefetched"
        return signing_keyset(self.unit.signing_key)

    def get_audiences(self, client: Client, user: Any, scope: str) -> str:
        return audience(self.unit.issuer)

    def get_jti(self, client: Client, grant_type: str, user: Any, scope: str) -> str:
        self.unit.issued_jti = generate_token(24)
        return self.unit.issued_jti

    def get_extra_claims(
        self, client: Client, grant_type: str, user: Any, scope: str
    ) -> dict[str, Any]:
        # authlib stamps iat/exp from time.time(); these replace them with the pinnable clock.
        iat = int(self.unit.now.timestamp())
        exp = iat + ACCESS_TOKEN_TTL
        self.unit.issued_exp = datetime.fromtimestamp(exp, tz=self.unit.now.tzinfo)
        claims: dict[str, Any] = {"iat": iat, "exp": exp, "kind": client.token_kind}
        if client.record.partner_id is not None:
            claims["partner_id"] = str(client.record.partner_id)
        return claims


def authenticate_client_secret_basic(
    query_client: Callable[[str], Client | None], request: OAuth2Request
) -> Client | None:
    """authlib's client_secret_basic, with RFC 6749 §2.3.1 form-decoding of id and secret."""
    credentials = parse_basic(request.headers)
    if credentials is None:
        return None
    client_id, secret = credentials
    client = query_client(client_id)
    if client is None:
        clients.verify_unknown(secret)  # the time of a real check
        return None
    return client if client.check_client_secret(secret) else None


def authenticate_none(
    query_client: Callable[[str], Client | None], request: OAuth2Request
) -> Client | None:
    """authlib's `none` method (public clients), without its "does not exist" answer."""
    client_id = request.payload.client_id
    if client_id and not request.payload.data.get("client_secret"):
        return query_client(client_id)
    return None


class S256CodeChallenge(CodeChallenge):
    """PKCE, required, S256 only: `plain` or a missing challenge is refused up front."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError(
                "PKCE is required: send code_challenge with code_challenge_method=S256."
            )
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Only code_challenge_method=S256 is supported.")
        super().validate_code_challenge(grant, redirect_uri)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        self.server.unit.save_code(code, request)

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        return self.server.unit.query_code(code, client)

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.unit.consume_code(authorization_code)

    def authenticate_user(self, authorization_code: Code) -> MemberUser:
        return MemberUser(authorization_code.row.member_id)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every use returns a new refresh token

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        return self.server.unit.query_refresh_token(refresh_token)

    def authenticate_user(self, refresh_token: RefreshToken) -> MemberUser:
        return MemberUser(refresh_token.row.member_id)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        self.server.unit.rotate_refresh_token(refresh_token)


class IntrospectionEndpoint(rfc7662.IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return self.server.unit.query_token(token_string, token_type_hint)

    def check_permission(self, token: Any, client: Client, request: OAuth2Request) -> bool:
        # A client may look at its own tokens; an operator at any.
        return token.client_id == client.get_client_id() or OPERATOR_SCOPE in client.record.scopes

    def introspect_token(self, token: Any) -> dict[str, Any]:
        return token.introspection()


class RevocationEndpoint(rfc7009.RevocationEndpoint):
    # The public app revokes its own refresh token on logout, identified by client_id only.
    CLIENT_AUTH_METHODS = ["client_secret_basic", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return self.server.unit.query_token(token_string, token_type_hint)

    def revoke_token(self, token: Any, request: OAuth2Request) -> None:
        self.server.unit.revoke(token)


class OAuthServer(AuthorizationServer):
    """authlib's AuthorizationServer for one request (cheap to build: lists and dicts)."""

    def __init__(self, unit: Unit) -> None:
        super().__init__(scopes_supported=list(ALL_SCOPES))
        self.unit = unit
        self.register_token_generator("default", AccessTokenGenerator(unit))
        self.register_client_auth_method("client_secret_basic", authenticate_client_secret_basic)
        self.register_client_auth_method("none", authenticate_none)
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True)])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(IntrospectionEndpoint)
        self.register_endpoint(RevocationEndpoint)

    def query_client(self, client_id: str) -> Client | None:
        return self.unit.query_client(client_id)

    def authenticate_client(
        self, request: OAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> Client:
        try:
            return super().authenticate_client(request, methods, endpoint)
        except InvalidClientError as error:
            basic = parse_basic(request.headers)
            client_id = basic[0] if basic else request.payload.client_id
            log.info("client authentication failed at %s for client %r", endpoint, client_id)
            error.description = CLIENT_AUTH_FAILED
            raise

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.unit.save_token(token, request)

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if not isinstance(request, OAuth2Request):
            raise TypeError("build a StarletteOAuth2Request first (the body must be read async)")
        return request

    def create_json_request(self, request: Any) -> JsonRequest:
        if not isinstance(request, JsonRequest):
            raise TypeError("build a StarletteJsonRequest first (the body must be read async)")
        return request

    def handle_response(
        self, status_code: int, payload: Any, headers: list[tuple[str, str]]
    ) -> Response:
        return response_from(status_code, payload, headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "after_revoke_token":
            log.info("token revoked by client %s", kwargs["client"].get_client_id())

    def refuse(self, request: OAuth2Request, description: str) -> Response:
        """An invalid_grant response (a race lost in the apply step)."""
        return self.handle_error_response(request, InvalidGrantError(description=description))
