"""authlib's models (client, code, tokens, user) over our records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin, scope_to_list

from gateway.oauth import store
from partners import clients
from partners.clients import ClientRecord


@dataclass(frozen=True)
class MemberUser:
    """The resource owner of a member token."""

    member_id: uuid.UUID
    operator_user_id: None = None

    def get_user_id(self) -> str:
        return str(self.member_id)


@dataclass(frozen=True)
class OperatorUser:
    """The resource owner of a console token: a person of the operator's staff."""

    operator_user_id: uuid.UUID
    member_id: None = None

    def get_user_id(self) -> str:
        return str(self.operator_user_id)


User = MemberUser | OperatorUser


def user_of(member_id: uuid.UUID | None, operator_user_id: uuid.UUID | None) -> User:
    """The subject a stored code or refresh token names (the table holds exactly one)."""
    if operator_user_id is not None:
        return OperatorUser(operator_user_id)
    assert member_id is not None, "a code or refresh token names a member or an operator user"
    return MemberUser(member_id)


class Client(ClientMixin):
    """authlib's view of a registered client."""

    def __init__(self, record: ClientRecord, *, issuer: str, now: datetime) -> None:
        self.record = record
        self.now = now
        # A redirect URI starting with "/" is relative to PUBLIC_URL (the coalition's own app).
        self.redirect_uris = [issuer + u if u.startswith("/") else u for u in record.redirect_uris]

    @property
    def token_kind(self) -> str:
        """The `kind` claim of tokens issued to this client (the console's: `operator`)."""
        return {"app": "member", "console": "operator"}.get(self.record.kind, self.record.kind)

    @property
    def signs_in_operator_users(self) -> bool:
        """The console: its sign-in looks up operator users, never members."""
        return self.record.kind == "console"

    def accepts(self, user: Any) -> bool:
        """The console's codes and tokens are for operator users, the app's for members."""
        return isinstance(user, OperatorUser) == self.signs_in_operator_users

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
            "sub": str(self.row.operator_user_id or self.row.member_id),
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
