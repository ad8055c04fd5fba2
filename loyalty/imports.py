"""Batch files: a partner's day of purchases (and refunds) in one file, applied in the
background (`POST /imports`, `coalition import FILE --partner ID`).

Each line is the same use case as its GraphQL mutation, with its own idempotency key: `earn`
lines run `loyalty.earn.earn`'s rules, `refund` lines `loyalty.refund.refund`. A re-upload
applies nothing twice (its lines are replays); a bad line is rejected with its line number and
a typed code, the others apply.

Speed: a chunk of lines (CHUNK) is prepared set-based (`_plan`): parsed, checked and priced in
one pass over the earn use case's pure rules (`loyalty.earn.parse_purchase`, `EarnTerms`,
`price`: the same functions GraphQL's earn runs), the partner's terms read once, the cards
looked up in ONE query. Its earns then go into ONE set-based statement, the group commit's own
(`ledger.batch.write_earns`, the same ledger rules); what it leaves (replays, conflicts,
duplicate keys or orders, a member who owes points) runs on the single path, each in a
savepoint, in line order. That statement, the single-path writes, the import's progress and its
rejected lines commit in one transaction per chunk: an import stopped anywhere (a restart)
resumes at the first line of the chunk that did not commit, and never applies a line twice.
The steps after an earn's commit (a referral bonus, the card cache told of a tier upgrade) run
after the chunk's commit.

Lanes: an import of LANES_FROM lines or more is split by member into IMPORT_LANES lanes
(`split_lanes`: a member's lines, their cards' and their orders' refunds, in one lane, in
line order; every key and order in one lane), applied side by side, each on its own connection
with its own chunks and its own position (`imports.lanes`), so that several backends write at
once and no two lanes touch one wallet, key or order. A file whose key or order serves two
members runs in one lane. The split is stored when the import starts (`imports.lane_map`, one
byte per line): a restart deals the lines from it, whatever the cards' holders have become
meanwhile, and resumes each lane where it committed last. One lane failing stops the others.

The slower path: earns that need the member's offer state (activation, use counts), that the
partner's terms refuse (a replay may still answer) or that earn no points, and refund lines,
run their use case each in its own unit of work as over GraphQL, before the chunk's statement
(a member's in line order). A restart between that commit and the chunk's makes them count as
replayed, never applied twice. Such a line that shares a key or an order with an earlier line
of the statement starts the next chunk instead, so that every key and order is used in line
order. Every earn of a chunk is priced at the tier its member held before the chunk (as
concurrent GraphQL earns are), and a member who owes points has it repaid by its earns in line
order, the slow ones first.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import heapq
import logging
import time
import uuid
import zlib
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
import psycopg

from core.clock import utcnow
from core.db import DriverConnection
from core.errors import DomainError, ErrorCode, NotFoundError, ValidationError
from ledger import batch as ledger_batch
from ledger import reads as ledger_reads
from ledger import service as ledger
from ledger.service import EarnRequest, EarnResult
from loyalty import earn as earning
from loyalty import refund as refunding
from loyalty.runtime import Runtime
from members.errors import MemberNotFound
from members.service import CardHolder
from partners import imports as store
from partners.imports import ImportRecord, LineError

log = logging.getLogger(__name__)

HEADER = ("kind", "order_ref", "card_number", "amount", "currency", "category", "idempotency_key")
# A line's fields by position (`_cells`), in HEADER's order
KIND, ORDER_REF, CARD_NUMBER, AMOUNT, CURRENCY, CATEGORY, IDEMPOTENCY_KEY = range(len(HEADER))
MAX_BYTES = 50 * 1024 * 1024
MAX_LINES = 1_000_000
MAX_LINE_BYTES = 4096
CHUNK = 10_000
CHUNK_WORK_MEM = "SET LOCAL work_mem = '32MB'"  # for a chunk's transaction (`_commit_chunk`)
# A lane's first chunk is CHUNK / RAMP lines, each next one twice as many, up to CHUNK; its last
# ones half of what it has left, down to CHUNK / RAMP (`_run_lane`).
RAMP = 8
LANES_FROM = 2 * CHUNK  # an import of fewer lines runs in one lane
YOUNG_EVERY = 5.0  # seconds between collections of the young generations while imports run
# Lines a chunk's plan parses, prices or prepares between turns of the event loop: planning a
# chunk takes 0.3 s of CPU, and the other lanes' statements (and the requests the process
# serves) would otherwise wait that long to be sent.
STEP = ledger_batch.STEP
SLOW_CONCURRENCY = 8  # slow lines of different members run side by side, at most this many
FORMATS = {"text/csv": "csv", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl"}
ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})


class ImportNotFound(NotFoundError):
    """No such import of this partner."""


# -- the file ----------------------------------------------------------------------------------


def data_lines(body: bytes, fmt: str) -> list[tuple[int, bytes]]:
    """The file's data lines with their line numbers (the header is line 1 of a CSV); blank
    lines are skipped. ValidationError for a file that is not one (header, size, count)."""
    if len(body) > MAX_BYTES:
        raise ValidationError(f"a file is at most {MAX_BYTES:,} bytes", field="file")
    raw = body.split(b"\n")
    start = 0
    if fmt == "csv":
        first = raw[0].removeprefix(b"\xef\xbb\xbf").rstrip(b"\r") if raw else b""
        if tuple(c.strip() for c in first.decode("utf-8", "replace").split(",")) != HEADER:
            raise ValidationError(
                "the first line must be the header " + ",".join(HEADER), field="file", line=1
            )
        start = 1
    out = [(n + 1, line) for n, line in enumerate(raw[start:], start) if line.strip()]
    if len(out) > MAX_LINES:
        raise ValidationError(f"a file has at most {MAX_LINES:,} lines", field="file")
    return out


def parse_line(raw: bytes, fmt: str) -> dict[str, str]:
    """One data line's fields by HEADER name; ValidationError when malformed."""
    return dict(zip(HEADER, _cells(raw, fmt), strict=True))


def _cells(raw: bytes, fmt: str) -> list[str]:
    """One data line's fields in HEADER's order (KIND, ORDER_REF, ...): `parse_line` without
    the names (a batch file's chunk reads 10,000 lines)."""
    if len(raw) > MAX_LINE_BYTES:
        raise ValidationError(f"a line is at most {MAX_LINE_BYTES} bytes")
    if b"\x00" in raw:
        raise ValidationError("the line contains a NUL byte")
    try:
        line = raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise ValidationError("the line is not UTF-8") from None
    if fmt == "jsonl":
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ValidationError("the line is not a JSON object") from None
        if not isinstance(obj, dict) or set(obj) - set(HEADER):
            raise ValidationError("the line must be a JSON object with the header's keys")
        values = [obj.get(k) for k in HEADER]
        if any(v is not None and not isinstance(v, str) for v in values):
            raise ValidationError("every value must be a string")
        return [v or "" for v in values]
    cells = line.split(",") if '"' not in line else next(csv.reader([line]), [])
    if len(cells) != len(HEADER):
        raise ValidationError(f"the line must have {len(HEADER)} fields")
    return cells


# -- the use cases -----------------------------------------------------------------------------


async def submit(
    rt: Runtime, *, partner_id: uuid.UUID, actor: str, body: bytes, content_type: str
) -> ImportRecord:
    """Store a partner's file, queued for the background importer."""
    fmt = FORMATS.get(content_type.split(";")[0].strip().lower())
    if fmt is None:
        raise ValidationError(
            "the file must be text/csv or application/x-ndjson", field="Content-Type"
        )
    lines = len(await asyncio.to_thread(data_lines, body, fmt))
    async with rt.engine.begin() as conn:
        return await store.create(
            conn, partner_id=partner_id, actor=actor, fmt=fmt, body=body, lines=lines
        )


async def status(
    rt: Runtime, *, partner_id: uuid.UUID | None, import_id: str
) -> tuple[ImportRecord, list[LineError]]:
    """An import's progress and its rejected lines (a partner's own)."""
    try:
        iid = uuid.UUID(import_id)
    except ValueError:
        raise ValidationError("not an import id", field="id") from None
    async with rt.engine.connect() as conn:
        record = await store.get(conn, import_id=iid, partner_id=partner_id)
        if record is None:
            raise ImportNotFound("no such import")
        return record, await store.errors(conn, import_id=iid)


# -- applying a file ---------------------------------------------------------------------------


class _Lost(Exception):
    """Another worker recorded this chunk first."""


@dataclass
class _Outcomes:
    applied: int = 0
    replayed: int = 0
    rejected: list[LineError] = field(default_factory=list)

    def add(self, line: int, result: Any) -> None:
        if isinstance(result, DomainError):
            self.rejected.append(LineError(line, str(result.code), result.message[:500]))
        elif getattr(result, "replayed", False):
            self.replayed += 1
        else:
            self.applied += 1


@dataclass(slots=True)
class _Earn:
    """An earn line priced for the chunk's statement."""

    line: int
    request: EarnRequest
    purchase: earning.Purchase
    holder: CardHolder
    checked: tuple[datetime, str]  # what `ledger.check_earn` returned (`prepare_earns`)


# A line for the slower path: its use case (or the rest of it, once priced), in its own unit of
# work as over GraphQL, before the chunk's statement.
_Slow = Callable[[], Awaitable[Any]]


@dataclass(slots=True)
class _SlowLine:
    line: int
    run: _Slow
    member: uuid.UUID | None  # the card's holder when known: a member's lines run in order
    marks: tuple[str, ...]  # its key and order: two slow lines sharing one run in line order


@dataclass
class _Plan:
    """A chunk's lines, sorted: those the set-based statement takes (`earns`), those that run
    alone first (`slow`, in line order), and those refused at once (`outcomes`). `end`: the
    lines planned (fewer than the chunk when a slow line needs an earlier line committed)."""

    end: int
    tiered: bool = False  # a tier ladder is in force: its earns were priced at the members' tiers
    first: list[_Earn] = field(default_factory=list)  # the statement's (`prepared`)
    rest: list[_Earn] = field(default_factory=list)  # a key's or order's later lines
    prepared: ledger_batch.PreparedEarns | None = None
    slow: list[_SlowLine] = field(default_factory=list)
    outcomes: _Outcomes = field(default_factory=_Outcomes)


async def _parse(
    part: list[tuple[int, bytes]], fmt: str, outcomes: _Outcomes
) -> list[tuple[int, list[str], earning.Purchase | None]]:
    """The chunk's lines that parse: (index, fields (`_cells`), the earn's purchase or None for
    a refund); the others are rejected into `outcomes`."""
    parsed: list[tuple[int, list[str], earning.Purchase | None]] = []
    for index, (line, raw) in enumerate(part):
        if index and not index % STEP:
            await asyncio.sleep(0)
        try:
            f = _cells(raw, fmt)
            kind = f[KIND].strip()
            if kind == "refund":
                parsed.append((index, f, None))
                continue
            if kind != "earn":
                raise ValidationError("kind must be earn or refund", field="kind")
            purchase = earning.parse_purchase(
                f[CARD_NUMBER], f[AMOUNT], f[CURRENCY], f[CATEGORY] or None, f[ORDER_REF]
            )
        except DomainError as exc:
            outcomes.add(line, exc)
            continue
        parsed.append((index, f, purchase))
    return parsed


async def _plan(rt: Runtime, record: ImportRecord, part: list[tuple[int, bytes]]) -> _Plan:
    """Parse, check and price a chunk's lines in one pass over the earn use case's pure rules
    (`loyalty.earn.parse_purchase`, `EarnTerms`, `price`), the partner's terms read once and the
    cards looked up in one query. Earns priced without the member's state go to the statement;
    earns that need it (offers requiring activation or counting uses), that the terms refuse
    (a replay may still answer), that earn no points, and refunds run their use case alone,
    before the statement: one that shares a key or an order with an earlier line of the
    statement ends the chunk (it starts the next one, after that line's commit)."""
    plan = _Plan(end=len(part))
    key_space = ledger.partner_key_space(record.partner_id)
    parsed = await _parse(part, record.format, plan.outcomes)
    terms = await earning.earn_terms(rt, record.partner_id)
    at = utcnow()
    refused = terms.refusal(at)
    plan.tiered = bool(terms.ladder.tiers)
    holders = (
        await rt.caches.member_by_card.holders(
            rt.pool,
            [p.card_number for _, _, p in parsed if p is not None],
            fresh_tier=bool(terms.ladder.tiers),
        )
        if refused is None
        else {}
    )
    # The statement's earns' keys and orders so far (a refund's key is of another operation:
    # it shares only its order with them)
    keys: set[str] = set()
    orders: set[str] = set()
    for n, (index, f, purchase) in enumerate(parsed, 1):
        if not n % STEP:
            await asyncio.sleep(0)
        line, key = part[index][0], f[IDEMPOTENCY_KEY]
        holder = None
        if purchase is None:
            order = f[ORDER_REF].strip()
            slow, marks, shares = _refund(rt, record, f), ("r" + key, "o" + order), order in orders
        else:
            try:
                terms.check_currency(purchase)
            except DomainError as exc:
                plan.outcomes.add(line, exc)
                continue
            order = purchase.order_ref
            if refused is not None:
                slow = _earn(rt, record, f)
            else:
                holder = holders.get(purchase.card_number)
                if holder is None:
                    plan.outcomes.add(line, MemberNotFound("no member has this card number"))
                    continue
                priced = earning.price(
                    terms,
                    purchase,
                    holder,
                    at=at,
                    actor=record.actor,
                    key_space=key_space,
                    idempotency_key=key,
                )
                if priced.request is not None:
                    try:  # the ledger's own checks (a key too long), line by line
                        checked = ledger.check_earn(priced.request)
                    except DomainError as exc:
                        plan.outcomes.add(line, exc)
                        continue
                    # The first earn of each key and order goes into the statement, a later one
                    # (or one sharing either with it) to the single path after it, in line order.
                    earn = _Earn(line, priced.request, purchase, holder, checked)
                    (plan.rest if key in keys or order in orders else plan.first).append(earn)
                    keys.add(key)
                    orders.add(order)
                    continue
                slow = _priced(rt, priced, purchase, holder, key_space, key)
            marks, shares = ("k" + key, "o" + order), key in keys or order in orders
        if shares:
            plan.end = index
            break
        plan.slow.append(_SlowLine(line, slow, None if holder is None else holder.member_id, marks))
    if plan.end < len(part):  # the lines from `end` on are the next chunk's
        plan.outcomes.rejected = [e for e in plan.outcomes.rejected if e.line < part[plan.end][0]]
    plan.prepared = await ledger_batch.prepare_earns(  # the statement, for its `first` earns
        [e.request for e in plan.first], [e.checked for e in plan.first]
    )
    return plan


async def _plan_in_turn(
    rt: Runtime, record: ImportRecord, part: list[tuple[int, bytes]], turns: asyncio.Lock
) -> _Plan:
    """`_plan` once the plans asked for before it are done (`turns`: the lanes' plans one at a
    time, first asked first planned, `_run_lane`)."""
    async with turns:
        return await _plan(rt, record, part)


def _refund(rt: Runtime, record: ImportRecord, f: list[str]) -> _Slow:
    return lambda: refunding.refund(
        rt,
        actor=record.actor,
        partner_id=record.partner_id,
        order_ref=f[ORDER_REF],
        amount=f[AMOUNT],
        currency=f[CURRENCY],
        idempotency_key=f[IDEMPOTENCY_KEY],
    )


def _earn(rt: Runtime, record: ImportRecord, f: list[str]) -> _Slow:
    """The whole earn use case (the terms refuse every earn: a replay may still answer)."""
    return lambda: earning.earn(
        rt,
        actor=record.actor,
        key_space=ledger.partner_key_space(record.partner_id),
        partner_id=record.partner_id,
        card_number=f[CARD_NUMBER],
        amount=f[AMOUNT],
        currency=f[CURRENCY],
        category=f[CATEGORY] or None,
        order_ref=f[ORDER_REF],
        idempotency_key=f[IDEMPOTENCY_KEY],
    )


def _priced(
    rt: Runtime,
    priced: earning.PricedEarn,
    purchase: earning.Purchase,
    holder: CardHolder,
    key_space: str,
    key: str,
) -> _Slow:
    """The rest of the earn use case for a priced line (`loyalty.earn.earn_priced`)."""
    return lambda: earning.earn_priced(rt, priced, purchase, holder, key_space, key)


async def _run_slow(plan: _Plan) -> None:
    """The chunk's slow lines, each in its own unit of work: a member's in line order,
    different members' side by side (at most `SLOW_CONCURRENCY` at once); all in line order,
    one after another, when two of them share a key or an order."""
    if not plan.slow:
        return
    marks = [m for s in plan.slow for m in s.marks]
    groups: dict[Any, list[_SlowLine]] = {}
    for s in plan.slow:
        group = None if len(set(marks)) < len(marks) else (s.member or s.line)
        groups.setdefault(group, []).append(s)
    gate = asyncio.Semaphore(SLOW_CONCURRENCY)

    async def in_order(items: list[_SlowLine]) -> None:
        async with gate:
            for s in items:
                try:
                    plan.outcomes.add(s.line, await s.run())
                except DomainError as exc:
                    plan.outcomes.add(s.line, exc)

    await asyncio.gather(*(in_order(items) for items in groups.values()))


async def _write_chunk(
    conn: psycopg.AsyncConnection[Any], plan: _Plan
) -> tuple[list[tuple[_Earn, EarnResult]], int]:
    """The chunk's earns: one statement (`ledger.batch`, prepared), the rest on the single
    path, each in a savepoint, in line order. Returns the earns written or replayed that have
    steps after their commit (`loyalty.earn.after_commit_steps`: a referral bonus, a tier
    upgrade), with their results (the statement's made for them alone), and the points the
    chunk issued."""
    outcomes, rest = plan.outcomes, list(plan.rest)
    after: list[tuple[_Earn, EarnResult]] = []
    issued = 0
    written: dict[int, str | None] = {}
    prepared = plan.prepared
    if prepared is not None and plan.first:
        try:
            async with conn.transaction():  # a savepoint: a refused statement writes nothing
                written = await ledger_batch.write_prepared_rows(conn, prepared)
        except psycopg.Error as exc:
            if exc.sqlstate != ledger_batch.REFUSED:
                raise
            # a member owes points: the single path repays it
    for i, e in enumerate(plan.first):
        if i not in written:
            rest.append(e)
            continue
        issued += e.request.points
        follow_up = written[i]
        if follow_up is not None or e.holder.referral_pending:
            assert prepared is not None
            after.append((e, prepared.result(i, follow_up)))
    outcomes.applied += len(written)  # the statement writes new earns only: no replay
    rest.sort(key=lambda e: e.line)  # a key's or order's first line first
    driver = cast(Any, DriverConnection(conn))
    for e in rest:
        try:
            async with conn.transaction():
                single = await ledger.earn(driver, e.request)
        except DomainError as exc:
            outcomes.add(e.line, exc)
        else:
            outcomes.add(e.line, single)
            if not single.replayed:
                issued += single.points
            if single.follow_up is not None or e.holder.referral_pending:
                after.append((e, single))
    return after, issued


async def run(
    rt: Runtime,
    import_id: uuid.UUID,
    *,
    chunk_size: int = CHUNK,
    lanes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    before_commit: Callable[[int], Awaitable[None]] | None = None,
) -> ImportRecord | None:
    """Apply an import's remaining lines, chunk by chunk; None when another worker holds it.
    `lanes`: how many lanes a starting import gets (default: IMPORT_LANES for an import of
    LANES_FROM lines or more, else one). `before_commit(position)` runs inside each chunk's
    transaction, `position` its lane's (tests: a crash there)."""
    async with rt.pool.connection() as conn:
        if not conn.autocommit:
            await conn.set_autocommit(True)
        lock = "import:" + str(import_id)
        got = await (
            await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [lock])
        ).fetchone()
        if not got or not got[0]:
            return None
        try:
            return await _run_locked(
                rt, conn, import_id, chunk_size, lanes, progress, before_commit
            )
        finally:
            if not conn.closed:
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [lock])


def lane_of(value: str | bytes, lanes: int) -> int:
    """The lane of a member's id (its bytes), a card or an order among `lanes`: stable across
    processes and restarts (not Python's salted `hash`)."""
    return zlib.crc32(value.encode() if isinstance(value, str) else value) % lanes


def _lane_fields(raw: bytes, fmt: str) -> tuple[str, str, str, str] | None:
    """What places a line in a lane: its kind, card, order (stripped) and key, as `_plan`
    reads them (`parse_line`; a plain CSV line split directly); None for a line that does not
    parse (rejected wherever it runs)."""
    if fmt == "csv" and b'"' not in raw:
        cells = raw.decode("utf-8", "replace").rstrip("\r").split(",")
        if len(cells) != len(HEADER):
            return None
        return cells[0].strip(), cells[2], cells[1].strip(), cells[6]
    try:
        f = _cells(raw, fmt)
    except ValidationError:
        return None
    return f[KIND].strip(), f[CARD_NUMBER], f[ORDER_REF].strip(), f[IDEMPOTENCY_KEY]


async def split_lanes(
    rt: Runtime,
    record: ImportRecord,
    lines: list[tuple[int, bytes]],
    n: int,
    *,
    check: bool = True,
    balanced: bool = True,
) -> list[list[tuple[int, bytes]]] | None:
    """The file's lines in `n` lanes (`lane_map`, dealt by `deal`)."""
    if n <= 1:
        return [lines]
    lanes = await lane_map(rt, record, lines, n, check=check, balanced=balanced)
    return None if lanes is None else deal(lines, lanes, n)


def _balanced(sizes: list[int], n: int) -> list[int]:
    """A lane for each unit of `sizes` lines among `n`, the lanes' line counts as even as whole
    units allow: the largest unit first, each to the lane with the fewest lines so far (ties:
    the unit met first, the lowest lane), so that the lanes end together."""
    lanes = [0] * len(sizes)
    loads = [(0, k) for k in range(n)]
    for u in sorted(range(len(sizes)), key=lambda u: -sizes[u]):
        load, k = heapq.heappop(loads)
        lanes[u] = k
        heapq.heappush(loads, (load + sizes[u], k))
    return lanes


def deal(lines: list[tuple[int, bytes]], lanes: bytes, n: int) -> list[list[tuple[int, bytes]]]:
    """The file's lines in `n` lanes by their `lane_map`, each lane in line order."""
    if len(lanes) != len(lines):
        raise ValueError("the lane map does not fit the file")
    out: list[list[tuple[int, bytes]]] = [[] for _ in range(n)]
    for line, lane in zip(lines, lanes, strict=True):
        out[lane].append(line)
    return out


async def lane_map(
    rt: Runtime,
    record: ImportRecord,
    lines: list[tuple[int, bytes]],
    n: int,
    *,
    check: bool = True,
    balanced: bool = True,
) -> bytes | None:
    """Each of the file's lines' lane among `n` (one byte per line), for lanes each in line
    order: a member's lines (their cards', and refunds of their orders) in one lane, every
    idempotency key and order in one lane, so that lanes applied side by side touch no common
    wallet, key or order and each member's lines still run in line order. A line's unit is
    its member, or, for a line without a known member (an unknown card, a refund of an order
    nobody earned, a bad line), its card or order: what the cards' holders are now, which is
    why the map is stored when an import starts (`_run_locked`). `balanced`: the units dealt
    so that the lanes have as many lines as whole units allow (`_balanced`: hashed, the lanes
    of a large file differed by 3-5 %, and the import ended with one lane running alone);
    else each unit's lane is its hash (`lane_of`), as imports started before maps were stored
    were split. `check`: None when some key or order is shared by lines of different lanes
    (the import then runs in one lane); an import started before maps were stored was checked
    when it started.

    One pass over the lines (`_lane_fields`), keeping per line its place
    (the earn's card or the refund's order, as an index into the file's distinct ones) and
    each order's and key's first line, by the value's salted `hash` (a collision only ever
    keeps a file in one lane); then the cards' members in one query and each place's unit and
    lane once; each line's lane from its place's, and only the lines that share an order or a
    key with an earlier one checked against it."""
    if not 1 <= n <= 256:
        raise ValueError("a lane map holds 1 to 256 lanes")
    fmt = record.format
    places: dict[str | tuple[str], int] = {}  # an earn's card, a refund's (order,) -> its index
    placed = array("q")  # per line: its index in `places`, -1 for a line that does not parse
    # Per line: its order's and its key's hash (a refund's key as ("r", key): apart from an
    # earn's), never 0; 0 for a bad line, rejected wherever it runs, which shares nothing
    orders, keys = array("q"), array("q")
    refunded: set[str] = set()
    # (the loop's methods bound once: 200,000 lines)
    place, to_place, to_orders, to_keys = (
        places.setdefault,
        placed.append,
        orders.append,
        keys.append,
    )
    for index, (_, raw) in enumerate(lines):
        if index and not index % (20 * STEP):
            await asyncio.sleep(0)
        x = _lane_fields(raw, fmt)
        if x is None:
            to_place(-1)
            to_orders(0)
            to_keys(0)
            continue
        kind, card, order, key = x
        to_orders(hash(order) or 1)
        if kind == "earn":
            to_place(place(card, len(places)))
            to_keys(hash(key) or 1)
        else:
            refunded.add(order)
            to_place(place((order,), len(places)))
            to_keys(hash(("r", key)) or 1)
    holders = await rt.caches.member_by_card.holders(
        rt.pool, [p for p in places if isinstance(p, str)]
    )
    member_of_order: dict[str, uuid.UUID] = {}
    for _, raw in lines if refunded else ():
        x = _lane_fields(raw, fmt)
        if x is not None and x[0] == "earn" and x[2] in refunded and x[1] in holders:
            member_of_order.setdefault(x[2], holders[x[1]].member_id)
    unknown = refunded - set(member_of_order)
    if unknown:
        async with rt.engine.connect() as conn:
            member_of_order.update(
                await ledger_reads.order_members(
                    conn, partner_id=record.partner_id, order_refs=sorted(unknown)
                )
            )
    # Each place's unit (what keeps its lines in one lane): its member, else itself; an unknown
    # card's earn line's depends on its order too (-1: placed line by line).
    units: dict[bytes | str, int] = {}  # a member's id (bytes), a card, an order, a bad line
    unit_of_place: list[int] = []
    for p in places:
        if isinstance(p, str):
            holder = holders.get(p)
            member = None if holder is None else holder.member_id
            unplaced = member is None and bool(refunded)
            value = p
        else:
            member, unplaced, value = member_of_order.get(p[0]), False, p[0]
        unit = member.bytes if member is not None else value
        unit_of_place.append(-1 if unplaced else units.setdefault(unit, len(units)))
    # The lines placed one by one: a bad line, by itself; an unknown card's, by its order's
    # member if a refund placed one (units numbered as met, in line order)
    own: dict[int, int] = {}
    if -1 in placed or -1 in unit_of_place:
        for index, at in enumerate(placed):
            if at >= 0 and unit_of_place[at] >= 0:
                continue
            if at < 0:
                own[index] = units.setdefault(lines[index][1], len(units))
                continue
            x = cast(tuple[str, str, str, str], _lane_fields(lines[index][1], fmt))
            member = member_of_order.get(x[2])
            own[index] = units.setdefault(member.bytes if member is not None else x[1], len(units))
    if balanced:
        sizes = [0] * len(units)
        for at, count in Counter(placed).items():
            if at >= 0 and unit_of_place[at] >= 0:
                sizes[unit_of_place[at]] += count
        for u in own.values():
            sizes[u] += 1
        lane_of_unit = _balanced(sizes, n)
    else:
        lane_of_unit = [lane_of(unit, n) for unit in units]
    lane_of_place = [lane_of_unit[u] if u >= 0 else 0 for u in unit_of_place] or [0]
    out = bytearray(map(lane_of_place.__getitem__, placed))  # -1 (a bad line): set below
    for index, u in own.items():
        out[index] = lane_of_unit[u]
    if check and not _apart(out, orders, keys):
        return None
    return bytes(out)


def _apart(out: bytearray, *hashes: array[int]) -> bool:
    """Whether each value hashed (`lane_map`: per line, its order's or its key's hash, 0 for a
    bad line) is in one lane of `out`. Most files repeat none: a set says so at C speed; a
    file that does is checked line by line, each repeat against the first line's lane."""
    for h in hashes:
        if len(set(h)) == len(h):
            continue
        owner: dict[int, int] = {}
        for value, lane in zip(h, out, strict=True):
            if value and owner.setdefault(value, lane) != lane:
                return False
    return True


async def _run_locked(
    rt: Runtime,
    conn: psycopg.AsyncConnection[Any],
    import_id: uuid.UUID,
    chunk_size: int,
    lanes: int | None,
    progress: Callable[[int, int], None] | None,
    before_commit: Callable[[int], Awaitable[None]] | None,
) -> ImportRecord | None:
    driver = cast(Any, DriverConnection(conn))
    record = await store.get(driver, import_id=import_id)
    if record is None:
        return None
    if record.status == "done":
        return record
    # The collector paused from the file's split on (200,000 lines are as many tuples).
    with _gc_paused():
        lines = data_lines(await store.body(driver, import_id=import_id), record.format)
        start, made = [record.position], None  # one lane, unless the import starts in several
        if record.lanes is None and record.position == 0:  # starting
            # At most half the pool's connections (it serves requests too), unless told.
            default = min(rt.settings.import_lanes, max(1, rt.pool.max_size // 2))
            wanted = lanes or (default if record.lines >= LANES_FROM else 1)
            if wanted > 1:
                made = await lane_map(rt, record, lines, wanted)  # None: one lane
                start = [0] * wanted if made is not None else start
        # Set once: a resume gets the positions and the map of its start (the lines dealt as
        # they were, whatever the cards' holders have become since).
        positions, stored = await store.start_lanes(
            driver, import_id=import_id, lanes=start, lane_map=made
        )
        if len(positions) == 1:
            split = [lines]
        elif stored is not None:
            split = deal(lines, stored, len(positions))
        else:  # lanes started before lane maps were stored (migration 0027): split again
            again = await split_lanes(
                rt, record, lines, len(positions), check=False, balanced=False
            )
            if again is None:
                raise RuntimeError(f"import {import_id}: its lanes cannot be made again")
            split = again
        done = [record.position]
        if progress:
            progress(record.position, record.lines)

        def advanced(by: int) -> None:
            done[0] += by
            if progress:
                progress(done[0], record.lines)

        if len(split) == 1 or len(split) > rt.pool.max_size // 2:
            # One lane; or a pool too small to lend the others a connection each (a restart
            # with a smaller DB_POOL_SIZE): the lanes one after another, still each in order.
            for k, part in enumerate(split):
                await _run_lane(
                    rt,
                    conn,
                    record,
                    k,
                    part,
                    positions[k],
                    chunk_size,
                    advanced,
                    before_commit,
                    turns=asyncio.Lock(),
                )
        else:
            async with contextlib.AsyncExitStack() as stack:
                conns = [conn]
                for _ in split[1:]:
                    extra = await stack.enter_async_context(rt.pool.connection())
                    if not extra.autocommit:
                        await extra.set_autocommit(True)
                    conns.append(extra)
                try:
                    await _run_lanes(
                        rt, conns, record, split, positions, chunk_size, advanced, before_commit
                    )
                except ExceptionGroup as failed:  # the first lane's error, as one lane raises it
                    raise failed.exceptions[0] from None
    return await store.get(driver, import_id=import_id)


async def _run_lanes(
    rt: Runtime,
    conns: list[psycopg.AsyncConnection[Any]],
    record: ImportRecord,
    split: list[list[tuple[int, bytes]]],
    positions: list[int],
    chunk_size: int,
    advanced: Callable[[int], None],
    before_commit: Callable[[int], Awaitable[None]] | None,
) -> None:
    """The lanes side by side, each on its connection; one failing stops the others (their
    chunks in flight roll back: a restart resumes every lane where it committed last)."""
    turns = asyncio.Lock()  # the lanes' plans, one at a time (`_run_lane`)
    async with asyncio.TaskGroup() as group:
        for k, part in enumerate(split):
            group.create_task(
                _run_lane(
                    rt,
                    conns[k],
                    record,
                    k,
                    part,
                    positions[k],
                    chunk_size,
                    advanced,
                    before_commit,
                    turns=turns,
                )
            )


async def _run_lane(
    rt: Runtime,
    conn: psycopg.AsyncConnection[Any],
    record: ImportRecord,
    lane: int,
    lines: list[tuple[int, bytes]],
    position: int,
    chunk_size: int,
    advanced: Callable[[int], None],
    before_commit: Callable[[int], Awaitable[None]] | None,
    *,
    turns: asyncio.Lock,
) -> None:
    """A lane's lines from `position` on, chunk by chunk, on `conn`. Its first chunks are
    smaller (RAMP: 1/8 of `chunk_size`, then twice as many each time): the first one is
    planned before anything is written, so the lanes' statements start sooner, while the
    next, larger chunks are planned. So are its last ones (half the lines it has left, down to
    1/8 of `chunk_size`): the next chunk is planned while a statement runs, but the last
    statement has nothing to overlap, and with whole chunks the lanes' last statements kept
    the machine half idle for a second at the end of a large import (`bench.imports`).

    The lanes' plans take `turns`, one plan at a time in the order the lanes asked (each still
    gives the event loop a turn every STEP lines, to send the statements): planned side by
    side, the lanes' plans all finished together, late, while the database had finished their
    statements and waited."""
    ahead: asyncio.Task[_Plan] | None = None
    least = max(1, chunk_size // RAMP)
    size = least

    def planned(part: list[tuple[int, bytes]]) -> Awaitable[_Plan]:
        return _plan_in_turn(rt, record, part, turns)

    try:
        while position < len(lines):
            plan = await (ahead or planned(lines[position : position + size]))
            ahead = None
            await _run_slow(plan)
            end = position + plan.end
            size = min(chunk_size, 2 * size, max(least, (len(lines) - end) // 2))
            if end < len(lines) and not plan.tiered:
                # The next chunk is prepared while this one's statement runs (the event loop
                # is free meanwhile). Not under a tier ladder: a chunk's earns are priced at
                # the tiers held before it, after the previous chunk's upgrades.
                ahead = asyncio.ensure_future(planned(lines[end : end + size]))
            await _commit_chunk(rt, conn, record, plan, lane, position, end, before_commit)
            del plan  # freed before the collection, which would otherwise walk all of it
            _GcPause.collect_young()
            advanced(end - position)
            position = end
    finally:
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)


async def _commit_chunk(
    rt: Runtime,
    conn: psycopg.AsyncConnection[Any],
    record: ImportRecord,
    plan: _Plan,
    lane: int,
    start: int,
    end: int,
    before_commit: Callable[[int], Awaitable[None]] | None,
) -> None:
    """The chunk's earns, its lane's progress and its rejected lines in one transaction; then
    the steps after an earn's commit."""
    outcomes = plan.outcomes
    async with conn.transaction():
        # A chunk's statement keeps its CTEs' rows (about 0.5 kB per earn) and sorts them in
        # memory: with the default 4 MB they went to temporary files (`bench.import_statement`:
        # 3-4 us of the database's 50 per earn).
        await conn.execute(CHUNK_WORK_MEM)
        after, issued = await _write_chunk(conn, plan)
        if not await store.advance(
            cast(Any, DriverConnection(conn)),
            import_id=record.id,
            lane=lane,
            start=start,
            end=end,
            applied=outcomes.applied,
            replayed=outcomes.replayed,
            rejected=sorted(outcomes.rejected, key=lambda e: e.line),
        ):
            raise _Lost
        if before_commit is not None:
            await before_commit(start)
    earning.counted_as_issued(issued)  # committed: the steps after an earn's commit
    for e, result in after:
        try:
            await earning.after_commit_steps(rt, e.purchase.card_number, e.holder, result)
        except Exception:
            log.warning("import %s: a step after line %d's commit failed", record.id, e.line)


class _GcPause:
    """How many runs of this process have the cyclic GC paused, and whether to resume it."""

    runs = 0
    resume = False
    last = 0.0  # when the young generations were collected last (`time.monotonic`)

    @classmethod
    def collect_young(cls) -> None:
        """Collect the young generations (the process's other cyclic garbage meanwhile) at
        most every YOUNG_EVERY seconds: a collection walks every young object still alive,
        the next chunk's plan among them, and after every chunk it cost 8 % of an import's
        CPU (py-spy, `bench.imports`)."""
        now = time.monotonic()
        if now - cls.last >= YOUNG_EVERY:
            cls.last = now
            gc.collect(1)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while an import runs: a chunk's tens of thousands
    of short-lived containers (plans, requests, results) otherwise trigger full collections of
    the whole process's heap, measured at a third of the import's CPU. Reference counting
    frees them as usual; the young generations are collected between chunks every
    YOUNG_EVERY seconds (the cyclic garbage of the process's other work meanwhile), the whole
    heap as usual once the last import ends."""
    if _GcPause.runs == 0:
        _GcPause.resume = gc.isenabled()
        gc.disable()
    _GcPause.runs += 1
    try:
        yield
    finally:
        _GcPause.runs -= 1
        if _GcPause.runs == 0 and _GcPause.resume:
            gc.enable()


async def run_pending(rt: Runtime) -> int:
    """Run every unfinished import (this process's worker; others' are skipped by the lock)."""
    async with rt.engine.connect() as conn:
        pending = await store.unfinished(conn)
    done = 0
    for import_id in pending:
        try:
            if await run(rt, import_id) is not None:
                done += 1
        except _Lost:
            pass
    return done


async def work(rt: Runtime, wake: asyncio.Event, *, idle_seconds: float = 5.0) -> None:
    """The importer in `serve`: runs unfinished imports (those a restart interrupted too), then
    waits for a new one (`wake`) or `idle_seconds`. A failing run is logged and retried."""
    while True:
        wake.clear()
        try:
            await run_pending(rt)
        except Exception:  # the worker must outlive a bad run; the next round retries
            log.exception("import run failed")
        try:
            await asyncio.wait_for(wake.wait(), idle_seconds)
        except TimeoutError:
            pass
