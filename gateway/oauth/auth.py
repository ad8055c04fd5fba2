"""Who is calling: the bearer token of a request, verified, as a `Principal`.

For the GraphQL layer:

    principal = await authenticate(request)   # None without an Authorization header
    # raises AuthError(code, message) for a bad token: INVALID_TOKEN, TOKEN_EXPIRED, TOKEN_REVOKED

Verifying costs no database round trip in the common case: public keys are cached per process
(`gateway.oauth.keys`), and so are revoked token ids (`gateway.oauth.revocation`: revocations
made by this process apply at once, those made by other processes within a few seconds).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.requests import HTTPConnection

from gateway.oauth.state import oauth_state
from gateway.oauth.tokens import AuthError, verify_access_token

__all__ = ["AuthError", "Principal", "authenticate", "authenticate_token"]

Kind = Literal["partner", "member", "operator"]


@dataclass(frozen=True)
class Principal:
    """The caller an access token speaks for."""

    kind: Kind
    client_id: str
    scopes: frozenset[str]
    partner_id: uuid.UUID | None
    member_id: uuid.UUID | None
    token_id: str  # the token's jti
    # When the token expires (`exp`): a websocket authenticated with it is closed then.
    expires_at: datetime | None = field(default=None, compare=False)
    # A person of the operator's staff signed in to the console (operator tokens only).
    operator_user_id: uuid.UUID | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def actor(self) -> str:
        """Who the caller is on the rows it writes: `operator_user:<id>` for a person signed in
        to the console, the OAuth client's id otherwise."""
        if self.operator_user_id is not None:
            return f"operator_user:{self.operator_user_id}"
        return self.client_id


def _uuid(value: Any, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError):
        raise AuthError("INVALID_TOKEN", f"the token's {what} is not a UUID") from None


async def authenticate_token(app: Any, token: str) -> Principal:
    """The principal of a bearer token (e.g. from a websocket's connection_init payload)."""
    state = oauth_state(app)
    engine = app.state.engine
    claims = await verify_access_token(token, keys=state.keys, engine=engine, issuer=state.issuer)
    if await state.revoked.is_revoked(engine, claims["jti"]):
        raise AuthError("TOKEN_REVOKED", "the access token has been revoked")
    kind = claims["kind"]
    scope = claims.get("scope") or ""
    return Principal(
        kind=kind,
        client_id=str(claims["client_id"]),
        scopes=frozenset(scope.split() if isinstance(scope, str) else ()),
        partner_id=_uuid(claims.get("partner_id"), "partner_id") if kind == "partner" else None,
        member_id=_uuid(claims["sub"], "subject") if kind == "member" else None,
        token_id=str(claims["jti"]),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        operator_user_id=(
            _uuid(claims["operator_user_id"], "operator_user_id")
            if kind == "operator" and "operator_user_id" in claims
            else None
        ),
    )


async def authenticate(request: HTTPConnection) -> Principal | None:
    """The principal of the request's `Authorization: Bearer` token; None if there is no header.

    Works for HTTP requests and websockets alike (both are HTTPConnections).
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("INVALID_TOKEN", "the Authorization header must be 'Bearer <access token>'")
    return await authenticate_token(request.app, token)
