"""Group commit for earns: concurrent earns share one transaction, each still durable.

An earn is one small transaction whose cost is mostly per-transaction overhead: statements to
plan and execute, BEGIN and COMMIT round trips, a trigger invocation, a WAL flush. Under load,
`EarnBatcher` writes the earns that arrive together with ONE set-based statement over arrays,
sent in autocommit mode (one round trip, one commit), the way TigerBeetle batches transfers and
PostgreSQL's own `commit_delay` groups flushes:

- No timer and no waiting for company. A request starts a batch at once when fewer than
  `max_in_flight` batches are running; otherwise it joins the next one. Under light load every
  batch holds one earn; under heavy load batches grow to `max_batch`. When at least `split_at`
  earns are waiting and several batches are starting, they share them equally: two statements
  of 16 run side by side on two connections (and CPUs) where one of 32 would leave a CPU idle
  (measured in bench/RESULTS.md: below 32 the statement's fixed cost makes splitting a loss).
- Every caller's `await` returns only after the COMMIT that contains its earn: the result is as
  durable as a single-path earn's, and a batch that fails commits nothing.
- The same rules, enforced by the same database: the idempotency key is claimed by the unique
  index (keys first, in a fixed order) together with the result replays will get, the members'
  wallet and debt rows are locked in id order, entries are written by one INSERT and checked
  zero-sum by the trigger.
- A member's earn waits for the next batch while a batch holding an earn of theirs runs (in
  this process): two statements of this batcher never queue on one wallet's lock, and the
  second never finds the wallet changed under its snapshot (which a tier upgrade's guard
  refuses: `members.tiers`), sending its whole batch to the single path.
- Anything unusual goes to the single path (`ledger.service.earn`, one transaction per earn),
  which gives the exact behaviour and typed errors: a key that already exists (replay or
  conflict), an unknown member or partner, a duplicate order, a second request with the same
  key or order in the batch, a member who owes points (debt is repaid first from new earnings:
  the statement refuses itself under its locks), or a batch statement that fails for any
  reason (it writes nothing, and each of its earns is retried alone).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import driver_unit_of_work
from core.ids import uuid7s
from ledger import service
from ledger.outbox import EARN_DATA
from ledger.service import BreakdownLine, EarnRequest, EarnResult

log = logging.getLogger(__name__)

STEP = 1000  # earns prepared between turns of the event loop (`prepare_earns`)
REFUSED = "LR001"  # SQLSTATE of ledger_refuse() (migration 0005)
# A UTC instant as orjson writes a datetime with microseconds (`EarnResult.from_json` reads it)
_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'

# ONE autocommit statement per batch (one round trip, one commit):
# 1. `req`: the requests (`rows`, each with the values it does not share with the first earn,
#    `common`) whose partner and member exist and whose order has no earn yet. The
#    `OFFSET 0`s keep each lookup one index probe per earn: without them the generic plan read
#    every partner's issuance account per batch, or hashed all earns for the order check.
# 2. `claim`: their idempotency keys, with the result replays will get, sorted (two batches never
#    wait on each other's keys in opposite orders). A key that exists already is skipped: that
#    request goes to the single path (replay or conflict); one still in flight is waited for.
# 3. `locked`: the claimed members' wallet and debt rows, in id order, after the claims.
# 4. `go`: a member who owes points needs the debt repaid first, which the single path does:
#    the statement refuses itself (nothing is written) and every earn of the batch runs alone.
# 5. The transactions, their entries (one INSERT: the trigger checks each transaction sums to
#    zero and adds to the wallets, already locked) and the lots, in arrival order: lots earned at
#    the same instant are spent in the order they were earned (the lot id breaks the tie); and
#    the breakdowns of the earns that have more than a BASE line (`_lines`), one row each.
#    An earn's `op` points (its coalition-wide offer lines) are the operator's, as on the single
#    path (`ledger.earn._earn_statement`): taken from `promotions` (`promo`, one probe per
#    statement) into a lot with no issuer, after the partner's lot of the rest (`share`: a share
#    of 0 points makes no entry and no lot).
# 6. `ob`: their `earn.recorded` events for partners with webhooks (`ledger.outbox`), in the
#    same statement: no event without its earn, no earn without its event.
_EARN_BATCH_CTES = (
    """
WITH c AS MATERIALIZED (
    -- the values most rows share, and what they make once: the issuance account of the shared
    -- partner (one probe, not one per row) and the part of the replay result built from the
    -- shared dates
    SELECT c.*, p.id AS issuance_id,
           jsonb_build_object(
               'status', CASE WHEN c.available_at > c.at THEN 'pending' ELSE 'available' END,
               'available_at', to_char(c.available_at AT TIME ZONE 'UTC', %(iso)s),
               'expires_at', to_char(c.expires_at AT TIME ZONE 'UTC', %(iso)s),
               'debt_repaid', 0) AS result
    FROM jsonb_to_record(CAST(%(common)s AS jsonb)) AS c(
        space text, actor text, partner uuid, at timestamptz, available_at timestamptz,
        expires_at timestamptz
    ) LEFT JOIN LATERAL (SELECT id FROM accounts WHERE kind = 'issuance' AND owner_id = c.partner
                         OFFSET 0) p ON true
), req AS (
    SELECT r.*, w.id AS wallet_id, w.xmin AS wallet_seen
    FROM (
        SELECT r.i, coalesce(r.space, c.space) AS space, coalesce(r.actor, c.actor) AS actor,
               r.key, r.hash, r.member, coalesce(r.partner, c.partner) AS partner, r.ref, r.tx,
               r.points, coalesce(r.op, 0) AS op, r.amount, r.currency, r.category,
               coalesce(r.at, c.at) AS at, coalesce(r.available_at, c.available_at) AS available_at,
               coalesce(r.expires_at, c.expires_at) AS expires_at, r.lines, r.after,
               CASE WHEN r.partner IS NULL THEN c.issuance_id
                    ELSE (SELECT id FROM accounts WHERE kind = 'issuance' AND owner_id = r.partner)
               END AS issuance_id,
               CASE WHEN r.at IS NULL AND r.available_at IS NULL AND r.expires_at IS NULL
                    THEN c.result END AS shared_result
        FROM c CROSS JOIN json_to_recordset(CAST(%(rows)s AS json)) AS r(
            i int, space text, actor text, key text, hash text, member uuid, partner uuid,
            ref text, tx uuid, points bigint, op bigint, amount numeric, currency text,
            category text, at timestamptz, available_at timestamptz, expires_at timestamptz,
            lines jsonb, after jsonb
        )
    ) r
    JOIN LATERAL (SELECT id, xmin FROM accounts WHERE kind = 'wallet' AND owner_id = r.member
                  OFFSET 0) w ON true
    WHERE r.issuance_id IS NOT NULL AND (r.ref IS NULL OR NOT EXISTS (
        SELECT 1 FROM transactions t
        WHERE t.kind = 'earn' AND t.partner_id = r.partner AND t.ref = r.ref OFFSET 0))
), promo AS (
    SELECT id FROM accounts WHERE kind = 'promotions' AND owner_id IS NULL
), claim AS (
    INSERT INTO idempotency_keys (key_space, actor, operation, key, request_hash, result)
    SELECT space, actor, 'earn', key, hash,
           -- what a replay gets back (`EarnResult.from_json`), as `_prepare`'s results: the
           -- shared dates' part built once (`c`)
           jsonb_build_object('transaction_id', tx, 'points', points) || coalesce(
               shared_result,
               jsonb_build_object(
                   'status', CASE WHEN available_at > at THEN 'pending' ELSE 'available' END,
                   'available_at', to_char(available_at AT TIME ZONE 'UTC', %(iso)s),
                   'expires_at', to_char(expires_at AT TIME ZONE 'UTC', %(iso)s),
                   'debt_repaid', 0))
    FROM req ORDER BY space, key
    ON CONFLICT (key_space, operation, key) DO NOTHING
    RETURNING key_space, key
), ok AS (
    -- what the rest reads (each CTE keeps its rows: a chunk's are 10,000)
    SELECT req.i, req.actor, req.member, req.partner, req.ref, req.tx, req.points, req.op,
           req.amount, req.currency, req.category, req.at, req.available_at, req.expires_at,
           req.lines, req.after, req.issuance_id, req.wallet_id, req.wallet_seen
    FROM req JOIN claim ON claim.key_space = req.space AND claim.key = req.key
), locked AS (
    SELECT id, kind, balance, xmin FROM accounts
    WHERE kind IN ('wallet', 'debt') AND owner_id IN (SELECT member FROM ok)
    ORDER BY id
    FOR UPDATE
), go AS (
    SELECT CASE WHEN bool_or(kind = 'debt' AND balance <> 0)
                THEN ledger_refuse('a member of the batch owes points')
                ELSE true END AS go
    FROM locked
), w AS (
    SELECT ok.* FROM ok, go WHERE go.go
), moved AS (
    SELECT DISTINCT ok.member FROM ok JOIN locked k ON k.id = ok.wallet_id
    WHERE NOT k.xmin = ok.wallet_seen
), t AS (
    INSERT INTO transactions (id, kind, points, operator_points, partner_id, member_id, ref,
                              amount, currency, category, effective_at, actor)
    SELECT tx, 'earn', points, op, partner, member, ref, amount, currency, category, at, actor
    FROM w ORDER BY i
), share AS (
    SELECT w.i, w.tx, w.member, w.wallet_id, w.at, w.available_at, w.expires_at, w.actor, 0 AS n,
           w.partner AS issuer, w.issuance_id AS account, w.points - w.op AS pts
    FROM w WHERE w.points > w.op
    UNION ALL
    SELECT w.i, w.tx, w.member, w.wallet_id, w.at, w.available_at, w.expires_at, w.actor, 1,
           NULL, (SELECT id FROM promo), w.op
    FROM w WHERE w.op > 0
), e AS (
    INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
    SELECT tx, account, -pts, at, actor FROM share
    UNION ALL SELECT tx, wallet_id, points, at, actor FROM w
), l AS (
    INSERT INTO lots (member_id, wallet_id, issuer_id, earn_tx_id, points, remaining, earned_at,
                      available_at, expires_at, actor)
    SELECT member, wallet_id, issuer, tx, pts, pts, at, available_at, expires_at, actor
    FROM share ORDER BY i, n
), bl AS (
    INSERT INTO earn_breakdowns (transaction_id, lines)
    SELECT tx, lines FROM w WHERE lines IS NOT NULL
), ob AS (
    INSERT INTO outbox_events (partner_id, member_id, type, data, created_at)
    SELECT w.partner, w.member, 'earn.recorded', """
    + EARN_DATA
    + """, w.at
    FROM w
    -- one probe per partner of the statement, not per earn (2 us of a chunk's earn; OFFSET 0
    -- keeps the probe above the DISTINCT)
    WHERE w.partner = ANY (ARRAY(SELECT d.partner FROM (SELECT DISTINCT partner FROM w OFFSET 0) d
                                 WHERE webhook_wanted(d.partner, 'earn.recorded')))
    ORDER BY w.i
)"""
)

# `moved`, for a follow-up that judges a member by what the statement's snapshot shows (read
# only when referenced): the members whose wallet another statement changed between this
# statement's snapshot and its lock (an earn of theirs committed meanwhile).
# 7. What the earns' follow-up (`ledger.earn.FollowUp`, at most one kind per batch) gives each.
_NO_FOLLOW_UP = "follow_up AS (SELECT CAST(NULL AS int) AS i, CAST(NULL AS text) AS value LIMIT 0)"
_RESULTS = "\nSELECT w.i, f.value FROM w LEFT JOIN follow_up f ON f.i = w.i\n"

_EARN_BATCH = f"{_EARN_BATCH_CTES},\n{_NO_FOLLOW_UP}{_RESULTS}"
_STATEMENTS: dict[str | None, str] = {None: _EARN_BATCH}


def _statement_for(follow_up_sql: str | None) -> str:
    """The batch statement for earns whose follow-up is `follow_up_sql` (None: none)."""
    found = _STATEMENTS.get(follow_up_sql)
    if found is None:
        found = _STATEMENTS[follow_up_sql] = f"{_EARN_BATCH_CTES},\n{follow_up_sql}{_RESULTS}"
    return found


@dataclass(slots=True)
class _Earn:
    """One caller's earn, validated, waiting for its batch."""

    request: EarnRequest
    space: str  # the key space (ledger.service: the partner's, for a partner's clients)
    digest: str
    at: datetime
    future: asyncio.Future[EarnResult]

    def checked(self) -> EarnRequest:
        """The same earn, as checked, for the single path (`ledger.service.earn`)."""
        return replace(self.request, key_space=self.space, digest=self.digest, at=self.at)


@dataclass
class BatchStats:
    """What the batcher has done (for /metrics, the benchmark and the tests)."""

    batches: int = 0
    batched_earns: int = 0
    single_path: int = 0  # earns sent to the single path (replays, errors, fallbacks)
    failed_batches: int = 0  # a statement error: written by nobody, retried alone
    refused_batches: int = 0  # a member of the batch owed points: retried alone
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)


class EarnBatcher:
    """Runs `ledger.service.earn` semantics with group commit over a psycopg pool."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        max_batch: int = 64,
        max_in_flight: int = 2,
        split_at: int = 32,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or split_at < 2:
            raise ValueError("max_batch and max_in_flight must be at least 1, split_at 2")
        self.pool = pool
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.split_at = split_at
        self._starting = 0  # batches started that have not taken their earns yet
        self.stats = BatchStats()
        self._pending: list[_Earn] = []
        self._in_flight = 0
        # The members with an earn in a running batch (`_take`).
        self._busy: set[uuid.UUID] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def earn(self, request: EarnRequest | None = None, /, **fields: Any) -> EarnResult:
        """`ledger.service.earn`, committed in a group: same request, results and errors."""
        if request is None:
            request = EarnRequest(**fields)
        at, digest = service.check_earn(request)
        pending = _Earn(
            request,
            request.key_space or request.actor,
            digest,
            at,
            asyncio.get_running_loop().create_future(),
        )
        self._pending.append(pending)
        self._kick()
        # Not shielded: a caller that goes away leaves its earn to the batch, which commits it
        # (as a single-path earn whose client disconnects mid-commit); a replay returns it.
        return await pending.future

    async def drain(self) -> None:
        """Wait until every batch started so far has finished (for shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the engine ------------------------------------------------------------------------------

    def _kick(self) -> None:
        while self._pending and self._in_flight < self.max_in_flight:
            self._in_flight += 1
            self._starting += 1
            task = asyncio.get_running_loop().create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        batch: list[_Earn] = []
        try:
            batch = self._take(self._share())
            if batch:
                await self._settle(batch)
        finally:
            self._in_flight -= 1
            self._busy.difference_update(r.request.member_id for r in batch)
            # A batch that took nothing (every waiting earn's member was busy) starts no other:
            # the running batch that holds them starts one when it ends.
            if batch:
                self._kick()

    def _share(self) -> int:
        """How many pending earns this starting batch takes: all of them (up to `max_batch`),
        unless there are at least `split_at` and other batches are starting too; then an equal
        share, so that large batches run side by side on separate connections (and CPUs)."""
        starting, self._starting = self._starting, self._starting - 1
        n = len(self._pending)
        if n < self.split_at or starting < 2:
            return self.max_batch
        share = -(-n // starting)
        return min(self.max_batch, max(share, self.split_at // 2))

    def _take(self, limit: int) -> list[_Earn]:
        """Up to `limit` pending earns, at most one per key and per (partner, order), of one
        follow-up statement, and none of a member with an earn in a running batch (its later
        earns wait too: a member's earns commit in arrival order)."""
        batch: list[_Earn] = []
        keys: set[tuple[str, str]] = set()
        orders: set[tuple[uuid.UUID, str]] = set()
        rest: list[_Earn] = []
        kind: str | None = None  # the batch's follow-up statement (one kind per batch)
        for r in self._pending:
            q = r.request
            order = (q.partner_id, q.ref) if q.ref is not None else None
            sql = None if q.follow_up is None else q.follow_up.sql
            if (
                len(batch) >= limit
                or q.member_id in self._busy
                or (r.space, q.idempotency_key) in keys
                or order in orders
                or (sql is not None and kind is not None and sql != kind)
            ):
                rest.append(r)
                continue
            kind = kind or sql
            batch.append(r)
            keys.add((r.space, q.idempotency_key))
            if order is not None:
                orders.add(order)
        self._pending = rest
        self._busy.update(r.request.member_id for r in batch)
        return batch

    async def _settle(self, batch: list[_Earn]) -> None:
        try:
            done, alone = await self._write(batch)
        except Exception as exc:
            done, alone = [], batch
            if isinstance(exc, psycopg.Error) and exc.sqlstate == REFUSED:
                self.stats.refused_batches += 1  # ledger_refuse(): a member owes points
            else:
                log.warning(
                    "an earn batch of %d failed; retrying each earn alone",
                    len(batch),
                    exc_info=True,
                )
                self.stats.failed_batches += 1
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
            # A member's earns run one after another, in arrival order (debt is repaid by the
            # first); different members' run side by side.
            by_member: dict[uuid.UUID, list[_Earn]] = {}
            for r in alone:
                by_member.setdefault(r.request.member_id, []).append(r)
            await asyncio.gather(*(self._alone_in_order(rs) for rs in by_member.values()))

    async def _alone_in_order(self, requests: list[_Earn]) -> None:
        for r in requests:
            await self._alone(r)

    async def _alone(self, request: _Earn) -> None:
        try:
            async with driver_unit_of_work(self.pool) as conn:
                # DriverConnection speaks the `execute(text, params)` the service uses.
                result = await service.earn(cast(AsyncConnection, conn), request.checked())
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
        """One statement, committed on its own, for the batch: returns the earns it committed and
        those to run alone."""
        async with self.pool.connection() as conn:
            if not conn.autocommit:  # the statement is its own transaction: no BEGIN, no COMMIT
                await conn.set_autocommit(True)
            return await _statement(conn, batch)


@dataclass(slots=True)
class PreparedEarns:
    """A batch's statement made ready (`prepare_earns`): its earns, each one's transaction id
    and dates (`result`: what it gets back if written), the statement and its one parameter."""

    batch: list[_Earn]
    txs: list[uuid.UUID]
    dated: list[tuple[datetime, datetime]]  # per earn: available_at, expires_at
    sql: str
    params: dict[str, Any]

    def result(self, i: int, follow_up: str | None = None) -> EarnResult:
        """The result of the batch's `i`-th earn once written, with what its follow-up gave
        (built when asked: a batch file's chunk asks for the few that need one)."""
        r, (available_at, expires_at) = self.batch[i], self.dated[i]
        q = r.request
        return EarnResult(
            transaction_id=self.txs[i],
            points=q.points,
            status="pending" if available_at > r.at else "available",
            available_at=available_at,
            expires_at=expires_at,
            lines=q.lines,
            follow_up=follow_up,
        )


async def prepare_earns(
    requests: list[EarnRequest], checked: list[tuple[datetime, str]] | None = None
) -> PreparedEarns:
    """The group commit's statement for `requests` (at most one per key and per order), made
    ready without the database: a batch file prepares its next chunk while the current one's
    statement runs (`loyalty.imports`), giving the event loop a turn every `STEP` earns (a
    chunk's 10,000 took 50 ms of it at once: the other lanes' statements waited to be sent).
    LedgerValidation as `check_earn`; `checked`: what `check_earn` returned for each request,
    when the caller has checked them already."""
    unused: asyncio.Future[EarnResult] = asyncio.get_running_loop().create_future()
    batch = []
    for i, q in enumerate(requests):  # nobody awaits these earns (results are returned)
        at, digest = service.check_earn(q) if checked is None else checked[i]
        batch.append(_Earn(q, q.key_space or q.actor, digest, at, unused))
    out: list[PreparedEarns] = []
    for _ in _preparing(batch, out):
        await asyncio.sleep(0)
    return out[0]


async def write_prepared(
    conn: psycopg.AsyncConnection[Any], prepared: PreparedEarns
) -> list[EarnResult | None]:
    """The prepared statement on the caller's connection and in its transaction: each earn's
    result, or None for those it left to the single path (`ledger.service.earn`). Raises as
    the statement does (a member who owes points: `REFUSED`)."""
    written = await write_prepared_rows(conn, prepared)
    return [
        prepared.result(i, written[i]) if i in written else None for i in range(len(prepared.batch))
    ]


async def write_prepared_rows(
    conn: psycopg.AsyncConnection[Any], prepared: PreparedEarns
) -> dict[int, str | None]:
    """`write_prepared`, answered as the statement answers: the index of each earn it wrote
    (the others are left to the single path), with what its follow-up gave
    (`PreparedEarns.result` makes its result)."""
    async with conn.cursor() as cur:
        await cur.execute(prepared.sql, prepared.params)
        return {row[0]: row[1] for row in await cur.fetchall()}


async def write_earns(
    conn: psycopg.AsyncConnection[Any], requests: list[EarnRequest]
) -> list[EarnResult | None]:
    """`prepare_earns` then `write_prepared`."""
    return await write_prepared(conn, await prepare_earns(requests))


def _lines(lines: tuple[BreakdownLine, ...]) -> list[tuple[Any, ...]]:
    """An earn's breakdown to store, as `ledger.earn.lines_json` gives it (orjson writes the
    offer ids itself): one array per line (source, points, offer id, funder), in order (an
    earn of its BASE line alone stores none: `_prepare`). The statement stores it as it comes."""
    return [(line.source, line.points, line.offer_id, line.funded_by) for line in lines]


async def _statement(
    conn: psycopg.AsyncConnection[Any], batch: list[_Earn]
) -> tuple[list[tuple[_Earn, EarnResult]], list[_Earn]]:
    """The batch statement (`_statement_for` its follow-up) for the batch on `conn`: the earns
    it wrote and those to run alone."""
    return await _execute(conn, _prepare(batch))


def _prepare(batch: list[_Earn]) -> PreparedEarns:
    """The batch's transaction ids and dates, its statement and its parameter."""
    out: list[PreparedEarns] = []
    for _ in _preparing(batch, out):
        pass
    return out[0]


def _preparing(batch: list[_Earn], out: list[PreparedEarns]) -> Iterator[None]:
    """`_prepare` into `out`, pausing (a bare `yield`) after every `STEP` earns."""
    txs = uuid7s(len(batch))
    # The dates of earns made at one instant under one rule are the same: computed once (a
    # batch file's chunk shares its instant), one tuple shared by those earns.
    dates: dict[tuple[datetime, int, int], tuple[datetime, datetime]] = {}
    dated = []
    for n, r in enumerate(batch, 1):
        if not n % STEP:
            yield
        q = r.request
        when = (r.at, q.hold_days, q.validity_months)
        found = dates.get(when)
        if found is None:
            found = dates[when] = (
                r.at + timedelta(days=q.hold_days),
                service.add_months(r.at, q.validity_months),
            )
        dated.append(found)
    # The batch travels as JSON (one document of rows, one of the values most of its rows
    # share: psycopg's per-element array dumping cost more client CPU than everything else in
    # the batch together). orjson writes the uuids and datetimes itself (RFC 3339, offset kept).
    # A row carries only what it does not share with the first earn (`common`: the key space,
    # actor, partner and dates, which a batch file's chunk shares) and leaves out what is
    # empty: the database parses each value of each row (the dates most dearly), and that
    # parse was the largest single cost of a chunk's statement (`bench.import_statement`).
    # The result a replay gets back is built by the statement from the same values.
    if not batch:
        out.append(
            PreparedEarns(
                batch, txs, dated, _EARN_BATCH, {"rows": "[]", "common": "{}", "iso": _ISO}
            )
        )
        return
    first = batch[0]
    space, actor, partner, at = first.space, first.request.actor, first.request.partner_id, first.at
    shared = dated[0]
    available_at, expires_at = shared
    common = {
        "space": space,
        "actor": actor,
        "partner": partner,
        "at": at,
        "available_at": available_at,
        "expires_at": expires_at,
    }
    rows = []
    for i, (r, tx, x) in enumerate(zip(batch, txs, dated, strict=True)):
        if i and not i % STEP:
            yield
        q = r.request
        row = {
            "i": i,
            "key": q.idempotency_key,
            "hash": r.digest,
            "member": q.member_id,
            "ref": q.ref,
            "tx": tx,
            "points": q.points,
            "amount": None if q.amount is None else str(q.amount),
            "currency": q.currency,
            "category": q.category,
        }
        if r.space != space:
            row["space"] = r.space
        if q.actor != actor:
            row["actor"] = q.actor
        if q.partner_id != partner:
            row["partner"] = q.partner_id
        if r.at != at:
            row["at"] = r.at
        if x is not shared and x != shared:
            row["available_at"], row["expires_at"] = x
        if q.lines:
            op = service.operator_points(q.lines)
            if op:
                row["op"] = op
            if len(q.lines) > 1:  # more than its BASE line: stored (`earn_breakdowns`)
                row["lines"] = _lines(q.lines)
        if q.follow_up is not None:
            row["after"] = q.follow_up.params
        rows.append(row)
    kinds = {r.request.follow_up.sql for r in batch if r.request.follow_up is not None}
    out.append(
        PreparedEarns(
            batch,
            txs,
            dated,
            _statement_for(kinds.pop() if kinds else None),
            {
                "rows": orjson.dumps(rows).decode(),
                "common": orjson.dumps(common).decode(),
                "iso": _ISO,
            },
        )
    )


async def _execute(
    conn: psycopg.AsyncConnection[Any], prepared: PreparedEarns
) -> tuple[list[tuple[_Earn, EarnResult]], list[_Earn]]:
    """Run a prepared batch statement: the earns it wrote and those to run alone."""
    batch = prepared.batch
    written = await write_prepared_rows(conn, prepared)
    done = [(r, prepared.result(i, written[i])) for i, r in enumerate(batch) if i in written]
    alone = [r for i, r in enumerate(batch) if i not in written]
    return done, alone
