"""Per-request GraphQL context: who is calling, the database, loaders, caches."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from strawberry.dataloader import DataLoader

from core.db import DriverConnection, driver_unit_of_work
from core.settings import Settings
from gateway.oauth.auth import Principal
from ledger import service as ledger
from ledger.batch import EarnBatcher
from members import service as members
from members.errors import MemberNotFound
from partners import service as partners
from partners.service import PartnerConfig, PartnerRecord
from settlement import service as settlement

T = TypeVar("T")
PeriodKey = tuple[uuid.UUID, uuid.UUID | None]
_PERIOD_LOADERS = (
    "statements_loader",
    "matrix_loader",
    "adjustments_loader",
    "payments_loader",
    "verification_loader",
)


class TTLCache:
    """A small per-process cache with expiry (partner configuration on the earn path).

    A change made through the API is visible in this process at once (`invalidate`); other
    processes see it within `ttl` seconds.
    """

    def __init__(self, ttl: float, maxsize: int = 10_000) -> None:
        self.ttl, self.maxsize = ttl, maxsize
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    async def get(self, key: Any, load: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]  # type: ignore[no-any-return]
        value = await load()
        self._data[key] = (now + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return value

    def peek(self, key: Any) -> Any:
        """The cached value, or None when absent or expired."""
        hit = self._data.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def invalidate(self, key: Any = None) -> None:
        if key is None:
            self._data.clear()
        else:
            self._data.pop(key, None)


class MemberCards:
    """Card number -> member id for the whole process, on the earn path.

    Concurrent requests' lookups share ONE query (a DataLoader across requests, on psycopg's
    pool), and known cards are remembered: a card number never changes hands once issued."""

    def __init__(self, ttl: float = 300.0, maxsize: int = 100_000) -> None:
        self.cache = TTLCache(ttl=ttl, maxsize=maxsize)
        self._loader: DataLoader[str, uuid.UUID | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pool: AsyncConnectionPool | None = None
        self.queries = 0

    async def member_id(self, pool: AsyncConnectionPool, card_number: str) -> uuid.UUID:
        hit = self.cache.peek(card_number)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        if self._loader is None or self._loop is not loop or self.pool is not pool:
            self._loop, self.pool = loop, pool
            self._loader = DataLoader(load_fn=self._load, cache=False, max_batch_size=500)
        member_id = await self._loader.load(card_number)
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
class AppCaches:
    """Process-wide caches, kept on the app state."""

    partner_config: TTLCache = field(default_factory=lambda: TTLCache(ttl=5.0))
    # card number -> member id never changes once issued: cache positive lookups longer.
    member_by_card: MemberCards = field(default_factory=MemberCards)


@dataclass
class Context:
    """What every resolver gets as `info.context`."""

    request: Any
    response: Any
    engine: AsyncEngine
    pool: AsyncConnectionPool
    earns: EarnBatcher  # group commit for the earn hot path
    settings: Settings
    caches: AppCaches
    principal: Principal | None
    # graphql-transport-ws: the `connection_init` payload (may carry the bearer token).
    connection_params: dict[str, Any] | None = None
    # websocket: the principal's slot this socket holds (see gateway.graphql.view).
    socket_slot: str | None = None
    partner_loader: DataLoader[uuid.UUID, PartnerRecord | None] = field(init=False)
    _read_conn: AsyncConnection | None = field(default=None, init=False, repr=False)
    _read_lock: asyncio.Lock | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        async def load_partners(ids: list[uuid.UUID]) -> list[PartnerRecord | None]:
            async with self.read() as conn:
                return await partners.get_many(conn, ids=list(ids))

        self.partner_loader = DataLoader(load_fn=load_partners)

    # A period's nested settlement fields, batched over the periods of the request and keyed by
    # (period id, the partner whose view it is or None for the operator's). Made on first use:
    # the earn path never pays for them.

    @cached_property
    def statements_loader(self) -> DataLoader[PeriodKey, list[settlement.Statement]]:
        return DataLoader(load_fn=self._by_period(settlement.statements_many))

    @cached_property
    def matrix_loader(self) -> DataLoader[PeriodKey, list[settlement.MatrixCell]]:
        return DataLoader(load_fn=self._by_period(settlement.matrix_many))

    @cached_property
    def adjustments_loader(self) -> DataLoader[PeriodKey, list[settlement.Adjustment]]:
        return DataLoader(load_fn=self._by_period(settlement.adjustments_many))

    @cached_property
    def payments_loader(self) -> DataLoader[PeriodKey, list[settlement.PaymentInstruction]]:
        async def load(keys: list[PeriodKey]) -> list[list[settlement.PaymentInstruction]]:
            # From the statements (the same rows): no query of its own when they are loaded.
            found = await self.statements_loader.load_many(keys)
            return [settlement.instructions(rows) for rows in found]

        return DataLoader(load_fn=load)

    @cached_property
    def verification_loader(self) -> DataLoader[uuid.UUID, settlement.Verification | None]:
        async def load(ids: list[uuid.UUID]) -> list[settlement.Verification | None]:
            async with self.read() as conn:
                found = await settlement.verify_many(conn, period_ids=list(dict.fromkeys(ids)))
            return [found.get(i) for i in ids]

        return DataLoader(load_fn=load)

    def _by_period(
        self, fetch: Callable[..., Awaitable[dict[uuid.UUID, list[T]]]]
    ) -> Callable[[list[PeriodKey]], Awaitable[list[list[T]]]]:
        """A batch function over (period, viewer) keys: one query per viewer (one in practice)."""

        async def load(keys: list[PeriodKey]) -> list[list[T]]:
            by_viewer: dict[uuid.UUID | None, list[uuid.UUID]] = {}
            for period_id, viewer in keys:
                by_viewer.setdefault(viewer, []).append(period_id)
            found: dict[PeriodKey, list[T]] = {}
            for viewer, ids in by_viewer.items():
                async with self.read() as conn:
                    rows = await fetch(conn, period_ids=list(dict.fromkeys(ids)), partner_id=viewer)
                found.update({(pid, viewer): rows.get(pid, []) for pid in ids})
            return [found[k] for k in keys]

        return load

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """The request's connection for reads: opened on first use, then shared, one resolver
        at a time, by every resolver of the request; closed by `release` when it ends. A request
        holds one pooled connection however many fields it asks for. (The view calls `release`
        after each operation, over HTTP and websockets alike.) Hold it only around the service
        call: awaiting a DataLoader inside would wait for itself."""
        if self._read_lock is None:
            self._read_lock = asyncio.Lock()
        async with self._read_lock:
            if self._read_conn is None:
                self._read_conn = await self.engine.connect()
            conn = self._read_conn
            try:
                yield conn
            except Exception:
                # A failed statement aborts the transaction: the next resolver gets a fresh one.
                self._read_conn = None
                await conn.close()
                raise

    async def release(self) -> None:
        """End of an operation: close the read connection, forget what the loaders cached (a
        websocket's context lives on across operations)."""
        if self._read_lock is not None:
            async with self._read_lock:
                conn, self._read_conn = self._read_conn, None
                if conn is not None:
                    await conn.close()
        self.partner_loader.clear_all()
        for name in _PERIOD_LOADERS:
            self.__dict__.pop(name, None)

    @property
    def actor(self) -> str:
        """The identity written on every row this request causes: the OAuth client."""
        return self.principal.client_id if self.principal else "anonymous"

    @property
    def key_space(self) -> str:
        """Whose idempotency keys this request's are: the partner's (all of its OAuth clients
        share them), the member's, or the operator's; never the client's alone."""
        p = self.principal
        if p is None:
            return "anonymous"
        if p.kind == "partner" and p.partner_id is not None:
            return ledger.partner_key_space(p.partner_id)
        if p.kind == "member" and p.member_id is not None:
            return ledger.member_key_space(p.member_id)
        if p.kind == "operator":
            return ledger.OPERATOR_KEY_SPACE
        return p.client_id

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncConnection]:
        """One transaction for the operation: commits at the end, rolls back on error."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def driver_unit_of_work(self) -> AsyncIterator[DriverConnection]:
        """The same, on psycopg's own pool: for the hot path (earn)."""
        async with driver_unit_of_work(self.pool) as conn:
            yield conn

    async def partner_config(self, partner_id: uuid.UUID) -> PartnerConfig:
        async def load() -> PartnerConfig:
            async with self.engine.connect() as conn:
                return await partners.get_config(conn, partner_id=partner_id)

        return await self.caches.partner_config.get(partner_id, load)


async def guarded(
    info: Any,
    scope: str,
    work: Callable[[Context], Awaitable[T]],
    *,
    kind: str | None = None,
) -> Any:
    """Run `work` if the caller holds `scope` (and is a `kind` principal); domain errors
    become typed results. Nothing is committed when it raises."""
    from core.errors import DomainError
    from gateway.graphql import errors as E

    ctx: Context = info.context
    if ctx.principal is None:
        return E.forbidden("authentication required: send a Bearer access token")
    if scope not in ctx.principal.scopes or (kind is not None and ctx.principal.kind != kind):
        return E.forbidden(f"this operation needs the {scope!r} scope")
    try:
        return await work(ctx)
    except DomainError as exc:
        return E.to_graphql(exc)
