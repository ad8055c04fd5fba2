"""Rate limits of every route, the client IP they key on, and the CPU budget of argon2.

One `RateLimits` per app (`app.state.rate_limits`), over the `limits` library's rate items. The
counts are shared by every process of the deployment (`coalition serve --workers N`, several
machines): fixed windows in PostgreSQL (`SharedWindows`, the UNLOGGED table
`rate_limit_windows`), which each process leases in slices so that a hot caller costs one
upsert per slice (1/20 of its window), not one per request. Until the app's lifespan has
started them, and whenever the database does not answer, a process counts in its own memory
(the `limits` memory storage): then each process allows the whole limit on its own.

Which key a request counts against:

- /graphql: a member token by its member, any other token by its OAuth client, no token by IP;
- /oauth/*: the client id of Basic credentials (when sent), and always the IP;
- /settlement/*: the caller as for /graphql;
- registerMember: the IP.

The client IP is the TCP peer's, unless the peer is one of TRUSTED_PROXIES: then it is read
from X-Forwarded-For (the right-most address that is not a trusted proxy). Every route asks
`RateLimits.client_ip`, so a forged header from anyone else changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, TypeVar

import anyio.to_thread
import psycopg
from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from psycopg_pool import AsyncConnectionPool
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from core.db import DriverPool, libpq_uri
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


# One statement per claim, atomic per key (the row lock of the upsert): add `n` hits to the
# caller's window, or start a new window (at the database's clock, the same for every process)
# when the last one has ended; answer the window's hits and the seconds it has left.
_CLAIM = """
INSERT INTO rate_limit_windows AS w (key, hits, ends_at)
VALUES (%(key)s, %(n)s, now() + make_interval(secs => %(seconds)s))
ON CONFLICT (key) DO UPDATE SET
  hits = CASE WHEN w.ends_at <= now() THEN excluded.hits ELSE w.hits + excluded.hits END,
  ends_at = CASE WHEN w.ends_at <= now() THEN excluded.ends_at ELSE w.ends_at END
RETURNING hits, extract(epoch FROM w.ends_at - now())::float8
"""
_SWEEP = "DELETE FROM rate_limit_windows WHERE ends_at < now() - interval '1 minute'"


class _Lease:
    """What this process may still admit of one caller's current window."""

    __slots__ = ("ends", "exhausted", "left")

    def __init__(self, left: int, ends: float, exhausted: bool) -> None:
        self.left = left  # requests this process may admit without asking the database
        self.ends = ends  # monotonic instant the window ends
        self.exhausted = exhausted  # the shared count has reached the limit: refuse until `ends`


class SharedWindows:
    """Fixed-window counters in PostgreSQL, leased to this process a slice at a time.

    A process that needs to admit a request and holds no lease for the caller's window claims
    `max(1, limit // LEASE_SHARE)` hits with one upsert (`_CLAIM`) and gets what is left of
    them under the limit. So the sum admitted by every process never exceeds the limit; what
    it costs is that a process may keep up to a slice unused while another is refused (at most
    a slice per process: 20 of a burst of 400; none when the limit is under 40, where a slice
    is one request). Once the shared count reaches the limit, the refusal is local until the
    window ends: a flood does not reach the database. One claim per caller at a time per
    process (concurrent requests wait for it).
    """

    LEASE_SHARE = 20
    CLAIM_TIMEOUT = 2.0  # seconds; then the caller falls back to counting in memory
    SWEEP_EVERY = 60.0  # seconds between deletions of ended windows (rows and leases)

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._leases: dict[str, _Lease] = {}
        self._claims: dict[str, asyncio.Future[None]] = {}
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY
        self._sweeping: asyncio.Task[None] | None = None

    async def hit(self, item: RateLimitItem, name: str) -> float | None:
        """Count one request against `item` under the key `name`: None if admitted, else the
        seconds until its window ends."""
        while True:
            now = time.monotonic()
            lease = self._leases.get(name)
            if lease is not None and lease.ends > now:
                if lease.left > 0:
                    lease.left -= 1
                    return None
                if lease.exhausted:
                    return lease.ends - now
            if now >= self._next_sweep:
                self._sweep(now)
            claim = self._claims.get(name)
            if claim is None:
                claim = asyncio.ensure_future(self._claim(item, name))
                self._claims[name] = claim
            await asyncio.shield(claim)  # a waiter's cancellation leaves the claim to the others

    async def _claim(self, item: RateLimitItem, name: str) -> None:
        try:
            slice_ = max(1, item.amount // self.LEASE_SHARE)
            async with (
                asyncio.timeout(self.CLAIM_TIMEOUT),
                self.pool.connection(timeout=self.CLAIM_TIMEOUT) as conn,
            ):
                cur = await conn.execute(
                    _CLAIM, {"key": name, "n": slice_, "seconds": item.get_expiry()}
                )
                row = await cur.fetchone()
            assert row is not None
            hits, seconds = int(row[0]), float(row[1])
            granted = max(0, min(slice_, item.amount - (hits - slice_)))
            self._leases[name] = _Lease(granted, time.monotonic() + seconds, hits >= item.amount)
        finally:
            self._claims.pop(name, None)

    def _sweep(self, now: float) -> None:
        """Forget ended leases; delete ended windows from the table (in the background)."""
        self._next_sweep = now + self.SWEEP_EVERY
        for name in [n for n, lease in self._leases.items() if lease.ends <= now]:
            del self._leases[name]
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.ensure_future(self._delete_ended())

    async def _delete_ended(self) -> None:
        try:
            async with self.pool.connection(timeout=self.CLAIM_TIMEOUT) as conn:
                await conn.execute(_SWEEP)
        except (psycopg.Error, OSError) as exc:
            log.warning("rate limits: could not delete ended windows: %s", exc)


class RateLimits:
    """The app's rate limits (see the module's docstring) and its client-IP rule."""

    FALLBACK_LOG_EVERY = 10.0  # seconds between warnings that the database does not answer

    def __init__(self, settings: Settings) -> None:
        self._local = FixedWindowRateLimiter(_MemoryStorage())
        self._shared: SharedWindows | None = None
        self._items: dict[str, list[RateLimitItem]] = {
            GRAPHQL: [graphql_limit(settings.rate_limit_per_second, settings.rate_limit_burst)],
            OAUTH_CLIENT: parse_many(settings.rate_limit_oauth_client),
            OAUTH_IP: parse_many(settings.rate_limit_oauth_ip),
            SETTLEMENT: parse_many(settings.rate_limit_settlement),
            REGISTER: parse_many(settings.rate_limit_register),
        }
        self.trusted = trusted_networks(settings.trusted_proxies)
        self._logged: dict[tuple[str, str], int] = {}
        self._fallback_logged = 0.0

    async def start(self, url: str) -> None:
        """Share the counts through the database at `url` (the app's lifespan calls this): a
        small pool of its own, so that earns holding every connection of theirs do not delay
        the decision to admit a request (the driver path's kind: connections the server closed
        are replaced, not handed out)."""
        pool = DriverPool(
            libpq_uri(url),
            min_size=1,
            max_size=4,
            kwargs={
                "autocommit": True,
                "prepare_threshold": 2,
                "application_name": os.environ.get("COALITION_APP", "coalition") + "-ratelimit",
            },
            open=False,
        )
        await pool.open()
        self._shared = SharedWindows(pool)

    async def stop(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            if shared._sweeping is not None:
                shared._sweeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await shared._sweeping
            await shared.pool.close()

    def client_ip(self, conn: HTTPConnection) -> str:
        """The client's IP address for throttling and logs (see `forwarded_client`)."""
        client = conn.scope.get("client")
        peer = client[0] if client else "unknown"
        if not self.trusted:
            return peer
        return forwarded_client(peer, conn.headers.getlist("x-forwarded-for"), self.trusted)

    async def hit(self, limit: str, key: str) -> int | None:
        """Count one request of `key` against `limit`: None if allowed, else the seconds to
        wait before the window lets it through."""
        for item in self._items[limit]:
            wait = await self._hit(item, limit, key)
            if wait is not None:
                retry_after = max(1, math.ceil(wait))
                self._log(limit, key, item, retry_after)
                return retry_after
        return None

    async def _hit(self, item: RateLimitItem, limit: str, key: str) -> float | None:
        if self._shared is not None:
            try:
                return await self._shared.hit(item, item.key_for(limit, key))
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._log_fallback(exc)
        if self._local.hit(item, limit, key):
            return None
        reset_at, _ = self._local.get_window_stats(item, limit, key)
        return reset_at - time.time()

    def _log(self, limit: str, key: str, item: RateLimitItem, retry_after: int) -> None:
        # Once per key and window: a flood must not become a log flood.
        window_end = int(time.time()) + retry_after
        if abs(self._logged.get((limit, key), -10) - window_end) <= 1:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged[(limit, key)] = window_end
        log.warning("rate limit %s (%s) reached by %r", limit, item, key)

    def _log_fallback(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._fallback_logged >= self.FALLBACK_LOG_EVERY:
            self._fallback_logged = now
            log.warning("rate limits: the database does not answer (%r): counting per process", exc)


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
            retry_after = await limits.hit(limit, key)
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
