"""JWT signing keys: kept in the database (so every process signs and verifies alike), cached
in each process, rotatable.

The newest non-retired key signs. Every non-retired key verifies and is published at the JWKS
endpoint, so tokens signed before a rotation stay valid until their key is retired. Retire a key
only once nothing can still be signing with it: after the cache period of every process plus the
access-token lifetime (`RETIRE_AFTER`), which `retire_superseded_keys` respects.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.concurrency import run_in_threadpool

from core import clock

ALG = "RS256"  # RFC 9068 resource servers must support it; verification is the cheap half
KEY_BITS = 2048
CACHE_SECONDS = 60.0  # how stale another process's rotation or retirement may look here
UNKNOWN_KID_RELOAD_SECONDS = 5.0  # an unknown kid reloads at most this often (no DB flooding)
ACCESS_TOKEN_TTL_SECONDS = 600
RETIRE_AFTER = timedelta(seconds=ACCESS_TOKEN_TTL_SECONDS + CACHE_SECONDS + 240)

monotonic = time.monotonic  # module attribute, so tests can move the cache's clock


def generate_key() -> RSAKey:
    """A new RSA signing key whose kid is its RFC 7638 thumbprint."""
    return RSAKey.generate_key(
        KEY_BITS, parameters={"alg": ALG, "use": "sig"}, private=True, auto_kid=True
    )


async def create_signing_key(conn: AsyncConnection, *, now: datetime | None = None) -> str:
    """Store a new key; being the newest, it signs from now on. Returns its kid.

    Its `created_at` is after every other key's even when this process's clock is behind the one
    that made the last key (or a test moved the clock): the newest key must be the one stored
    last, or a rotation would not take effect."""
    key = await run_in_threadpool(generate_key)
    await conn.execute(
        text(
            "INSERT INTO oauth_signing_keys (kid, alg, private_jwk, public_jwk, created_at) "
            "SELECT :kid, :alg, CAST(:priv AS jsonb), CAST(:pub AS jsonb), "
            "       GREATEST(CAST(:now AS timestamptz), "
            "                (SELECT max(created_at) + interval '1 microsecond' "
            "                 FROM oauth_signing_keys))"
        ),
        {
            "kid": key.kid,
            "alg": ALG,
            "priv": json.dumps(key.as_dict(private=True)),
            "pub": json.dumps(key.as_dict(private=False)),
            "now": now or clock.utcnow(),
        },
    )
    assert key.kid is not None
    return key.kid


async def retire_signing_key(
    conn: AsyncConnection, *, kid: str, now: datetime | None = None
) -> bool:
    """Stop publishing and accepting `kid` (tokens it signed stop verifying). Refuses the
    current signing key, which would leave nothing to sign with."""
    result = await conn.execute(
        text(
            "UPDATE oauth_signing_keys k SET retired_at = :now "
            "WHERE k.kid = :kid AND k.retired_at IS NULL "
            "AND EXISTS (SELECT 1 FROM oauth_signing_keys n WHERE n.retired_at IS NULL "
            "            AND (n.created_at, n.kid) > (k.created_at, k.kid))"
        ),
        {"kid": kid, "now": now or clock.utcnow()},
    )
    return result.rowcount == 1


async def retire_superseded_keys(
    conn: AsyncConnection, *, now: datetime | None = None, after: timedelta = RETIRE_AFTER
) -> list[str]:
    """Retire keys superseded by a newer key more than `after` ago (safe for every process)."""
    now = now or clock.utcnow()
    rows = await conn.execute(
        text(
            "UPDATE oauth_signing_keys k SET retired_at = :now WHERE k.retired_at IS NULL "
            "AND EXISTS (SELECT 1 FROM oauth_signing_keys n WHERE n.retired_at IS NULL "
            "            AND (n.created_at, n.kid) > (k.created_at, k.kid) "
            "            AND n.created_at <= :cutoff) "
            "RETURNING k.kid"
        ),
        {"now": now, "cutoff": now - after},
    )
    return [r[0] for r in rows]


async def _active_keys(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
    rows = await conn.execute(
        text(
            "SELECT kid, private_jwk FROM oauth_signing_keys WHERE retired_at IS NULL "
            "ORDER BY created_at, kid"
        )
    )
    return [(kid, jwk) for kid, jwk in rows]


@dataclass
class _Keys:
    by_kid: dict[str, RSAKey] = field(default_factory=dict)
    public: list[dict[str, Any]] = field(default_factory=list)
    signing: RSAKey | None = None


class KeyRing:
    """The process's cache of signing keys. Verification costs no database round trip unless
    the cache is older than `CACHE_SECONDS` or a token names a kid it has not seen."""

    def __init__(self) -> None:
        self._keys = _Keys()
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def _stale(self, max_age: float) -> bool:
        return self._loaded_at is None or monotonic() - self._loaded_at >= max_age

    async def _load(self, engine: AsyncEngine, *, ensure_signing: bool = False) -> None:
        async with engine.begin() as conn:
            rows = await _active_keys(conn)
            if not rows and ensure_signing:
                # First start: one process makes the key, the others wait and read it.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext('oauth_signing_keys'))")
                )
                rows = await _active_keys(conn)
                if not rows:
                    await create_signing_key(conn)
                    rows = await _active_keys(conn)
        keys = _Keys()
        for kid, jwk in rows:
            key = RSAKey.import_key(jwk)
            keys.by_kid[kid] = key
            keys.public.append(key.as_dict(private=False))
            keys.signing = key  # rows are oldest first: the last one signs
        self._keys = keys
        self._loaded_at = monotonic()

    async def _refresh(
        self, engine: AsyncEngine, *, max_age: float, ensure_signing: bool = False
    ) -> None:
        if not self._stale(max_age) and (self._keys.signing or not ensure_signing):
            return
        async with self._lock:
            # Whoever waited on the lock finds the work done.
            if not self._stale(max_age) and (self._keys.signing or not ensure_signing):
                return
            await self._load(engine, ensure_signing=ensure_signing)

    async def signing_key(self, engine: AsyncEngine) -> RSAKey:
        """The key that signs new tokens (made on first use if the database has none)."""
        await self._refresh(engine, max_age=CACHE_SECONDS, ensure_signing=True)
        assert self._keys.signing is not None
        return self._keys.signing

    async def verification_key(self, engine: AsyncEngine, kid: str) -> RSAKey | None:
        """The public key for `kid`, or None when it is unknown or retired."""
        await self._refresh(engine, max_age=CACHE_SECONDS)
        key = self._keys.by_kid.get(kid)
        if key is None:
            # Maybe another process rotated a moment ago: look again, but not on every request.
            await self._refresh(engine, max_age=UNKNOWN_KID_RELOAD_SECONDS)
            key = self._keys.by_kid.get(kid)
        return key

    async def jwks(self, engine: AsyncEngine) -> dict[str, Any]:
        """The JWK Set to publish: public halves of every non-retired key."""
        await self._refresh(engine, max_age=CACHE_SECONDS, ensure_signing=True)
        return {"keys": list(self._keys.public)}

    async def rotate(self, engine: AsyncEngine) -> str:
        """Make a new signing key now; older keys keep verifying until retired."""
        async with engine.begin() as conn:
            kid = await create_signing_key(conn)
        self._loaded_at = None
        return kid

    async def retire(self, engine: AsyncEngine, kid: str) -> bool:
        """Retire `kid` (not the current signer); this process stops accepting it at once."""
        async with engine.begin() as conn:
            done = await retire_signing_key(conn, kid=kid)
        self._loaded_at = None
        return done

    def invalidate(self) -> None:
        """Forget the cache; the next use reloads from the database."""
        self._loaded_at = None


def signing_keyset(key: RSAKey) -> KeySet:
    """The key set handed to authlib's JWT generator: just the signer, so its kid is used."""
    return KeySet([key])
