"""Group commit for earns: concurrent earns share one transaction, each still durable.

An earn is one small transaction whose cost is mostly per-transaction overhead: two statements
to plan and execute, BEGIN and COMMIT round trips, a trigger invocation, a WAL flush. Under
load, `EarnBatcher` runs the earns that arrive together as ONE transaction of two set-based
statements (the same two the single path sends, over arrays), the way TigerBeetle batches
transfers and PostgreSQL's own `commit_delay` groups flushes:

- No timer and no waiting for company. A request starts a batch at once when fewer than
  `max_in_flight` batches are running; otherwise it joins the next one. Under light load every
  batch holds one earn; under heavy load batches grow to `max_batch`.
- Every caller's `await` returns only after the COMMIT that contains its earn: the result is as
  durable as a single-path earn's, and a batch that fails commits nothing.
- The same rules, enforced by the same database: the idempotency key is claimed by the unique
  index (keys first, in a fixed order), the members' wallet and debt rows are locked in id
  order, entries are written by one statement per transaction set and checked zero-sum by the
  trigger, debt is repaid first (in arrival order when a member earns twice in one batch).
- Anything unusual goes to the single path (`ledger.service.earn`, one transaction per earn),
  which gives the exact behaviour and typed errors: a key that already exists (replay or
  conflict), an unknown member or partner, a duplicate order, a second request with the same
  key or order in the batch, or a batch statement that fails for any reason (the batch rolls
  back whole and each of its earns is retried alone).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from dateutil.relativedelta import relativedelta
from psycopg_pool import AsyncConnectionPool

from core.db import driver_unit_of_work
from core.ids import uuid7
from ledger import service
from ledger.service import DEFAULT_VALIDITY_MONTHS, EarnResult

log = logging.getLogger(__name__)

# Claim the keys (sorted: two batches never wait on each other's keys in opposite orders), but
# only for requests whose member and partner exist and whose order has no earn yet; then lock the claimed members' wallet and
# debt rows in id order (the lock reads `claimed`, so it runs after the claims).
_CLAIM_AND_LOCK = """
WITH req AS (
    SELECT r.*, p.id AS issuance_id
    FROM unnest(%(i)s::int[], %(actor)s::text[], %(key)s::text[], %(hash)s::text[],
                %(member)s::uuid[], %(partner)s::uuid[], %(ref)s::text[])
         AS r(i, actor, key, hash, member, partner, ref)
    JOIN accounts p ON p.kind = 'issuance' AND p.owner_id = r.partner
    WHERE EXISTS (SELECT 1 FROM accounts w WHERE w.kind = 'wallet' AND w.owner_id = r.member)
      AND (r.ref IS NULL OR NOT EXISTS (
          SELECT 1 FROM transactions t
          WHERE t.kind = 'earn' AND t.partner_id = r.partner AND t.ref = r.ref))
), claim AS (
    INSERT INTO idempotency_keys (actor, operation, key, request_hash)
    SELECT actor, 'earn', key, hash FROM req ORDER BY actor, key
    ON CONFLICT (actor, operation, key) DO NOTHING
    RETURNING id, actor, key
), claimed AS (
    SELECT req.i, req.member, req.issuance_id, claim.id AS claim_id
    FROM req JOIN claim ON claim.actor = req.actor AND claim.key = req.key
), locked AS (
    SELECT id, kind, owner_id, balance FROM accounts
    WHERE kind IN ('wallet', 'debt') AND owner_id IN (SELECT member FROM claimed)
    ORDER BY id
    FOR UPDATE
)
SELECT c.i, c.claim_id, c.issuance_id, w.id AS wallet_id, d.id AS debt_id,
       d.balance AS debt_balance
FROM claimed c
JOIN locked w ON w.owner_id = c.member AND w.kind = 'wallet'
JOIN locked d ON d.owner_id = c.member AND d.kind = 'debt'
"""

# The single path's write statement, over arrays: transactions, their entries (one INSERT, so
# the zero-sum trigger sees each transaction whole), lots, and the results replays will get.
_WRITE = """
WITH r AS (
    SELECT * FROM unnest(
        %(tx)s::uuid[], %(points)s::bigint[], %(net)s::bigint[], %(repaid)s::bigint[],
        %(partner)s::uuid[], %(member)s::uuid[], %(ref)s::text[], %(amount)s::numeric[],
        %(currency)s::text[], %(category)s::text[], %(at)s::timestamptz[], %(actor)s::text[],
        %(issuance)s::bigint[], %(wallet)s::bigint[], %(debt)s::bigint[],
        %(available_at)s::timestamptz[], %(expires_at)s::timestamptz[], %(result)s::jsonb[],
        %(claim)s::bigint[]
    ) AS r(tx, points, net, repaid, partner, member, ref, amount, currency, category, at, actor,
           issuance, wallet, debt, available_at, expires_at, result, claim)
), t AS (
    INSERT INTO transactions (id, kind, points, partner_id, member_id, ref, amount, currency,
                              category, effective_at, actor)
    SELECT tx, 'earn', points, partner, member, ref, amount, currency, category, at, actor
    FROM r
), e AS (
    INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
    SELECT tx, issuance, -points, at, actor FROM r
    UNION ALL SELECT tx, wallet, net, at, actor FROM r WHERE net > 0
    UNION ALL SELECT tx, debt, repaid, at, actor FROM r WHERE repaid > 0
), l AS (
    INSERT INTO lots (member_id, wallet_id, issuer_id, earn_tx_id, points, remaining, earned_at,
                      available_at, expires_at, actor)
    SELECT member, wallet, partner, tx, points, net, at, available_at, expires_at, actor FROM r
)
UPDATE idempotency_keys k SET result = r.result FROM r WHERE k.id = r.claim
"""


@dataclass
class _Earn:
    """One caller's earn, validated, waiting for its batch."""

    kwargs: dict[str, Any]  # for the single path
    actor: str
    key: str
    digest: str
    member_id: uuid.UUID
    partner_id: uuid.UUID
    points: int
    ref: str | None
    amount: Decimal | None
    currency: str | None
    category: str | None
    at: datetime
    hold_days: int
    validity_months: int
    future: asyncio.Future[EarnResult]


@dataclass
class BatchStats:
    """What the batcher has done (for /metrics, the benchmark and the tests)."""

    batches: int = 0
    batched_earns: int = 0
    single_path: int = 0  # earns sent to the single path (replays, errors, fallbacks)
    failed_batches: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)


class EarnBatcher:
    """Runs `ledger.service.earn` semantics with group commit over a psycopg pool."""

    def __init__(
        self, pool: AsyncConnectionPool, *, max_batch: int = 64, max_in_flight: int = 2
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self.pool = pool
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.stats = BatchStats()
        self._pending: list[_Earn] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def earn(
        self,
        *,
        actor: str,
        idempotency_key: str,
        member_id: uuid.UUID,
        partner_id: uuid.UUID,
        points: int,
        hold_days: int = 0,
        validity_months: int = DEFAULT_VALIDITY_MONTHS,
        ref: str | None = None,
        amount: Decimal | None = None,
        currency: str | None = None,
        category: str | None = None,
        at: datetime | None = None,
    ) -> EarnResult:
        """`ledger.service.earn`, committed in a group: same arguments, results and errors."""
        service._check_points(points)
        service._check_key(idempotency_key)
        if not 0 <= hold_days <= 365:
            raise service.LedgerValidation("hold_days must be between 0 and 365")
        at = service._at(at)
        kwargs = {
            "actor": actor,
            "idempotency_key": idempotency_key,
            "member_id": member_id,
            "partner_id": partner_id,
            "points": points,
            "hold_days": hold_days,
            "validity_months": validity_months,
            "ref": ref,
            "amount": amount,
            "currency": currency,
            "category": category,
            "at": at,
        }
        digest = service.earn_digest(
            member_id=member_id,
            partner_id=partner_id,
            points=points,
            ref=ref,
            amount=amount,
            currency=currency,
            category=category,
            hold_days=hold_days,
            validity_months=validity_months,
        )
        request = _Earn(
            kwargs,
            actor,
            idempotency_key,
            digest,
            member_id,
            partner_id,
            points,
            ref,
            amount,
            currency,
            category,
            at,
            hold_days,
            validity_months,
            asyncio.get_running_loop().create_future(),
        )
        self._pending.append(request)
        self._kick()
        return await asyncio.shield(request.future)

    async def drain(self) -> None:
        """Wait until every batch started so far has finished (for shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the engine ------------------------------------------------------------------------------

    def _kick(self) -> None:
        while self._pending and self._in_flight < self.max_in_flight:
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        try:
            batch = self._take()
            if batch:
                await self._settle(batch)
        finally:
            self._in_flight -= 1
            self._kick()

    def _take(self) -> list[_Earn]:
        """Up to `max_batch` pending earns, at most one per key and per (partner, order)."""
        batch: list[_Earn] = []
        keys: set[tuple[str, str]] = set()
        orders: set[tuple[uuid.UUID, str]] = set()
        rest: list[_Earn] = []
        for r in self._pending:
            order = (r.partner_id, r.ref) if r.ref is not None else None
            if len(batch) >= self.max_batch or (r.actor, r.key) in keys or order in orders:
                rest.append(r)
                continue
            batch.append(r)
            keys.add((r.actor, r.key))
            if order is not None:
                orders.add(order)
        self._pending = rest
        return batch

    async def _settle(self, batch: list[_Earn]) -> None:
        try:
            done, alone = await self._write(batch)
        except Exception:
            log.warning(
                "an earn batch of %d failed; retrying each earn alone", len(batch), exc_info=True
            )
            self.stats.failed_batches += 1
            done, alone = [], batch
        else:
            self.stats.batches += 1
            self.stats.batched_earns += len(done)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            self.stats.sizes[len(batch)] = self.stats.sizes.get(len(batch), 0) + 1
        for request, result in done:
            if not request.future.done():
                request.future.set_result(result)
        if alone:
            self.stats.single_path += len(alone)
            await asyncio.gather(*(self._alone(r) for r in alone))

    async def _alone(self, request: _Earn) -> None:
        try:
            async with driver_unit_of_work(self.pool) as conn:
                result = await service.earn(conn, **request.kwargs)
        except BaseException as exc:  # the caller gets exactly what the single path raised
            if not request.future.done():
                request.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not request.future.done():
                request.future.set_result(result)

    async def _write(
        self, batch: list[_Earn]
    ) -> tuple[list[tuple[_Earn, EarnResult]], list[_Earn]]:
        """One transaction for the batch: returns the earns it committed and those to run alone."""
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cur:
                await cur.execute(
                    _CLAIM_AND_LOCK,
                    {
                        "i": list(range(len(batch))),
                        "actor": [r.actor for r in batch],
                        "key": [r.key for r in batch],
                        "hash": [r.digest for r in batch],
                        "member": [r.member_id for r in batch],
                        "partner": [r.partner_id for r in batch],
                        "ref": [r.ref for r in batch],
                    },
                )
                claims = {row[0]: row[1:] for row in await cur.fetchall()}
                done: list[tuple[_Earn, EarnResult]] = []
                rows: list[tuple[Any, ...]] = []
                debts: dict[uuid.UUID, int] = {}
                for i, r in enumerate(batch):
                    if i not in claims:
                        continue
                    claim_id, issuance_id, wallet_id, debt_id, debt_balance = claims[i]
                    owed = debts.get(r.member_id, -debt_balance)
                    repaid = min(r.points, owed)  # a member's debt is repaid first
                    debts[r.member_id] = owed - repaid
                    available_at = r.at + timedelta(days=r.hold_days)
                    result = EarnResult(
                        transaction_id=uuid7(),
                        points=r.points,
                        status="pending" if available_at > r.at else "available",
                        available_at=available_at,
                        expires_at=r.at + relativedelta(months=r.validity_months),
                        debt_repaid=repaid,
                    )
                    rows.append(
                        (
                            result.transaction_id,
                            r.points,
                            r.points - repaid,
                            repaid,
                            r.partner_id,
                            r.member_id,
                            r.ref,
                            r.amount,
                            r.currency,
                            r.category,
                            r.at,
                            r.actor,
                            issuance_id,
                            wallet_id,
                            debt_id,
                            result.available_at,
                            result.expires_at,
                            result.to_json(),
                            claim_id,
                        )
                    )
                    done.append((r, result))
                if rows:
                    await cur.execute(
                        _WRITE, dict(zip(_WRITE_COLUMNS, _columns(rows), strict=True))
                    )
        alone = [r for i, r in enumerate(batch) if i not in claims]
        return done, alone


_WRITE_COLUMNS = (
    "tx",
    "points",
    "net",
    "repaid",
    "partner",
    "member",
    "ref",
    "amount",
    "currency",
    "category",
    "at",
    "actor",
    "issuance",
    "wallet",
    "debt",
    "available_at",
    "expires_at",
    "result",
    "claim",
)


def _columns(rows: list[tuple[Any, ...]]) -> Iterator[list[Any]]:
    return (list(col) for col in zip(*rows, strict=True))
