"""Batch files: a partner's day of purchases (and refunds) in one file, applied in the
background (`POST /imports`, `coalition import FILE --partner ID`).

Each line is the same use case as its GraphQL mutation, with its own idempotency key: `earn`
lines run `loyalty.earn.earn`, `refund` lines `loyalty.refund.refund`. A re-upload applies
nothing twice (its lines are replays); a bad line is rejected with its line number and a
typed code, the others apply.

Speed: the earn use cases of a chunk (CHUNK lines) run side by side with the chunk's stand-in
for the group commit (`_Chunk`): their cards are looked up in one query (the use case's
DataLoader), and their ledger writes go into ONE set-based statement, the group commit's own
(`ledger.batch.write_earns`, the same rules); what it leaves (replays, conflicts, duplicate
orders, a member who owes points) runs on the single path, each in a savepoint. That
statement, the single-path writes, the import's progress and its rejected lines commit in
one transaction per chunk: an import stopped anywhere (a restart) resumes at the first line of
the chunk that did not commit, and never applies a line twice. Post-commit steps of the use
case (a referral bonus, a tier upgrade) run after the chunk's commit, as after an earn's.
Lines whose earn needs the member's offer state (activation, use counts) and refund lines run
in their own unit of work, as over GraphQL: a restart between that commit and the chunk's makes
them count as replayed, never applied twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import csv
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import psycopg

from core.db import DriverConnection
from core.errors import DomainError, ErrorCode, NotFoundError, ValidationError
from ledger import batch as ledger_batch
from ledger import service as ledger
from ledger.service import EarnRequest, EarnResult
from loyalty import earn as earning
from loyalty import refund as refunding
from loyalty.runtime import Runtime, Services
from partners import imports as store
from partners.imports import ImportRecord, LineError

log = logging.getLogger(__name__)

HEADER = ("kind", "order_ref", "card_number", "amount", "currency", "category", "idempotency_key")
MAX_BYTES = 50 * 1024 * 1024
MAX_LINES = 1_000_000
MAX_LINE_BYTES = 4096
CHUNK = 10_000
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
        return {k: v or "" for k, v in zip(HEADER, values, strict=True)}
    cells = line.split(",") if '"' not in line else next(csv.reader([line]), [])
    if len(cells) != len(HEADER):
        raise ValidationError(f"the line must have {len(HEADER)} fields")
    return dict(zip(HEADER, cells, strict=True))


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

_LINE: contextvars.ContextVar[int] = contextvars.ContextVar("import_line")


class _Lost(Exception):
    """Another worker recorded this chunk first."""


@dataclass
class _Chunk:
    """The group commit's stand-in for one chunk: collects the earns of the chunk's use cases
    and lets them go once `size` lines are either waiting here or finished."""

    size: int
    finished: int = 0
    waiting: list[tuple[int, EarnRequest, asyncio.Future[EarnResult]]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def earn(self, request: EarnRequest | None = None, /, **fields: Any) -> EarnResult:
        if request is None:
            request = EarnRequest(**fields)
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((_LINE.get(), request, future))
        self._check()
        return await future

    def line_done(self) -> None:
        self.finished += 1
        self._check()

    def _check(self) -> None:
        if len(self.waiting) + self.finished >= self.size:
            self.ready.set()


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


async def _apply_line(rt: Runtime, record: ImportRecord, line: int, raw: bytes) -> Any:
    """One line through its use case (in its task, the line's number in `_LINE`)."""
    _LINE.set(line)
    f = parse_line(raw, record.format)
    kind = f["kind"].strip()
    if kind == "earn":
        return await earning.earn(
            rt,
            actor=record.actor,
            key_space=ledger.partner_key_space(record.partner_id),
            partner_id=record.partner_id,
            card_number=f["card_number"],
            amount=f["amount"],
            currency=f["currency"],
            category=f["category"] or None,
            order_ref=f["order_ref"],
            idempotency_key=f["idempotency_key"],
        )
    if kind == "refund":
        return await refunding.refund(
            rt,
            actor=record.actor,
            partner_id=record.partner_id,
            order_ref=f["order_ref"],
            amount=f["amount"],
            currency=f["currency"],
            idempotency_key=f["idempotency_key"],
        )
    raise ValidationError("kind must be earn or refund", field="kind")


async def _write_chunk(
    conn: psycopg.AsyncConnection[Any], chunk: _Chunk, outcomes: _Outcomes
) -> list[tuple[asyncio.Future[EarnResult], EarnResult | BaseException]]:
    """The chunk's earns: one statement (`ledger.batch.write_earns`), the rest on the single
    path, each in a savepoint. Returns what each waiting use case gets once committed."""
    first: list[tuple[int, EarnRequest, asyncio.Future[EarnResult]]] = []
    rest: list[tuple[int, EarnRequest, asyncio.Future[EarnResult]]] = []
    keys: set[tuple[str | None, str]] = set()
    orders: set[tuple[uuid.UUID, str | None]] = set()
    for item in chunk.waiting:
        q = item[1]
        k, o = (q.key_space, q.idempotency_key), (q.partner_id, q.ref)
        if k in keys or (q.ref is not None and o in orders):
            rest.append(item)
            continue
        keys.add(k)
        orders.add(o)
        first.append(item)
    answers: list[tuple[asyncio.Future[EarnResult], EarnResult | BaseException]] = []
    try:
        async with conn.transaction():  # a savepoint: a refused statement writes nothing
            results = await ledger_batch.write_earns(conn, [q for _, q, _ in first])
    except psycopg.Error as exc:
        if exc.sqlstate != ledger_batch.REFUSED:
            raise
        results = [None] * len(first)  # a member owes points: the single path repays it
    for (line, _, future), result in zip(first, results, strict=True):
        if result is None:
            rest.append((line, _, future))
        else:
            outcomes.add(line, result)
            answers.append((future, result))
    rest.sort(key=lambda item: item[0])  # a key's or order's first line first
    driver = cast(Any, DriverConnection(conn))
    for line, q, future in rest:
        try:
            async with conn.transaction():
                single = await ledger.earn(driver, q)
        except DomainError as exc:
            outcomes.add(line, exc)
            answers.append((future, exc))
        else:
            outcomes.add(line, single)
            answers.append((future, single))
    return answers


async def run(
    rt: Runtime,
    import_id: uuid.UUID,
    *,
    chunk_size: int = CHUNK,
    progress: Callable[[int, int], None] | None = None,
    before_commit: Callable[[int], Awaitable[None]] | None = None,
) -> ImportRecord | None:
    """Apply an import's remaining lines, chunk by chunk; None when another worker holds it.
    `before_commit(position)` runs inside each chunk's transaction (tests: a crash there)."""
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
            return await _run_locked(rt, conn, import_id, chunk_size, progress, before_commit)
        finally:
            if not conn.closed:
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [lock])


async def _run_locked(
    rt: Runtime,
    conn: psycopg.AsyncConnection[Any],
    import_id: uuid.UUID,
    chunk_size: int,
    progress: Callable[[int, int], None] | None,
    before_commit: Callable[[int], Awaitable[None]] | None,
) -> ImportRecord | None:
    driver = cast(Any, DriverConnection(conn))
    record = await store.get(driver, import_id=import_id)
    if record is None:
        return None
    lines = (
        data_lines(await store.body(driver, import_id=import_id), record.format)
        if (record.status != "done")
        else []
    )
    position = record.position
    if progress:
        progress(position, record.lines)
    while position < record.lines:
        part = lines[position : position + chunk_size]
        chunk = _Chunk(len(part))
        crt = Services(rt.engine, rt.pool, cast(Any, chunk), rt.settings, rt.caches)

        async def one(line: int, raw: bytes, crt: Runtime = crt, chunk: _Chunk = chunk) -> Any:
            try:
                return await _apply_line(crt, record, line, raw)
            finally:
                chunk.line_done()

        tasks = [asyncio.ensure_future(one(n, raw)) for n, raw in part]
        await chunk.ready.wait()  # every line waits for the statement or is done
        outcomes = _Outcomes()
        waiting = {line for line, _, _ in chunk.waiting}
        for (line, _), task in zip(part, tasks, strict=True):
            if line in waiting:
                continue
            exc = task.exception()
            if exc is not None and not isinstance(exc, DomainError):
                for t in tasks:
                    t.cancel()
                raise exc
            outcomes.add(line, exc if exc is not None else task.result())
        try:
            async with conn.transaction():
                answers = await _write_chunk(conn, chunk, outcomes)
                end = position + len(part)
                if not await store.advance(
                    driver,
                    import_id=import_id,
                    start=position,
                    end=end,
                    applied=outcomes.applied,
                    replayed=outcomes.replayed,
                    rejected=sorted(outcomes.rejected, key=lambda e: e.line),
                ):
                    raise _Lost
                if before_commit is not None:
                    await before_commit(position)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for future, answer in answers:  # committed: the use cases go on (post-commit steps)
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(result, DomainError):
                log.warning("import %s: a step after a line's commit failed: %r", import_id, result)
        position = end
        if progress:
            progress(position, record.lines)
    return await store.get(driver, import_id=import_id)


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
