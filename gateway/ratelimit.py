"""Rate limits of every route, the client IP they key on, and the CPU budget of argon2.

One `RateLimits` per app (`app.state.rate_limits`), over the `limits` library: fixed windows in
process memory (each process counts its own requests; O(1) per hit, so /graphql's earn path
pays ~2 microseconds). Which key a request counts against:

- /graphql: a member token by its member, any other token by its OAuth client, no token by IP;
- /oauth/*: the client id of Basic credentials (when sent), and always the IP;
- /settlement/*: the caller as for /graphql;
- registerMember: the IP.

The client IP is the TCP peer's, unless the peer is one of TRUSTED_PROXIES: then it is read
from X-Forwarded-For (the right-most address that is not a trusted proxy). Every route asks
`RateLimits.client_ip`, so a forged header from anyone else changes nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, TypeVar

import anyio.to_thread
from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from core.settings import Settings
from gateway.oauth.auth import AuthError, Principal, authenticate

log = logging.getLogger(__name__)

T = TypeVar("T")
Network = IPv4Network | IPv6Network

GRAPHQL = "graphql"
OAUTH_CLIENT = "oauth-client"
OAUTH_IP = "oauth-ip"
SETTLEMENT = "settlement"
REGISTER = "register"


def graphql_limit(rate: float, burst: float) -> RateLimitItem:
    """RATE_LIMIT_PER_SECOND / RATE_LIMIT_BURST as a window: `burst` requests per
    `burst / rate` seconds (so the long-run rate is `rate`)."""
    return RateLimitItemPerSecond(max(1, int(burst)), max(1, math.ceil(burst / rate)))


def trusted_networks(setting: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES parsed (the setting was validated at start)."""
    return tuple(
        ip_network(part, strict=False) for part in (p.strip() for p in setting.split(",")) if part
    )


def forwarded_client(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the right-most
    X-Forwarded-For hop that is not a trusted proxy (hops left of it are the client's to forge)."""
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    client = peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        if _parse(hop) is None:
            break  # garbage: keep the last address a trusted proxy vouched for
        client = hop
        if not _is_trusted(hop, trusted):
            break
    return client


def _parse(value: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(value)
    except ValueError:
        return None


def _is_trusted(value: str, trusted: tuple[Network, ...]) -> bool:
    address = _parse(value)
    return address is not None and any(address in net for net in trusted)


def caller_key(principal: Principal | None, ip: str) -> str:
    """The bucket of a caller: its member, else its OAuth client, else its IP."""
    if principal is None:
        return f"ip:{ip}"
    if principal.member_id is not None:
        return f"member:{principal.member_id}"
    if principal.operator_user_id is not None:  # each person of the console has its own
        return f"operator_user:{principal.operator_user_id}"
    return f"client:{principal.client_id}"


class _MemoryStorage(MemoryStorage):
    """limits' memory storage without its timer thread. The library's own storage starts a
    `threading.Timer` (a new thread) whenever the last one has finished, 100 times a second
    under load, to sweep expired keys; measured with `python -m bench.graphql_earn` that cost
    ~0.1 ms of CPU per request. Expired counters are already dropped lazily by `get`; here the
    sweep of idle keys (memory only) runs inline, at most once a second."""

    SWEEP_EVERY = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.timer.cancel()  # the one the base class started
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the base's private hook
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_EVERY
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


class RateLimits:
    """The app's rate limits (see the module's docstring) and its client-IP rule."""

    def __init__(self, settings: Settings) -> None:
        self._limiter = FixedWindowRateLimiter(_MemoryStorage())
        self._items: dict[str, list[RateLimitItem]] = {
            GRAPHQL: [graphql_limit(settings.rate_limit_per_second, settings.rate_limit_burst)],
            OAUTH_CLIENT: parse_many(settings.rate_limit_oauth_client),
            OAUTH_IP: parse_many(settings.rate_limit_oauth_ip),
            SETTLEMENT: parse_many(settings.rate_limit_settlement),
            REGISTER: parse_many(settings.rate_limit_register),
        }
        self.trusted = trusted_networks(settings.trusted_proxies)
        self._logged: dict[tuple[str, str], float] = {}

    def client_ip(self, conn: HTTPConnection) -> str:
        """The client's IP address for throttling and logs (see `forwarded_client`)."""
        client = conn.scope.get("client")
        peer = client[0] if client else "unknown"
        if not self.trusted:
            return peer
        return forwarded_client(peer, conn.headers.getlist("x-forwarded-for"), self.trusted)

    def hit(self, limit: str, key: str) -> int | None:
        """Count one request of `key` against `limit`: None if allowed, else the seconds to
        wait before the window lets it through."""
        for item in self._items[limit]:
            if not self._limiter.hit(item, limit, key):
                reset_at, _ = self._limiter.get_window_stats(item, limit, key)
                self._log(limit, key, item, reset_at)
                return max(1, math.ceil(reset_at - time.time()))
        return None

    def _log(self, limit: str, key: str, item: RateLimitItem, reset_at: float) -> None:
        # Once per key and window: a flood must not become a log flood.
        if self._logged.get((limit, key)) == reset_at:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged[(limit, key)] = reset_at
        log.warning("rate limit %s (%s) reached by %r", limit, item, key)


def rate_limits(conn: HTTPConnection) -> RateLimits:
    """The app's `RateLimits`."""
    return conn.app.state.rate_limits


def limited(
    endpoint: Callable[[Request], Awaitable[Response]],
    keys: Callable[[Request], Awaitable[list[tuple[str, str]]]],
    refuse: Callable[[int], Response],
) -> Callable[[Request], Awaitable[Response]]:
    """`endpoint` behind the limits `keys(request)` names ((limit, key) pairs): over any of
    them, `refuse(retry_after_seconds)` answers instead (a 429 with Retry-After)."""

    async def wrapped(request: Request) -> Response:
        limits = rate_limits(request)
        for limit, key in await keys(request):
            retry_after = limits.hit(limit, key)
            if retry_after is not None:
                response = refuse(retry_after)
                response.headers["Retry-After"] = str(retry_after)
                return response
        return await endpoint(request)

    wrapped.__name__ = getattr(endpoint, "__name__", "endpoint")
    wrapped.__doc__ = endpoint.__doc__
    return wrapped


async def _settlement_keys(request: Request) -> list[tuple[str, str]]:
    try:
        principal = await authenticate(request)
    except AuthError:
        principal = None  # the endpoint answers 401; the attempt still counts, by IP
    return [(SETTLEMENT, caller_key(principal, rate_limits(request).client_ip(request)))]


def _settlement_refusal(retry_after: int) -> Response:
    return JSONResponse(
        {
            "error": {
                "code": "RATE_LIMITED",
                "message": f"too many requests: retry in {retry_after} s",
            }
        },
        status_code=429,
    )


def per_caller(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A /settlement/* endpoint behind RATE_LIMIT_SETTLEMENT, per caller."""
    return limited(endpoint, _settlement_keys, _settlement_refusal)


async def hashing(conn: HTTPConnection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` (argon2 work) in a worker thread, at most PASSWORD_HASH_THREADS at once: a
    flood of logins or token requests then takes that many cores, never the event loop's."""
    limiter = conn.app.state.hash_limiter
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
