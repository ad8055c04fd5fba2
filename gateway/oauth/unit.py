"""The per-request unit of work: what one OAuth request may read, and the writes it decided on.

Prefetched (async) before authlib runs, read by authlib's storage hooks (sync, in a worker
thread), which record writes instead of performing them; `Unit.finish` applies them in one
transaction, where single use of codes and refresh tokens is enforced (see `server`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Request
from joserfc.jwk import RSAKey
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.responses import Response

from gateway.oauth import store
from gateway.oauth.adapters import is_clean, parse_basic
from gateway.oauth.entities import AccessToken, Client, Code, RefreshToken, User
from gateway.oauth.state import OAuthState
from gateway.oauth.tokens import AuthError, verify_access_token
from members import operators
from partners import clients

CODE_TTL = timedelta(minutes=5)
MAX_CLIENT_ID = 128
REFRESH_TOKEN_TTL = timedelta(days=30)
# An operator user's console session: a working day, then sign in again.
OPERATOR_REFRESH_TOKEN_TTL = timedelta(hours=12)


class Conflict(Exception):
    """A recorded write lost a race (code or refresh token used meanwhile)."""

    def __init__(self, description: str, family_id: uuid.UUID) -> None:
        super().__init__(description)
        self.description = description
        self.family_id = family_id


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
        # Operator users named by the prefetched code or refresh token who may not sign in
        # (disabled or gone): their grant is refused.
        self.inactive_operator_users: set[uuid.UUID] = set()

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
        row: store.CodeRow | store.RefreshRow | None = None
        if grant_type == "authorization_code" and request.form.get("code"):
            code = request.form["code"]
            row = await store.get_code(conn, code=code)
            self.code = (code, row)
        elif grant_type == "refresh_token" and request.form.get("refresh_token"):
            token = request.form["refresh_token"]
            row = await store.get_refresh_token(conn, token=token)
            self.refresh = (token, row)
        user_id = row.operator_user_id if row is not None else None
        if user_id is not None and not await operators.is_active(conn, user_id=user_id):
            self.inactive_operator_users.add(user_id)

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

    def may_sign_in(self, user: User, client: Client) -> bool:
        """The grant's subject is of the client's kind (the console's an operator user, the
        app's a member) and, for an operator user, not disabled."""
        if not client.accepts(user):
            return False
        return user.operator_user_id not in self.inactive_operator_users

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
            "operator_user_id": user.operator_user_id,
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
            "operator_user_id": request.user.operator_user_id,
            "scope": scope,
            "now": self.now,
            "ttl": OPERATOR_REFRESH_TOKEN_TTL
            if request.user.operator_user_id is not None
            else REFRESH_TOKEN_TTL,
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
