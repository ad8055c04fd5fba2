"""The process's view of revoked access tokens.

An access token is a JWT that any process verifies on its own; revoking one means remembering
its `jti` until it would have expired anyway (10 minutes at most). Looking that up in the
database on every request would double the cost of a cheap call, so each process keeps the
(small) set of live revocations in memory, and every process learns of a revocation at once:

- revocations made by this process apply at once;
- every revocation is announced by PostgreSQL at its commit (the trigger of migration 0022 on
  `oauth_revoked_tokens`, channel `oauth_revoked`); `listen` applies them as they arrive, so
  another worker refuses the token from the moment the notification reaches it (the time of
  one round trip to the database, in practice);
- the set is also reloaded from the database at most every `REFRESH_SECONDS`, and at once each
  time the listener (re)connects: that bounds the window to `REFRESH_SECONDS` while the
  listener is disconnected (the database restarting, say).

The introspection endpoint does not use this cache: it asks the database, so its answer is
authoritative.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from core import clock
from core.db import long_lived_connection
from gateway.oauth import store

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0
CHANNEL = "oauth_revoked"
RECONNECT_SECONDS = 1.0

monotonic = time.monotonic  # module attribute, so tests can move the cache's clock


class RevocationList:
    """Live revoked jtis, reloaded from the database at most every `REFRESH_SECONDS`."""

    def __init__(self) -> None:
        self._revoked: dict[str, datetime] = {}
        self._local: dict[str, datetime] = {}  # ours, kept across reloads racing with them
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()
        self._changed: asyncio.Event | None = None

    def _due(self) -> bool:
        return self._loaded_at is None or monotonic() - self._loaded_at >= REFRESH_SECONDS

    async def is_revoked(self, engine: AsyncEngine, jti: str) -> bool:
        """True if `jti` is revoked (as far as this process knows, see the module doc)."""
        if self._due():
            async with self._lock:
                if self._due():
                    await self._reload(engine)
        return jti in self._revoked

    async def _reload(self, engine: AsyncEngine) -> None:
        now = clock.utcnow()
        async with engine.connect() as conn:
            revoked = await store.live_revocations(conn, now=now)
        self._local = {j: exp for j, exp in self._local.items() if exp > now}
        revoked.update(self._local)
        self._revoked = revoked
        self._loaded_at = monotonic()
        self._notify()

    def add(self, revoked: dict[str, datetime]) -> None:
        """Apply revocations committed by this process immediately."""
        self._local.update(revoked)
        self._revoked.update(revoked)
        self._notify()

    async def wait_for_change(self, at_most: float) -> None:
        """Return when the set changes (a revocation here, or a reload), or after `at_most`
        seconds: what a long-lived connection waits on to re-check its token."""
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), at_most)

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def invalidate(self) -> None:
        """Reload on next use."""
        self._loaded_at = None

    async def listen(self, url: str) -> None:
        """Apply the revocations every process commits, as PostgreSQL announces them; runs
        until cancelled, reconnecting after a lost connection."""
        while True:
            try:
                async with await long_lived_connection(url, "coalition-revocations") as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # What was revoked before LISTEN took effect: the next use reloads.
                    self.invalidate()
                    async for note in conn.notifies():
                        self.add(_parse(note.payload))
            except (psycopg.Error, OSError) as exc:
                log.warning("revocations: listener lost its connection (%s); reconnecting", exc)
            await asyncio.sleep(RECONNECT_SECONDS)


def _parse(payload: str) -> dict[str, datetime]:
    """A notification of the trigger: `{"jti": ..., "exp": <epoch seconds>}`."""
    note = json.loads(payload)
    return {str(note["jti"]): datetime.fromtimestamp(float(note["exp"]), UTC)}
