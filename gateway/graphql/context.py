"""Per-request GraphQL context: who is calling, the database, loaders, caches.

It is also the `loyalty.runtime.Runtime` the use cases run on."""

from __future__ import annotations

import asyncio
import uuid
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
from loyalty.caches import Caches
from partners import service as partners
from partners.service import PartnerRecord
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


@dataclass
class Context:
    """What every resolver gets as `info.context`."""

    request: Any
    response: Any
    engine: AsyncEngine
    pool: AsyncConnectionPool
    earns: EarnBatcher  # group commit for the earn hot path
    settings: Settings
    caches: Caches  # the use cases' (loyalty.caches)
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
    def earn_lines_loader(self) -> DataLoader[uuid.UUID, tuple[ledger.BreakdownLine, ...]]:
        """Earns' breakdowns by transaction id, one statement per batch (an id that is not an
        earn gets no lines)."""

        async def load(ids: list[uuid.UUID]) -> list[tuple[ledger.BreakdownLine, ...]]:
            async with self.read() as conn:
                found = await ledger.earn_lines(conn, transaction_ids=list(dict.fromkeys(ids)))
            return [found.get(i, ()) for i in ids]

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
        """The identity written on every row this request causes: the OAuth client, or the
        operator user signed in to the console."""
        return self.principal.actor if self.principal else "anonymous"

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
