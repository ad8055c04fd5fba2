"""Process-wide caches of the use cases: partner configuration and card holders."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aiodataloader import DataLoader
from psycopg_pool import AsyncConnectionPool

from catalog import offers as catalog_offers
from catalog.breakdown import ApplicableOffer, offers_for
from core.clock import utcnow
from core.db import DriverConnection
from members import service as members
from members import tiers
from members.errors import MemberNotFound
from members.service import CardHolder
from members.tiers import Ladder
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
    """Card number -> its holder for the whole process, on the earn path.

    Concurrent requests' lookups share ONE query (a DataLoader across requests, on psycopg's
    pool), and known cards are remembered: a card number never changes hands once issued. The
    holder carries whether a referral bonus waits for the member's first earn; that flag only
    ever goes from true to false (a referral is recorded with the member, before the card can
    be looked up), so a remembered true may be stale (the payment then finds nothing to pay
    and `paid` corrects it) but a remembered false never is.

    The holder also carries its tier, which does change (an upgrade after an earn, the yearly
    review), so it is trusted for `tier_ttl` seconds only when the caller needs it (a ladder is
    in force): an upgrade or review made in this process updates or forgets it at once
    (`set_tier`, `forget_tiers`), one made elsewhere is seen within `tier_ttl`. Without a
    ladder the tier is not needed and a known card still costs no query."""

    def __init__(self, ttl: float = 300.0, maxsize: int = 100_000, tier_ttl: float = 10.0) -> None:
        self.cache = TTLCache(ttl=ttl, maxsize=maxsize)
        self.tier_ttl = tier_ttl
        self._tiers_forgotten_at = float("-inf")
        self._loader: DataLoader[str, CardHolder | None] | None = None
        self.pool: AsyncConnectionPool | None = None
        self.queries = 0

    async def holder(
        self, pool: AsyncConnectionPool, card_number: str, *, fresh_tier: bool = False
    ) -> CardHolder:
        """The member holding `card_number`; MemberNotFound when nobody does. `fresh_tier`:
        its tier no older than `tier_ttl` (nor than the last `forget_tiers`)."""
        known = self._known(card_number, fresh_tier)
        if known is not None:
            return known
        loader = self._loader
        if loader is None or loader.loop is not asyncio.get_running_loop() or self.pool is not pool:
            self.pool = pool
            # Made inside the running loop, to which it binds.
            loader = self._loader = DataLoader(self._load, cache=False, max_batch_size=500)
        read_at = time.monotonic()
        found = await loader.load(card_number)
        if found is None:
            raise MemberNotFound("no member has this card number")
        self.cache.put(card_number, (found, read_at))
        return found

    async def holders(
        self, pool: AsyncConnectionPool, card_numbers: Collection[str], *, fresh_tier: bool = False
    ) -> dict[str, CardHolder]:
        """The holders of many cards (a batch file's chunk): those it knows, and the others
        in ONE query; unknown cards are absent. `fresh_tier` as in `holder`."""
        found: dict[str, CardHolder] = {}
        missing = []
        for card in set(card_numbers):
            known = self._known(card, fresh_tier)
            if known is None:
                missing.append(card)
            else:
                found[card] = known
        if missing:
            read_at = time.monotonic()
            self.queries += 1
            async with pool.connection() as conn:
                loaded = await members.holders_by_cards(
                    DriverConnection(conn), card_numbers=missing
                )
            for card, holder in loaded.items():
                self.cache.put(card, (holder, read_at))
            found.update(loaded)
        return found

    def _known(self, card_number: str, fresh_tier: bool) -> CardHolder | None:
        """The remembered holder of the card, if any (and, with `fresh_tier`, its tier fresh)."""
        hit = self.cache.peek(card_number)
        if hit is not None:
            holder, read_at = hit
            if not fresh_tier or (
                read_at > self._tiers_forgotten_at and time.monotonic() - read_at < self.tier_ttl
            ):
                return cast(CardHolder, holder)
        return None

    async def member_id(self, pool: AsyncConnectionPool, card_number: str) -> uuid.UUID:
        """The id of the member holding `card_number`; MemberNotFound when nobody does."""
        return (await self.holder(pool, card_number)).member_id

    def paid(self, card_number: str, holder: CardHolder) -> None:
        """The holder's referral bonus is paid: the card's next earns need not look."""
        hit = self.cache.peek(card_number)
        if holder.referral_pending and hit is not None:
            self.cache.put(card_number, (replace(hit[0], referral_pending=False), hit[1]))

    def set_tier(self, card_number: str, tier: str | None) -> None:
        """The card's holder now holds `tier` (an upgrade made in this process)."""
        hit = self.cache.peek(card_number)
        if hit is not None:
            self.cache.put(card_number, (replace(hit[0], tier=tier), time.monotonic()))

    def forget_tiers(self) -> None:
        """Every remembered tier is stale (a review or a new ladder in this process)."""
        self._tiers_forgotten_at = time.monotonic()

    async def _load(self, cards: list[str]) -> list[CardHolder | None]:
        assert self.pool is not None
        self.queries += 1
        async with self.pool.connection() as conn:
            found = await members.holders_by_cards(DriverConnection(conn), card_numbers=cards)
        return [found.get(c) for c in cards]


@dataclass
class Caches:
    """Process-wide caches, kept on the app state."""

    partner_config: TTLCache = field(default_factory=lambda: TTLCache(ttl=5.0))
    # card number -> member never changes once issued: cache positive lookups longer.
    member_by_card: MemberCards = field(default_factory=MemberCards)
    # A partner's live offers (key: partner id), for the earn path; creating or ending an
    # offer here invalidates them (`loyalty.offers`).
    live_offers: TTLCache = field(default_factory=lambda: TTLCache(ttl=5.0))
    # The tier ladder in force (key None), for the earn path; `set_tiers` here invalidates it.
    tier_ladder: TTLCache = field(default_factory=lambda: TTLCache(ttl=5.0, maxsize=1))
    # (partner id, category) -> (the partner's cached live offers, those of them that fit the
    # category): derived from `live_offers`, recomputed when that entry is reloaded.
    purchase_offers: dict[
        tuple[uuid.UUID, str | None], tuple[tuple[ApplicableOffer, ...], PurchaseOffers]
    ] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PurchaseOffers:
    """A partner's live offers that fit a purchase's category (`catalog.breakdown.offers_for`),
    and which of them need the member's activation."""

    offers: tuple[ApplicableOffer, ...]
    activation_ids: frozenset[uuid.UUID]


MAX_PURCHASE_OFFERS = 10_000  # (partner, category) pairs kept: categories are the partners' words


async def partner_config(rt: Runtime, partner_id: uuid.UUID) -> PartnerConfig:
    """A partner's configuration (earn rule, currency, first agreement), cached briefly."""

    async def load() -> PartnerConfig:
        async with rt.engine.connect() as conn:
            return await partners.get_config(conn, partner_id=partner_id)

    return await rt.caches.partner_config.get(partner_id, load)


async def tier_ladder(rt: Runtime) -> Ladder:
    """The tier ladder in force, cached briefly (an empty one: no tiers)."""

    async def load() -> Ladder:
        async with rt.engine.connect() as conn:
            return await tiers.ladder(conn)

    return await rt.caches.tier_ladder.get(None, load)


async def live_offers(rt: Runtime, partner_id: uuid.UUID) -> tuple[ApplicableOffer, ...]:
    """The offers that may apply to earns at the partner (its own and coalition-wide ones),
    cached briefly: the earn evaluates them in memory (`catalog.breakdown`)."""

    async def load() -> tuple[ApplicableOffer, ...]:
        async with rt.engine.connect() as conn:
            found = await catalog_offers.live_offers(conn, partner_id=partner_id, at=utcnow())
        return tuple(found)

    return await rt.caches.live_offers.get(partner_id, load)


async def purchase_offers(
    rt: Runtime, partner_id: uuid.UUID, category: str | None
) -> PurchaseOffers:
    """The partner's live offers (`live_offers`, cached) that fit a purchase in `category`,
    selected once per (partner, category) while that cache entry lives: an earn then checks
    only what depends on the instant and the member (`catalog.breakdown.usable`)."""
    live = await live_offers(rt, partner_id)
    key = (partner_id, category)
    kept = rt.caches.purchase_offers
    hit = kept.get(key)
    if hit is not None and hit[0] is live:
        return hit[1]
    selected = offers_for(live, partner_id=partner_id, category=category)
    found = PurchaseOffers(selected, frozenset(o.id for o in selected if o.requires_activation))
    if len(kept) >= MAX_PURCHASE_OFFERS:
        kept.clear()
    kept[key] = (live, found)
    return found
