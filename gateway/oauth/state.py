"""Per-application state of the authorization server: key and revocation caches, the CSRF key.

One instance per Starlette app (tests build several apps in one process), made on first use.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from gateway.oauth import store
from gateway.oauth.keys import KeyRing
from gateway.oauth.revocation import RevocationList


class OAuthState:
    """Caches shared by the requests of one app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.issuer = settings.issuer
        self.keys = KeyRing()
        self.revoked = RevocationList()
        self._csrf_key: bytes | None = None
        self._lock = asyncio.Lock()

    async def csrf_key(self, engine: AsyncEngine) -> bytes:
        """The HMAC key of login-form CSRF tokens (shared by all processes via the database)."""
        if self._csrf_key is None:
            async with self._lock:
                if self._csrf_key is None:
                    async with engine.begin() as conn:
                        self._csrf_key = await store.server_secret(conn, name="csrf")
        return self._csrf_key


def oauth_state(app: Any) -> OAuthState:
    """The OAuth state of `app` (a Starlette app with `state.settings`), made on first use."""
    state = getattr(app.state, "oauth", None)
    if state is None:
        # No await between the check and the assignment: two requests cannot both make one.
        state = OAuthState(app.state.settings)
        app.state.oauth = state
    return state
