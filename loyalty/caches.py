"""Process-wide caches of the use cases: partner configuration and card numbers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aiodataloader import DataLoader
from psycopg_pool import AsyncConnectionPool

from core.db import DriverConnection
from members import service as members
from members.errors import MemberNotFound
from partners import service as partners
from partners.service import PartnerConfig

if TYPE_CHECKING:
    from loyalty.runtime import Runtime

T = TypeVar("T")


class TTLCache:
    """A small per-process cache with expiry (partner configuration on the earn path).

    A change made through the use cases is visible in this process at once (`invalidate`);
    other processes see it within `ttl` seconds. Concurrent misses of a key share one load:
    when an entry expires under load, the requests that find it missing (a whole group
    commit's worth) would otherwise each run the same query, on as many pooled connections.
    """

    def __init__(self, ttl: float, maxsize: int = 10_000) -> None:
        self.ttl, self.maxsize = ttl, maxsize
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._loading: dict[Any, asyncio.Task[Any]] = {}  # the load in flight, per key
        self._generation = 0  # bumped by `invalidate`: a load begun before is not kept

    async def get(self, key: Any, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or `load()`'s, remembered for `ttl` seconds."""
        hit = self._data.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return cast(T, hit[1])
        loop = asyncio.get_running_loop()
        flight = self._loading.get(key)
        if flight is None or flight.get_loop() is not loop:
            # A task of its own: the load ends (and serves the others) even if this caller is
            # cancelled. A failure is this caller's; the others then try their own.
            flight = self._loading[key] = loop.create_task(self._fill(key, load, self._generation))
            flight.add_done_callback(_retrieved)
            return cast(T, await asyncio.shield(flight))
        try:
            return cast(T, await asyncio.shield(flight))
        except Exception:  # another caller's load failed: try as if alone
            return await self._fill(key, load, self._generation)

    async def _fill(self, key: Any, load: Callable[[], Awaitable[T]], generation: int) -> T:
        """`load()`'s value, kept unless the cache was invalidated since `generation`."""
        try:
            value = await load()
        finally:
            if self._loading.get(key) is asyncio.current_task():
                del self._loading[key]
        if generation == self._generation:  # else invalidated meanwhile: maybe stale
            self.put(key, value)
        return value

    def peek(self, key: Any) -> Any:
        """The cached value, or None when absent or expired."""
        hit = self._data.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, key: Any, value: Any) -> None:
        """Remember `value` for `ttl` seconds."""
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def invalidate(self, key: Any = None) -> None:
        """Forget `key` (everything when None); a load already under way is not kept, and the
        next caller starts a new one."""
        self._generation += 1
        if key is None:
            self._data.clear()
            self._loading.clear()
        else:
            self._data.pop(key, None)
            self._loading.pop(key, None)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a load's failure seen: its callers got it (or went away)."""
    if not task.cancelled():
        task.exception()


class MemberCards:
    """Card number -> member id for the whole process, on the earn path.

    Concurrent requests' lookups share ONE query (a DataLoader across requests, on psycopg's
    pool), and known cards are remembered: a card number never changes hands once issued."""

    def __init__(self, ttl: float = 300.0, maxsize: int = 100_000) -> None:
        self.cache = TTLCache(ttl=ttl, maxsize=maxsize)
        self._loader: DataLoader[str, uuid.UUID | None] | None = None
        self.pool: AsyncConnectionPool | None = None
        self.queries = 0

    async def member_id(self, pool: AsyncConnectionPool, card_number: str) -> uuid.UUID:
        """The member holding `card_number`; MemberNotFound when nobody does."""
        hit = self.cache.peek(card_number)
        if hit is not None:
            return hit
        loader = self._loader
        if loader is None or loader.loop is not asyncio.get_running_loop() or self.pool is not pool:
            self.pool = pool
            # Made inside the running loop, to which it binds.
            loader = self._loader = DataLoader(self._load, cache=False, max_batch_size=500)
        member_id = await loader.load(card_number)
        if member_id is None:
            raise MemberNotFound("no member has this card number")
        self.cache.put(card_number, member_id)
        return member_id

    async def _load(self, cards: list[str]) -> list[uuid.UUID | None]:
        assert self.pool is not None
        self.queries += 1
        async with self.pool.connection() as conn:
            found = await members.ids_by_cards(DriverConnection(conn), card_numbers=cards)
        return [found.get(c) for c in cards]


@dataclass
class Caches:
    """Process-wide caches, kept on the app state."""

    partner_config: TTLCache = field(default_factory=lambda: TTLCache(ttl=5.0))
    # card number -> member id never changes once issued: cache positive lookups longer.
    member_by_card: MemberCards = field(default_factory=MemberCards)


async def partner_config(rt: Runtime, partner_id: uuid.UUID) -> PartnerConfig:
    """A partner's configuration (earn rule, currency, first agreement), cached briefly."""

    async def load() -> PartnerConfig:
        async with rt.engine.connect() as conn:
            return await partners.get_config(conn, partner_id=partner_id)

    return await rt.caches.partner_config.get(partner_id, load)
