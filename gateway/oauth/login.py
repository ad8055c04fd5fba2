"""The member login form's defences: CSRF tokens and throttling of failed logins.

CSRF: a signed double-submit cookie. The browser gets a random nonce in a SameSite=Strict,
HttpOnly cookie and the form carries HMAC(key, nonce); a POST must bring both, matching. The
key is a server secret shared by all processes (`oauth_server_secrets`), so a cookie planted by
a sibling subdomain is useless without it.

Throttling: attempts are counted in the database (so every process sees them) per email and
per client IP, in a fixed window. Each attempt is counted, in its own committed statement
(INSERT ... ON CONFLICT DO UPDATE ... RETURNING, atomic per key), before its password is
checked; a success takes it back. Past the limit, logins for that email (or from that IP) are
refused until the window ends without checking any password, however many arrive at once.
Per-email locking lets someone who knows an email lock its owner out for a while; it is the
price of stopping password guessing against one account from many addresses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.oauth import store

EMAIL_LIMIT = 5
IP_LIMIT = 20
WINDOW = timedelta(minutes=15)

CSRF_FIELD = "csrf_token"


def csrf_cookie_name(secure: bool) -> str:
    """`__Host-` pins the cookie to this host and HTTPS when the deployment has TLS."""
    return "__Host-coalition_csrf" if secure else "coalition_csrf"


def new_csrf_nonce() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(key: bytes, nonce: str) -> str:
    """The form's token for the cookie's `nonce`."""
    mac = hmac.new(key, b"oauth-login-csrf:" + nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def check_csrf(key: bytes, nonce: str | None, token: str | None) -> bool:
    """True if the form's token matches the cookie's nonce."""
    if not nonce or not token or len(nonce) > 200:
        return False
    return hmac.compare_digest(csrf_token(key, nonce), token)


def throttle_keys(email: str, ip: str | None) -> dict[str, int]:
    """The keys a login attempt counts against, with their limits."""
    keys = {f"email:{email.strip().lower()}": EMAIL_LIMIT}
    if ip:
        keys[f"ip:{ip}"] = IP_LIMIT
    return keys


@dataclass(frozen=True)
class Lockout:
    """Logins are refused for `retry_after`."""

    retry_after: timedelta

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after.total_seconds() / 60))


@dataclass(frozen=True)
class Attempt:
    """A counted login attempt: `refused` if over a limit (check no password), else the
    lockout a failure of this attempt triggers (`locks_on_failure`), if it is the last allowed."""

    refused: Lockout | None
    locks_on_failure: Lockout | None


def _lockout(
    found: dict[str, store.Failures], limits: dict[str, int], now: datetime, *, beyond: int = 0
) -> Lockout | None:
    ends = [
        f.window_started_at + WINDOW for k, f in found.items() if f.failures >= limits[k] + beyond
    ]
    ends = [e for e in ends if e > now]
    return Lockout(max(ends) - now) if ends else None


async def begin_attempt(
    conn: AsyncConnection, *, email: str, ip: str | None, now: datetime
) -> Attempt:
    """Count a login attempt against its email and IP, before any password is checked (commit
    `conn` before checking: that is what makes concurrent attempts see each other)."""
    limits = throttle_keys(email, ip)
    found = await store.record_login_failure(conn, keys=list(limits), now=now, window=WINDOW)
    refused = _lockout(found, limits, now, beyond=1)
    return Attempt(refused, None if refused else _lockout(found, limits, now))


async def record_success(conn: AsyncConnection, *, email: str, ip: str | None = None) -> None:
    """A successful login clears the email's count, and takes its own attempt back from the
    IP's (never more: one valid account must not reset the guessing budget of an address)."""
    await store.clear_login_failures(conn, keys=[f"email:{email.strip().lower()}"])
    if ip:
        await store.uncount_login_failure(conn, key=f"ip:{ip}")
