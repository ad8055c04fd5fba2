"""OAuth clients: the registry partners and operators authenticate with.

A client secret is random, shown once, and stored only as an argon2 hash. Rotating a secret
keeps the previous one valid for a grace period, so a partner can roll the new secret out to
its servers without downtime. Nothing here knows about HTTP or OAuth libraries: the gateway's
authorization server asks this module who a client is and whether a secret is right.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.errors import ValidationError
from core.tables import table
from partners import service as partners
from partners.errors import ClientNotFound
from partners.models import OAuthClient

# Scopes (API.md). Partner clients hold a subset of PARTNER_SCOPES; member tokens come from
# the public app; `operator` is for the coalition's own administration.
PARTNER_SCOPES: tuple[str, ...] = (
    "points:earn",
    "points:redeem",
    "catalog:write",
    "settlement:read",
)
MEMBER_SCOPE = "member"
OPERATOR_SCOPE = "operator"
ALL_SCOPES: tuple[str, ...] = (*PARTNER_SCOPES, MEMBER_SCOPE, OPERATOR_SCOPE)

APP_CLIENT_ID = "coalition-app"  # the public member web app, registered by migration 0002
APP_REDIRECT_PATH = "/app/callback"  # relative to the deployment's public URL
# The public operator console, registered by migration 0020: it signs in operator users (not
# members) and its tokens carry the `operator` scope.
CONSOLE_CLIENT_ID = "coalition-console"
CONSOLE_REDIRECT_PATH = "/console/callback"

KINDS = ("partner", "operator", "app", "console")
PUBLIC_KINDS = ("app", "console")  # no secret: PKCE, and sign-in by a person
DEFAULT_GRACE = timedelta(hours=24)
MAX_GRACE = timedelta(days=30)

# Client secrets are 256-bit random strings, not human passwords: guessing is hopeless whatever
# the hash, so a light argon2 profile (OWASP's minimum) keeps each token request cheap.
_hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)

_clients = table(OAuthClient)
_CLIENT = select(
    _clients.c.client_id,
    _clients.c.kind,
    _clients.c.partner_id,
    _clients.c.name,
    _clients.c.scopes,
    _clients.c.redirect_uris,
    _clients.c.secret_hash,
    _clients.c.previous_secret_hash,
    _clients.c.previous_secret_expires_at,
    _clients.c.disabled_at,
)


@dataclass(frozen=True)
class ClientCredentials:
    """A client's id and its plaintext secret: returned once, at creation or rotation."""

    client_id: str
    client_secret: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class ClientRecord:
    """A registered client as stored (the secret only as hashes)."""

    client_id: str
    kind: str
    partner_id: uuid.UUID | None
    name: str
    scopes: tuple[str, ...]
    redirect_uris: tuple[str, ...]
    secret_hash: str | None
    previous_secret_hash: str | None
    previous_secret_expires_at: datetime | None
    disabled_at: datetime | None

    @property
    def is_public(self) -> bool:
        """A public client (the member app, the console) has no secret and cannot keep one."""
        return self.secret_hash is None

    @property
    def grant_types(self) -> tuple[str, ...]:
        """The OAuth grants this client may use."""
        if self.kind in PUBLIC_KINDS:
            return ("authorization_code", "refresh_token")
        return ("client_credentials",)


def new_client_id(kind: str) -> str:
    """A fresh URL-safe client id (the prefix only helps humans reading logs)."""
    prefixes = {"partner": "pc_", "operator": "op_", "app": "app_", "console": "con_"}
    return prefixes[kind] + secrets.token_urlsafe(16)


def new_client_secret() -> str:
    """A fresh URL-safe secret with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The argon2 hash stored for `secret`."""
    return _hasher.hash(secret)


def _matches(secret_hash: str | None, secret: str) -> bool:
    if not secret_hash:
        return False
    try:
        return _hasher.verify(secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("not a secret: equalizes the time of unknown client ids")


def verify_unknown(secret: str) -> bool:
    """Spend the time of a real check for a client id that does not exist; always False."""
    _matches(_dummy_hash(), secret)
    return False


def verify_secret(client: ClientRecord, secret: str, *, at: datetime | None = None) -> bool:
    """True if `secret` is the client's secret, or its previous one within the grace period.

    CPU-bound (argon2): callers on an event loop should run it in a worker thread.
    """
    if client.disabled_at is not None or client.is_public or not secret:
        return False
    if _matches(client.secret_hash, secret):
        return True
    at = at or clock.utcnow()
    expires = client.previous_secret_expires_at
    return expires is not None and at < expires and _matches(client.previous_secret_hash, secret)


def normalize_scopes(
    scopes: list[str] | tuple[str, ...], allowed: tuple[str, ...]
) -> tuple[str, ...]:
    """Scopes deduplicated in the canonical order; refuses unknown or unallowed ones."""
    requested = {s.strip() for s in scopes if s and s.strip()}
    if not requested:
        raise ValidationError("at least one scope is required")
    unknown = sorted(requested - set(allowed))
    if unknown:
        raise ValidationError(
            f"scopes not allowed here: {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    return tuple(s for s in allowed if s in requested)


def _check_explicit(client_id: str | None, client_secret: str | None) -> None:
    if client_id is not None and (
        not 1 <= len(client_id) <= 128
        or not client_id.isprintable()
        or client_id != client_id.strip()
    ):
        raise ValidationError("client_id must be 1..128 printable characters")
    if client_secret is not None and (len(client_secret) < 20 or not client_secret.isprintable()):
        raise ValidationError("client_secret must be at least 20 printable characters")


async def _insert(
    conn: AsyncConnection,
    *,
    kind: str,
    name: str,
    scopes: tuple[str, ...],
    partner_id: uuid.UUID | None,
    client_id: str | None,
    client_secret: str | None,
) -> ClientCredentials:
    _check_explicit(client_id, client_secret)
    client_id = client_id or new_client_id(kind)
    client_secret = client_secret or new_client_secret()
    secret_hash = await asyncio.to_thread(hash_secret, client_secret)  # argon2: off the loop
    row = (
        await conn.execute(
            insert(_clients)
            .values(
                client_id=client_id,
                kind=kind,
                partner_id=partner_id,
                name=name,
                scopes=list(scopes),
                secret_hash=secret_hash,
            )
            .on_conflict_do_nothing(index_elements=[_clients.c.client_id])
            .returning(_clients.c.client_id)
        )
    ).one_or_none()
    if row is None:
        raise ValidationError("a client with this id already exists")
    return ClientCredentials(client_id, client_secret, scopes)


async def create_partner_client(
    conn: AsyncConnection,
    *,
    partner_id: uuid.UUID,
    scopes: list[str] | tuple[str, ...],
    name: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> ClientCredentials:
    """Register an API client for a partner; the secret in the result is shown only once."""
    normalized = normalize_scopes(scopes, PARTNER_SCOPES)
    partner = await partners.get(conn, partner_id=partner_id)
    return await _insert(
        conn,
        kind="partner",
        name=(name or partner.name).strip()[:200] or partner.name,
        scopes=normalized,
        partner_id=partner_id,
        client_id=client_id,
        client_secret=client_secret,
    )


async def create_operator_client(
    conn: AsyncConnection,
    *,
    name: str = "operator",
    client_id: str | None = None,
    client_secret: str | None = None,
) -> ClientCredentials:
    """Register a client with the `operator` scope; the secret is shown only once."""
    return await _insert(
        conn,
        kind="operator",
        name=name.strip()[:200] or "operator",
        scopes=(OPERATOR_SCOPE,),
        partner_id=None,
        client_id=client_id,
        client_secret=client_secret,
    )


def _record(row: object) -> ClientRecord:
    r = row._mapping  # type: ignore[attr-defined]
    return ClientRecord(
        client_id=r["client_id"],
        kind=r["kind"],
        partner_id=r["partner_id"],
        name=r["name"],
        scopes=tuple(r["scopes"]),
        redirect_uris=tuple(r["redirect_uris"]),
        secret_hash=r["secret_hash"],
        previous_secret_hash=r["previous_secret_hash"],
        previous_secret_expires_at=r["previous_secret_expires_at"],
        disabled_at=r["disabled_at"],
    )


async def get(conn: AsyncConnection, *, client_id: str) -> ClientRecord | None:
    """The client registered as `client_id`, if any."""
    row = (await conn.execute(_CLIENT.where(_clients.c.client_id == client_id))).one_or_none()
    return _record(row) if row is not None else None


async def list_for_partner(conn: AsyncConnection, *, partner_id: uuid.UUID) -> list[ClientRecord]:
    """The partner's clients, oldest first."""
    rows = await conn.execute(
        _CLIENT.where(_clients.c.partner_id == partner_id).order_by(
            _clients.c.created_at, _clients.c.client_id
        )
    )
    return [_record(r) for r in rows]


async def rotate_secret(
    conn: AsyncConnection,
    *,
    client_id: str,
    grace: timedelta = DEFAULT_GRACE,
    at: datetime | None = None,
) -> ClientCredentials:
    """Issue a new secret; the current one keeps working for `grace`, then stops."""
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise ValidationError(f"grace must be between 0 and {MAX_GRACE.days} days")
    at = at or clock.utcnow()
    secret = new_client_secret()
    secret_hash = await asyncio.to_thread(hash_secret, secret)  # argon2: off the loop
    row = (
        await conn.execute(
            update(_clients)
            .where(
                _clients.c.client_id == client_id,
                _clients.c.kind.not_in(PUBLIC_KINDS),
                _clients.c.disabled_at.is_(None),
            )
            .values(
                previous_secret_hash=_clients.c.secret_hash,
                previous_secret_expires_at=at + grace,
                secret_hash=secret_hash,
                secret_rotated_at=at,
            )
            .returning(_clients.c.scopes)
        )
    ).one_or_none()
    if row is None:
        raise ClientNotFound(f"no confidential client {client_id!r} to rotate")
    return ClientCredentials(client_id, secret, tuple(row[0]))


async def disable(conn: AsyncConnection, *, client_id: str, at: datetime | None = None) -> None:
    """Stop accepting the client's credentials (tokens already issued live out their minutes)."""
    result = await conn.execute(
        update(_clients)
        .where(_clients.c.client_id == client_id, _clients.c.kind.not_in(PUBLIC_KINDS))
        .values(disabled_at=func.coalesce(_clients.c.disabled_at, at or clock.utcnow()))
    )
    if result.rowcount == 0:
        raise ClientNotFound(f"no confidential client {client_id!r}")
