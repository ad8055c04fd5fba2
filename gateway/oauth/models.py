"""Tables of the authorization server: signing keys, codes, refresh tokens, revocations,
login throttling and server secrets. Clients live with the partners (`partners.models`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False, **kw: Any) -> Column[Any]:
    return Column(DateTime(timezone=True), nullable=nullable, **kw)


class SigningKey(SQLModel, table=True):
    """A JWT signing key. The newest non-retired key signs; all non-retired keys verify and are
    published at the JWKS endpoint. The private half is kept here so every process signs alike."""

    __tablename__ = "oauth_signing_keys"

    kid: str = Field(sa_column=Column(Text, primary_key=True))
    alg: str = Field(sa_column=Column(Text, nullable=False))
    private_jwk: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    public_jwk: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(sa_column=_ts())
    retired_at: datetime | None = Field(default=None, sa_column=_ts(True))


class AuthorizationCode(SQLModel, table=True):
    """An authorization code (stored as a SHA-256 hash), single use, bound to a PKCE challenge."""

    __tablename__ = "oauth_authorization_codes"
    __table_args__ = (
        CheckConstraint("code_challenge_method = 'S256'", name="ck_oauth_codes_s256"),
        CheckConstraint(
            "num_nonnulls(member_id, operator_user_id) = 1", name="ck_oauth_codes_subject"
        ),
        Index("ix_oauth_codes_expires", "expires_at"),
        Index(
            "ix_oauth_codes_operator_user",
            "operator_user_id",
            postgresql_where=text("operator_user_id IS NOT NULL"),
        ),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    code_hash: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    client_id: str = Field(
        sa_column=Column(Text, ForeignKey("oauth_clients.client_id"), nullable=False)
    )
    # The subject: a member (the member app) or an operator user (the console), never both.
    member_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), nullable=True),
    )
    operator_user_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("operator_users.id"), nullable=True),
    )
    redirect_uri: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    scope: str = Field(sa_column=Column(Text, nullable=False))
    code_challenge: str = Field(sa_column=Column(Text, nullable=False))
    code_challenge_method: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())
    used_at: datetime | None = Field(default=None, sa_column=_ts(True))


class RefreshToken(SQLModel, table=True):
    """A refresh token (SHA-256 hash). Rotated on use; a family is every token descending from
    one authorization code, so presenting a rotated token revokes the whole family."""

    __tablename__ = "oauth_refresh_tokens"
    __table_args__ = (
        CheckConstraint(
            "num_nonnulls(member_id, operator_user_id) = 1", name="ck_oauth_refresh_subject"
        ),
        Index("ix_oauth_refresh_family", "family_id"),
        Index("ix_oauth_refresh_expires", "expires_at"),
        Index(
            "ix_oauth_refresh_operator_user",
            "operator_user_id",
            postgresql_where=text("operator_user_id IS NOT NULL"),
        ),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    token_hash: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    family_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    client_id: str = Field(
        sa_column=Column(Text, ForeignKey("oauth_clients.client_id"), nullable=False)
    )
    # The subject: a member (the member app) or an operator user (the console), never both.
    member_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), nullable=True),
    )
    operator_user_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("operator_users.id"), nullable=True),
    )
    scope: str = Field(sa_column=Column(Text, nullable=False))
    issued_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())
    rotated_at: datetime | None = Field(default=None, sa_column=_ts(True))
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(True))
    # The access token issued together with this refresh token: revoked with the family.
    access_jti: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    access_expires_at: datetime | None = Field(default=None, sa_column=_ts(True))


class RevokedToken(SQLModel, table=True):
    """A revoked access token (JWT id), kept until the token would have expired anyway."""

    __tablename__ = "oauth_revoked_tokens"
    __table_args__ = (Index("ix_oauth_revoked_expires", "expires_at"),)

    jti: str = Field(sa_column=Column(Text, primary_key=True))
    expires_at: datetime = Field(sa_column=_ts())
    revoked_at: datetime = Field(sa_column=_ts())


class LoginFailures(SQLModel, table=True):
    """Failed member logins per key (`email:<address>` or `ip:<address>`) in a fixed window."""

    __tablename__ = "oauth_login_failures"

    key: str = Field(sa_column=Column(Text, primary_key=True))
    failures: int = Field(sa_column=Column(Integer, nullable=False))
    window_started_at: datetime = Field(sa_column=_ts())
    last_failure_at: datetime = Field(sa_column=_ts())


class ServerSecret(SQLModel, table=True):
    """Random secrets shared by every process (e.g. the CSRF token key), made on first use."""

    __tablename__ = "oauth_server_secrets"

    name: str = Field(sa_column=Column(Text, primary_key=True))
    secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_column=_ts(server_default=func.now()))
