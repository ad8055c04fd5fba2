"""Access tokens: RFC 9068 JWTs (`typ: at+jwt`), verified locally with cached public keys.

Claims: `iss` (PUBLIC_URL), `aud` (the GraphQL API, `<issuer>/graphql`), `sub` (the member id
for member tokens, the operator user's id for the console's, the client id otherwise), `client_id`, `scope`, `iat`, `exp` (10 minutes
later), `jti`, and private claims of this deployment: `kind` (`partner`, `member` or `operator`),
`partner_id` for partner tokens, and `operator_user_id` for the tokens of an operator user
signed in to the console (whose `sub` is that user's id).
"""

from __future__ import annotations

from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from sqlalchemy.ext.asyncio import AsyncEngine

from core import clock
from gateway.oauth.keys import ACCESS_TOKEN_TTL_SECONDS, ALG, KeyRing

ACCESS_TOKEN_TTL = ACCESS_TOKEN_TTL_SECONDS
TYP = "at+jwt"
MAX_FUTURE_IAT = 60  # seconds of clock skew tolerated between processes that issue tokens
KINDS = ("partner", "member", "operator")
REQUIRED_CLAIMS = ("iss", "aud", "sub", "client_id", "iat", "exp", "jti", "kind")


def audience(issuer: str) -> str:
    """The `aud` of every access token: the GraphQL API of this deployment."""
    return f"{issuer}/graphql"


class AuthError(Exception):
    """A bearer token was presented and refused. `code` is stable (INVALID_TOKEN,
    TOKEN_EXPIRED, TOKEN_REVOKED); `message` is for humans."""

    status_code = 401

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def www_authenticate(self) -> str:
        """The RFC 6750 challenge for a 401 response."""
        desc = self.message.replace('"', "'").replace("\\", "/")
        return f'Bearer error="invalid_token", error_description="{desc}"'

    def __repr__(self) -> str:
        return f"AuthError({self.code}: {self.message})"


def _header(token: str) -> dict[str, Any]:
    try:
        return dict(jws.extract_compact(token.encode("ascii")).headers())
    except (JoseError, ValueError, UnicodeError, TypeError) as exc:
        raise AuthError("INVALID_TOKEN", "the access token is not a well-formed JWT") from exc


async def verify_access_token(
    token: str, *, keys: KeyRing, engine: AsyncEngine, issuer: str, check_expiry: bool = True
) -> dict[str, Any]:
    """The claims of a valid access token issued here; raises AuthError otherwise.

    No database round trip in the common case: public keys come from the KeyRing cache.
    Revocation is the caller's business (see `gateway.oauth.revocation`).
    """
    header = _header(token)
    typ = str(header.get("typ", "")).lower()
    if typ not in (TYP, "application/" + TYP):
        raise AuthError("INVALID_TOKEN", "the token is not an access token (typ must be at+jwt)")
    if header.get("alg") != ALG:
        raise AuthError("INVALID_TOKEN", f"access tokens are signed with {ALG}")
    kid = header.get("kid")
    key = await keys.verification_key(engine, kid) if isinstance(kid, str) and kid else None
    if key is None:
        raise AuthError("INVALID_TOKEN", "the token is signed with an unknown or retired key")
    try:
        claims = dict(jwt.decode(token, key, algorithms=[ALG]).claims)
    except (JoseError, ValueError, TypeError) as exc:
        raise AuthError("INVALID_TOKEN", "the token signature is invalid") from exc
    missing = [c for c in REQUIRED_CLAIMS if c not in claims]
    if missing:
        raise AuthError("INVALID_TOKEN", f"the token lacks claims: {', '.join(missing)}")
    if claims["iss"] != issuer:
        raise AuthError("INVALID_TOKEN", "the token was issued by another server")
    aud = claims["aud"]
    if audience(issuer) not in (aud if isinstance(aud, list) else [aud]):
        raise AuthError("INVALID_TOKEN", "the token is meant for another audience")
    if claims["kind"] not in KINDS:
        raise AuthError("INVALID_TOKEN", "the token has an unknown kind")
    exp, iat = claims["exp"], claims["iat"]
    if not isinstance(exp, int) or not isinstance(iat, int):
        raise AuthError("INVALID_TOKEN", "exp and iat must be integers")
    now = int(clock.utcnow().timestamp())
    if iat > now + MAX_FUTURE_IAT:
        raise AuthError("INVALID_TOKEN", "the token is issued in the future")
    if check_expiry and now >= exp:
        raise AuthError("TOKEN_EXPIRED", "the access token has expired")
    return claims
