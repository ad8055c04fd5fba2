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

The pieces: `adapters` (Starlette requests and responses in authlib's shapes), `entities`
(authlib's models over our records), `unit` (the Unit: prefetch, recorded writes, apply) and
this module (token generator, grants, endpoints, the server).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2 import rfc7009, rfc7662
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    JsonRequest,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from starlette.responses import Response

from gateway.oauth.adapters import parse_basic, response_from
from gateway.oauth.entities import Client, Code, OperatorUser, RefreshToken, User, user_of
from gateway.oauth.keys import ALG, signing_keyset
from gateway.oauth.tokens import ACCESS_TOKEN_TTL, audience
from gateway.oauth.unit import Unit
from partners import clients
from partners.clients import ALL_SCOPES, OPERATOR_SCOPE

log = logging.getLogger(__name__)

# One answer for an unknown client id, a wrong secret and a wrong method: the error must not
# tell which client ids exist (and an unknown id costs a dummy argon2 check, as a real one).
CLIENT_AUTH_FAILED = "Client authentication failed."


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
        if isinstance(user, OperatorUser):
            claims["operator_user_id"] = str(user.operator_user_id)
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

    def authenticate_user(self, authorization_code: Code) -> User | None:
        row = authorization_code.row
        user = user_of(row.member_id, row.operator_user_id)
        return user if self.server.unit.may_sign_in(user, self.request.client) else None


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every use returns a new refresh token

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        return self.server.unit.query_refresh_token(refresh_token)

    def authenticate_user(self, refresh_token: RefreshToken) -> User:
        row = refresh_token.row
        user = user_of(row.member_id, row.operator_user_id)
        if not self.server.unit.may_sign_in(user, self.request.client):
            raise InvalidGrantError("The user of this refresh token may no longer sign in.")
        return user

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
