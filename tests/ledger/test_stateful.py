"""A stateful property test of the ledger against a small, independent model.

Hypothesis drives random sequences of earn, authorize, capture (full and partial), void,
reverse_earn, return_points, the expiry job, time steps, invalid requests and idempotent replays
against the real service on a real PostgreSQL, and a plain-Python model of DOMAIN.md "Ledger"
predicts every result and every domain error. After every step the database is checked:

- double entry: each transaction's entries sum to zero (and it has at least two legs), all
  entries together sum to zero;
- each stored member balance (wallet, debt) is the sum of its entries; no wallet below zero, no
  debt above zero;
- each wallet is what is left in its lots plus what its active holds reserved; each lot's
  remaining is explained by its earn and its lot postings; each hold by its allocations;
- the model and the database agree on every member's balance (wallet, available, pending, on
  hold, expiring, debt), on every lot and on every hold.

The model shares no code with the service:
- lots are spent earliest expiry first, ties by earning order; points are pending until
  `available_at` and gone at `expires_at` (the expiry job moves what is left to breakage);
- a member's debt is repaid first by later earnings;
- a reversal takes from the earn's own lot, then other pending lots, then available lots FIFO,
  never from held points; the shortfall becomes debt;
- capture takes the reserved points in reservation order and releases the rest; returned points
  go back into the lots they were captured from, last captured first;
- a hold is live until `expires_at`, then releases its points by itself;
- an idempotency key (per partner and operation) replays the first successful request, refuses
  a different request, and stays free when the request failed.

Each machine run has its own members and partners and its own stretch of time (see
`run_start`): the (global) expiry job finds only the current run's lots, while the global
invariants see every run's entries.
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_driver_pool, create_engine
from core.errors import DomainError
from ledger import service as ledger
from ledger.batch import EarnBatcher
from ledger.errors import (
    DuplicateOrder,
    HoldNotActive,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientPoints,
    LedgerValidation,
    MemberNotFound,
    PartnerNotFound,
    TransactionNotFound,
)
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database

T = TypeVar("T")

N_MEMBERS = 3
N_PARTNERS = 3
EXPIRING_WITHIN = timedelta(days=30)  # ledger.balance's default horizon
DEFAULT_TTL = timedelta(minutes=30)  # DOMAIN.md: a hold expires by itself after e.g. 30 min
TTLS = [None, timedelta(hours=2), timedelta(days=3)]  # None: the service's default
REFS = [None, None, None, "order-1", "order-2"]
# A run starts in January and moves its clock on at most 30 steps of at most 35 days: with its
# lots (2 months at most) and holds (3 days) it stays within 4 years.
RUN_YEARS = 4

_runs = itertools.count()


def run_start(k: int) -> datetime:
    """Where the clock of the k-th run starts: before every earlier run (whose lots, lying in
    its future, the expiry job then leaves alone), in a leap year as the first run, with no
    century year skipping a leap day within reach: every run sees the same calendar, so a
    failing example replays exactly (Hypothesis requires it)."""
    year = 9996
    for _ in range(k + 1):
        year -= RUN_YEARS
        while any(y % 100 == 0 and y % 400 != 0 for y in range(year, year + RUN_YEARS + 1)):
            year -= RUN_YEARS
    return datetime(year, 1, 1, tzinfo=UTC)


EARN_REQUESTS = st.tuples(
    st.integers(0, N_MEMBERS - 1),  # member
    st.integers(0, N_PARTNERS - 1),  # issuing partner
    st.integers(1, 300),  # points
    st.sampled_from([0, 0, 2, 14]),  # hold_days
    st.sampled_from([1, 1, 2]),  # validity_months
    st.sampled_from(REFS),
)


# ---------------------------------------------------------------------------------------------
# The model


def add_months(t: datetime, months: int) -> datetime:
    """Calendar months later, the day clamped to the month's end (Jan 31 + 1 = Feb 28/29)."""
    m = t.month - 1 + months
    year, month = t.year + m // 12, m % 12 + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


@dataclass(eq=False)
class MLot:
    seq: int  # earning order
    tx: uuid.UUID
    member: int
    issuer: int
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    reversed: int = 0

    def fifo(self) -> tuple[datetime, datetime, int]:
        return (self.expires_at, self.earned_at, self.seq)


@dataclass(eq=False)
class MAlloc:
    lot: MLot
    points: int
    captured: int = 0
    returned: int = 0


@dataclass(eq=False)
class MHold:
    id: uuid.UUID
    member: int
    partner: int
    points: int
    expires_at: datetime
    allocs: list[MAlloc]
    status: str = "active"  # active | captured | voided | expired
    captured: int = 0
    returned: int = 0


@dataclass
class MBalance:
    wallet: int
    available: int
    pending: int
    on_hold: int
    expiring: int
    debt: int


class Model:
    """The ledger of DOMAIN.md, in memory. An operation raises the error the service must raise
    (having changed nothing), or applies itself and returns what the result must say."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.lots: list[MLot] = []
        self.holds: list[MHold] = []
        self.debt = [0] * N_MEMBERS
        self.earned_refs: set[tuple[int, str]] = set()
        self.timed_out: list[MLot] = []  # lots that holds gave back by running out (statistics)

    # -- reads

    def member_lots(self, m: int) -> list[MLot]:
        return [lot for lot in self.lots if lot.member == m]

    def live(self, lot: MLot) -> bool:
        return lot.expires_at > self.now

    def spendable(self, m: int) -> list[MLot]:
        lots = [
            lot
            for lot in self.member_lots(m)
            if lot.remaining > 0 and lot.available_at <= self.now and self.live(lot)
        ]
        return sorted(lots, key=MLot.fifo)

    def available(self, m: int) -> int:
        return sum(lot.remaining for lot in self.spendable(m))

    def balance(self, m: int) -> MBalance:
        live = [lot for lot in self.member_lots(m) if self.live(lot)]
        on_hold = sum(h.points for h in self.holds if h.member == m and h.status == "active")
        horizon = self.now + EXPIRING_WITHIN
        return MBalance(
            # expired points stay in the wallet until the expiry job takes them
            wallet=sum(lot.remaining for lot in self.member_lots(m)) + on_hold,
            available=sum(lot.remaining for lot in live if lot.available_at <= self.now),
            pending=sum(lot.remaining for lot in live if lot.available_at > self.now),
            on_hold=on_hold,
            expiring=sum(lot.remaining for lot in live if lot.expires_at <= horizon),
            debt=self.debt[m],
        )

    # -- time

    def advance(self, delta: timedelta) -> None:
        self.now += delta
        for h in self.holds:
            if h.status == "active" and h.expires_at <= self.now:
                h.status = "expired"
                for a in h.allocs:
                    a.lot.remaining += a.points
                    self.timed_out.append(a.lot)

    # -- movements

    def earn(
        self, m: int, p: int, points: int, hold_days: int, validity_months: int, ref: str | None
    ) -> tuple[dict[str, Any], Callable[[uuid.UUID], None]]:
        if ref is not None and (p, ref) in self.earned_refs:
            raise DuplicateOrder("this order already earned points")
        repaid = min(points, self.debt[m])
        lot = MLot(
            seq=len(self.lots),
            tx=uuid.UUID(int=0),
            member=m,
            issuer=p,
            points=points,
            remaining=points - repaid,
            earned_at=self.now,
            available_at=self.now + timedelta(days=hold_days),
            expires_at=add_months(self.now, validity_months),
        )
        expected = {
            "points": points,
            "status": "pending" if hold_days > 0 else "available",
            "available_at": lot.available_at,
            "expires_at": lot.expires_at,
            "debt_repaid": repaid,
        }

        def apply(tx: uuid.UUID) -> None:
            self.debt[m] -= repaid
            if ref is not None:
                self.earned_refs.add((p, ref))
            lot.tx = tx
            self.lots.append(lot)

        return expected, apply

    def authorize(
        self, m: int, p: int, points: int, ttl: timedelta
    ) -> tuple[dict[str, Any], Callable[[uuid.UUID], None]]:
        available = self.available(m)
        if points > available:
            raise InsufficientPoints("not enough points", available=available)
        allocs, need = [], points
        for lot in self.spendable(m):
            if need == 0:
                break
            allocs.append(MAlloc(lot, min(lot.remaining, need)))
            need -= allocs[-1].points
        expected = {"points": points, "expires_at": self.now + ttl, "status": "active"}

        def apply(hold_id: uuid.UUID) -> None:
            for a in allocs:
                a.lot.remaining -= a.points
            self.holds.append(MHold(hold_id, m, p, points, self.now + ttl, allocs))

        return expected, apply

    def capture(self, hold: MHold, points: int) -> dict[str, Any]:
        if hold.status != "active":
            raise HoldNotActive(hold.status)
        if points > hold.points:
            raise LedgerValidation("more than the hold")
        left = points
        for a in hold.allocs:  # in reservation order; the rest goes back to its lot
            a.captured = min(a.points, left)
            left -= a.captured
            a.lot.remaining += a.points - a.captured
        hold.status, hold.captured = "captured", points
        return {"hold_id": hold.id, "points": points, "released": hold.points - points}

    def void(self, hold: MHold) -> dict[str, Any]:
        if hold.status != "active":
            raise HoldNotActive(hold.status)
        for a in hold.allocs:
            a.lot.remaining += a.points
        hold.status = "voided"
        return {"hold_id": hold.id, "released": hold.points}

    def reverse(self, lot: MLot, points: int) -> dict[str, Any]:
        if lot.reversed + points > lot.points:
            raise LedgerValidation("more than what is left of the earn")
        sources = [x for x in self.member_lots(lot.member) if x.remaining > 0 and self.live(x)]
        # its own lot, then pending lots, then available ones; each group FIFO
        sources.sort(key=lambda x: (x is not lot, x.available_at <= self.now, *x.fifo()))
        need = points
        for x in sources:
            take = min(x.remaining, need)
            x.remaining -= take
            need -= take
        lot.reversed += points
        self.debt[lot.member] += need
        return {"points": points, "from_wallet": points - need, "to_debt": need}

    def return_points(self, hold: MHold, points: int) -> dict[str, Any]:
        if hold.status != "captured":
            raise HoldNotActive(hold.status)
        if hold.returned + points > hold.captured:
            raise LedgerValidation("more than what is left of the capture")
        left = points
        for a in reversed(hold.allocs):  # last captured first
            back = min(a.captured - a.returned, left)
            a.returned += back
            a.lot.remaining += back
            left -= back
        hold.returned += points
        return {"hold_id": hold.id, "points": points}

    def expire(self) -> dict[str, int]:
        swept = [lot for lot in self.lots if not self.live(lot) and lot.remaining > 0]
        report = {
            "members": len({lot.member for lot in swept}),
            "lots": len(swept),
            "points": sum(lot.remaining for lot in swept),
        }
        for lot in swept:
            lot.remaining = 0
        self.timed_out = [lot for lot in self.timed_out if lot.remaining]
        return report


# ---------------------------------------------------------------------------------------------
# Database checks


# One statement. Global, over every run so far: offenders as arrays, NULL when there are none.
# This run's members: their lots and holds as the model sees them (a hold whose time ran out is
# expired and its points are back in their lots, whether or not the database released it yet),
# with the offenders among them to the per-lot and per-hold bookkeeping.
CHECKS = text(
    """
    WITH legs AS (
        SELECT transaction_id, sum(amount) AS total, count(*) AS n FROM entries GROUP BY 1
    ), per_account AS (
        SELECT account_id, sum(amount) AS total FROM entries GROUP BY 1
    ), lot_sum AS (
        SELECT wallet_id, sum(remaining) AS total FROM lots GROUP BY 1
    ), reserved AS (
        SELECT h.wallet_id, sum(a.points) AS total
        FROM holds h JOIN hold_allocations a ON a.hold_id = h.id
        WHERE h.status = 'active' GROUP BY 1
    ), run_lots AS (
        SELECT l.*,
               (SELECT coalesce(sum(e.amount), 0) FROM entries e
                 WHERE e.transaction_id = l.earn_tx_id AND e.account_id = l.wallet_id)
                   AS credited,
               (SELECT coalesce(sum(p.points), 0) FROM lot_postings p WHERE p.lot_id = l.id)
                   AS posted,
               (SELECT coalesce(sum(a.points), 0) FROM hold_allocations a
                  JOIN holds h ON h.id = a.hold_id
                 WHERE a.lot_id = l.id AND h.status = 'active') AS reserved,
               (SELECT coalesce(sum(a.points), 0) FROM hold_allocations a
                  JOIN holds h ON h.id = a.hold_id
                 WHERE a.lot_id = l.id AND h.status = 'active' AND h.expires_at <= :at)
                   AS stale
        FROM lots l WHERE l.member_id = ANY(:members)
    ), run_holds AS (
        SELECT h.*,
               (SELECT json_agg(json_build_array(l.earn_tx_id, a.points, a.captured, a.returned)
                                ORDER BY a.seq)
                  FROM hold_allocations a JOIN lots l ON l.id = a.lot_id
                 WHERE a.hold_id = h.id) AS allocs,
               (SELECT CAST(array[sum(a.points), sum(a.captured), sum(a.returned)] AS bigint[])
                  FROM hold_allocations a WHERE a.hold_id = h.id) AS sums
        FROM holds h WHERE h.member_id = ANY(:members)
    )
    SELECT
        (SELECT array_agg(t.id) FROM transactions t LEFT JOIN legs ON legs.transaction_id = t.id
          WHERE coalesce(legs.total, 0) <> 0 OR coalesce(legs.n, 0) < 2) AS unbalanced,
        (SELECT coalesce(sum(amount), 0) FROM entries) AS grand_total,
        (SELECT array_agg(a.id) FROM accounts a LEFT JOIN per_account p ON p.account_id = a.id
          WHERE a.kind IN ('wallet', 'debt')
            AND a.balance IS DISTINCT FROM coalesce(p.total, 0)) AS stored_differs,
        (SELECT array_agg(a.id) FROM accounts a
          WHERE (a.kind = 'wallet' AND a.balance < 0)
             OR (a.kind = 'debt' AND a.balance > 0)) AS wrong_sign,
        (SELECT array_agg(a.id) FROM accounts a
           LEFT JOIN lot_sum l ON l.wallet_id = a.id
           LEFT JOIN reserved r ON r.wallet_id = a.id
          WHERE a.kind = 'wallet'
            AND a.balance <> coalesce(l.total, 0) + coalesce(r.total, 0)) AS wallet_vs_lots,
        (SELECT array_agg(id) FROM run_lots
          WHERE remaining + reserved <> credited + posted) AS untraced_lots,
        (SELECT array_agg(id) FROM run_holds
          WHERE sums <> array[points, captured, returned]) AS holds_vs_allocations,
        (SELECT json_agg(json_build_array(
                    earn_tx_id, member_id, issuer_id, points, remaining + stale, reversed,
                    earned_at, available_at, expires_at))
           FROM run_lots) AS lots,
        (SELECT json_agg(json_build_array(
                    id, member_id, partner_id, points,
                    CASE WHEN status = 'active' AND expires_at <= :at THEN 'expired'
                         ELSE status END,
                    captured, returned, expires_at, allocs))
           FROM run_holds) AS holds
    """
)


# ---------------------------------------------------------------------------------------------
# The machine


@dataclass
class Call:
    """A successful call, for idempotent replays."""

    op: str
    fn: Callable[..., Awaitable[Any]]
    actor: str
    key: str
    kwargs: dict[str, Any]
    result: Any


@dataclass
class Keys:
    """Idempotency keys per (actor, operation): fresh ones, and those of failed calls."""

    counter: Iterator[int] = field(default_factory=itertools.count)
    free: dict[tuple[str, str], list[str]] = field(default_factory=dict)


class LedgerMachine(RuleBasedStateMachine):
    uri: str = ""  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine: AsyncEngine = self.run(self._engine())
        self.batcher = self.run(self._batcher())
        self.start = run_start(next(_runs))
        self.model = Model(self.start)
        self.members, self.partners = self.run(self._population())
        self.calls: list[Call] = []
        self.keys = Keys()
        self.expired_at: datetime | None = None  # when the expiry job last ran

    async def _engine(self) -> AsyncEngine:
        return create_engine(self.uri, pool_size=1 + N_MEMBERS, max_overflow=0)

    async def _batcher(self) -> EarnBatcher:
        pool = create_driver_pool(self.uri, max_size=1 + N_MEMBERS)
        await pool.open(wait=True)
        return EarnBatcher(pool, max_in_flight=1)

    async def _population(self) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        async with self.engine.begin() as conn:
            ms = [
                (await members.create(conn, email=f"{uuid.uuid4().hex}@stateful.test")).id
                for _ in range(N_MEMBERS)
            ]
            ps = [
                (
                    await partners.create(
                        conn, name=f"partner-{uuid.uuid4().hex}", category="shop", currency="EUR"
                    )
                ).id
                for _ in range(N_PARTNERS)
            ]
        return ms, ps

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def teardown(self) -> None:
        try:
            self.run(self.batcher.pool.close())
            self.run(self.engine.dispose())
        finally:
            self.loop.close()

    # -- plumbing

    def actor(self, p: int) -> str:
        return f"partner:{self.partners[p]}"

    def key(self, data: st.DataObject | None, actor: str, op: str) -> str:
        """A fresh key, or now and then the key of a failed call (which must be free)."""
        free = self.keys.free.setdefault((actor, op), [])
        if free and data is not None and data.draw(st.booleans(), label="reuse a failed key"):
            return free.pop(data.draw(st.integers(0, len(free) - 1), label="failed key"))
        return f"{op}-{next(self.keys.counter)}"

    async def _call(self, fn: Callable[..., Awaitable[T]], kwargs: dict[str, Any]) -> T:
        async with self.engine.begin() as conn:
            return await fn(conn, **kwargs, at=self.model.now)

    def attempt(
        self,
        op: str,
        fn: Callable[..., Awaitable[Any]],
        p: int,
        data: st.DataObject | None,
        kwargs: dict[str, Any],
        predict: Callable[[], Any],
    ) -> Any:
        """Ask the model, then the service; they must agree on the result or on the error.
        `predict` returns the expected result fields, or (fields, apply): apply(result id)
        commits the model once the service has succeeded. Returns the service's result."""
        actor = self.actor(p)
        key = self.key(data, actor, op)
        try:
            prediction, error = predict(), None
        except DomainError as exc:
            prediction, error = None, exc
        try:
            result = self.run(self._call(fn, {"actor": actor, "idempotency_key": key, **kwargs}))
        except DomainError as exc:
            assert error is not None, f"{op} {kwargs}: model expected success, got {exc!r}"
            assert type(exc) is type(error), f"{op} {kwargs}: expected {error!r}, got {exc!r}"
            assert exc.details == error.details, f"{op}: {exc.details} != {error.details}"
            self.keys.free[(actor, op)].append(key)  # a failed call leaves its key free
            event(f"{op}: {type(exc).__name__}")
            return None
        assert error is None, f"{op} {kwargs}: expected {error!r}, got {result!r}"
        expected, apply = prediction if isinstance(prediction, tuple) else (prediction, None)
        assert not result.replayed
        got = {name: getattr(result, name) for name in expected}
        assert got == expected, f"{op} {kwargs}: expected {expected}, got {got}"
        if apply is not None:
            apply(result.transaction_id if op == "earn" else result.hold_id)
        self.calls.append(Call(op, fn, actor, key, kwargs, result))
        event(f"{op}: ok")
        return result

    def asking_partner(self, data: st.DataObject, owner: int) -> int:
        """Mostly the owner; now and then another partner, to whom it must not exist."""
        if data.draw(st.integers(0, 4), label="another partner asks") < 4:
            return owner
        others = [p for p in range(N_PARTNERS) if p != owner]
        return data.draw(st.sampled_from(others), label="other partner")

    def has_hold(self, status: str) -> bool:
        return any(h.status == status for h in self.model.holds)

    def pick_hold(self, data: st.DataObject, status: str) -> tuple[MHold, int]:
        """Mostly a hold in `status`, else any hold; and the partner that asks."""
        holds = [h for h in self.model.holds if h.status == status]
        if not holds or data.draw(st.integers(0, 4), label="a hold in any status") == 4:
            holds = self.model.holds
        hold = data.draw(st.sampled_from(holds), label="hold")
        return hold, self.asking_partner(data, hold.partner)

    def earn_kwargs(self, request: tuple[Any, ...]) -> dict[str, Any]:
        m, p, points, hold_days, validity_months, ref = request
        return {
            "member_id": self.members[m],
            "partner_id": self.partners[p],
            "points": points,
            "hold_days": hold_days,
            "validity_months": validity_months,
            "ref": ref,
        }

    def do_earn(self, data: st.DataObject | None, request: tuple[Any, ...]) -> None:
        m, p, points, hold_days, validity_months, ref = request
        result = self.attempt(
            "earn",
            ledger.earn,
            p,
            data,
            self.earn_kwargs(request),
            lambda: self.model.earn(m, p, points, hold_days, validity_months, ref),
        )
        if result is not None and result.debt_repaid:
            event("earn: repays debt")

    # -- rules

    @initialize(
        hours=st.integers(0, 31 * 24), earns=st.lists(EARN_REQUESTS, min_size=1, max_size=4)
    )
    def begin(self, hours: int, earns: list[tuple[Any, ...]]) -> None:
        """Start somewhere in January (month ends matter for expiry dates), with a few lots."""
        self.model.now = self.start = self.start + timedelta(hours=hours)
        for request in earns:
            self.do_earn(None, request)

    @rule(data=st.data(), request=EARN_REQUESTS)
    def earn(self, data: st.DataObject, request: tuple[Any, ...]) -> None:
        self.do_earn(data, request)

    @rule(data=st.data(), requests=st.lists(EARN_REQUESTS, min_size=2, max_size=5))
    def earns_arriving_together(self, data: st.DataObject, requests: list[tuple[Any, ...]]) -> None:
        """Earns committed together (`ledger.batch`): each must be what the model says of it
        when it is applied alone, in arrival order."""
        calls = []
        for request in requests:
            actor = self.actor(request[1])
            calls.append((actor, self.key(data, actor, "earn"), self.earn_kwargs(request)))
        batches = self.batcher.stats.batches

        async def together() -> list[Any]:
            return await asyncio.gather(
                *(
                    self.batcher.earn(actor=actor, idempotency_key=key, **kwargs, at=self.model.now)
                    for actor, key, kwargs in calls
                ),
                return_exceptions=True,
            )

        results = self.run(together())
        for (actor, key, kwargs), request, result in zip(calls, requests, results, strict=True):
            try:
                prediction, error = self.model.earn(*request), None
            except DomainError as exc:
                prediction, error = None, exc
            if isinstance(result, BaseException):
                assert isinstance(result, DomainError), f"earn {kwargs}: {result!r}"
                assert error is not None, f"earn {kwargs}: model expected success, got {result!r}"
                assert type(result) is type(error), f"earn {kwargs}: {error!r} != {result!r}"
                self.keys.free[(actor, "earn")].append(key)
                event(f"earn together: {type(result).__name__}")
                continue
            assert error is None, f"earn {kwargs}: expected {error!r}, got {result!r}"
            expected, apply = prediction
            assert not result.replayed
            got = {name: getattr(result, name) for name in expected}
            assert got == expected, f"earn together {kwargs}: expected {expected}, got {got}"
            apply(result.transaction_id)
            self.calls.append(Call("earn", ledger.earn, actor, key, kwargs, result))
            event("earn together: ok")
        if self.batcher.stats.batches > batches:
            event("earn together: committed as a batch")

    @rule(
        data=st.data(),
        m=st.integers(0, N_MEMBERS - 1),
        p=st.integers(0, N_PARTNERS - 1),
        ttl=st.sampled_from(TTLS),
    )
    def authorize(self, data: st.DataObject, m: int, p: int, ttl: timedelta | None) -> None:
        with_points = [i for i in range(N_MEMBERS) if self.model.available(i) > 0]
        if with_points and m not in with_points:
            if data.draw(st.integers(0, 4), label="a member without points") < 4:
                m = data.draw(st.sampled_from(with_points), label="member with points")
        available = self.model.available(m)
        how = data.draw(st.sampled_from(["all", "some", "too many", "all"]), label="how")
        if how == "all":
            points = max(1, available)
        elif how == "some":
            points = data.draw(st.integers(1, max(1, available)), label="points")
        else:
            points = data.draw(st.integers(available + 1, available + 50), label="points")
        kwargs: dict[str, Any] = {
            "member_id": self.members[m],
            "partner_id": self.partners[p],
            "points": points,
        }
        if ttl is not None:
            kwargs["ttl"] = ttl
        result = self.attempt(
            "authorize",
            ledger.authorize,
            p,
            data,
            kwargs,
            lambda: self.model.authorize(m, p, points, ttl or DEFAULT_TTL),
        )
        if result is not None:  # a purchase goes on at once, or later (see capture, void)
            then = data.draw(st.sampled_from(["later", "capture", "void", "later"]), label="then")
            if then == "capture":
                self.do_capture(data, self.model.holds[-1], p)
            elif then == "void":
                self.do_void(data, self.model.holds[-1], p)

    @precondition(lambda self: self.has_hold("active"))
    @rule(data=st.data())
    def capture(self, data: st.DataObject) -> None:
        self.do_capture(data, *self.pick_hold(data, "active"))

    def do_capture(self, data: st.DataObject, hold: MHold, p: int) -> None:
        points = data.draw(
            st.just(hold.points) | st.integers(1, hold.points) | st.just(hold.points + 1),
            label="points",
        )

        def predict() -> dict[str, Any]:
            if p != hold.partner:
                raise HoldNotFound("another partner's hold")
            return self.model.capture(hold, points)

        result = self.attempt(
            "capture",
            ledger.capture,
            p,
            data,
            {"partner_id": self.partners[p], "hold_id": hold.id, "points": points},
            predict,
        )
        if result is not None and result.released:
            event("capture: partial")

    @precondition(lambda self: self.has_hold("active"))
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        self.do_void(data, *self.pick_hold(data, "active"))

    def do_void(self, data: st.DataObject, hold: MHold, p: int) -> None:

        def predict() -> dict[str, Any]:
            if p != hold.partner:
                raise HoldNotFound("another partner's hold")
            return self.model.void(hold)

        self.attempt(
            "void",
            ledger.void,
            p,
            data,
            {"partner_id": self.partners[p], "hold_id": hold.id},
            predict,
        )

    @precondition(lambda self: self.model.lots)
    @rule(data=st.data(), ref=st.sampled_from(REFS))
    def reverse_earn(self, data: st.DataObject, ref: str | None) -> None:
        lot = data.draw(st.sampled_from(self.model.lots), label="earn")
        p = self.asking_partner(data, lot.issuer)
        left = lot.points - lot.reversed
        points = data.draw(
            st.just(max(1, left)) | st.integers(1, max(1, left)) | st.just(left + 1),
            label="points",
        )

        def predict() -> dict[str, Any]:
            if p != lot.issuer:
                raise TransactionNotFound("another partner's earn")
            return self.model.reverse(lot, points)

        result = self.attempt(
            "reverse",
            ledger.reverse_earn,
            p,
            data,
            {
                "partner_id": self.partners[p],
                "earn_transaction_id": lot.tx,
                "points": points,
                "ref": ref,
            },
            predict,
        )
        if result is not None and result.to_debt:
            event("reverse: debt arises")

    @precondition(lambda self: self.has_hold("captured"))
    @rule(data=st.data(), ref=st.sampled_from(REFS))
    def return_points(self, data: st.DataObject, ref: str | None) -> None:
        hold, p = self.pick_hold(data, "captured")
        left = hold.captured - hold.returned
        points = data.draw(
            st.just(max(1, left)) | st.integers(1, max(1, left)) | st.just(left + 1),
            label="points",
        )

        def predict() -> dict[str, Any]:
            if p != hold.partner:
                raise HoldNotFound("another partner's hold")
            return self.model.return_points(hold, points)

        result = self.attempt(
            "return",
            ledger.return_points,
            p,
            data,
            {"partner_id": self.partners[p], "hold_id": hold.id, "points": points, "ref": ref},
            predict,
        )
        if result is not None and any(not self.model.live(a.lot) for a in hold.allocs):
            event("return: into an expired lot")

    @precondition(lambda self: self.model.now != self.expired_at)
    @rule()
    def expire_points(self) -> None:
        """The job (global, but other runs' lots all lie in this run's future)."""
        self.expired_at = self.model.now
        if any(not self.model.live(lot) for lot in self.model.timed_out):
            event("expiry: takes points of a hold that ran out")
        expected = self.model.expire()
        report = self.run(ledger.expire_points(self.engine, at=self.model.now, now=self.model.now))
        got = {"members": report.members, "lots": report.lots, "points": report.points}
        assert got == expected, f"expiry at {self.model.now}: expected {expected}, got {got}"
        assert report.batches == (1 if expected["members"] else 0)
        event(f"expiry: {'swept points' if report.points else 'nothing to sweep'}")

    @rule(
        delta=st.one_of(
            st.integers(1, 120).map(lambda n: timedelta(minutes=n)),
            st.integers(1, 72).map(lambda n: timedelta(hours=n)),
            st.integers(1, 15).map(lambda n: timedelta(days=n)),
            st.integers(25, 35).map(lambda n: timedelta(days=n)),
        ),
        nightly_job=st.booleans(),
    )
    def advance_time(self, delta: timedelta, nightly_job: bool) -> None:
        """The clock moves on (holds run out, lots become available, lots expire); now and
        then the expiry job runs right after, as it would every night."""
        self.model.advance(delta)
        assert self.model.now - self.start < timedelta(days=365 * (RUN_YEARS - 1))
        if nightly_job:
            self.expire_points()

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """The same key with the same request returns the original result, whatever happened
        since; with a different request it is a conflict (and changes nothing)."""
        call = data.draw(st.sampled_from(self.calls), label="call")
        change, variants = None, self.variants(call)
        if variants and data.draw(st.booleans(), label="a different request"):
            change = data.draw(st.sampled_from(variants), label="change")
        kwargs = {**call.kwargs, **(change or {})}
        replay = self._call(call.fn, {"actor": call.actor, "idempotency_key": call.key, **kwargs})
        if change is None:
            assert self.run(replay) == replace(call.result, replayed=True)
            event(f"replay {call.op}: same request")
        else:
            with pytest.raises(IdempotencyConflict):
                self.run(replay)
            event(f"replay {call.op}: different request")

    def variants(self, call: Call) -> list[dict[str, Any]]:
        """Changes that make another request of `call`, still passing the checks made before
        the key is looked at (so that the key decides)."""
        kw = call.kwargs
        out: list[dict[str, Any]] = []
        if "points" in kw:
            out.append({"points": kw["points"] + 1})
        if "ref" in kw:
            out.append({"ref": "order-1" if kw["ref"] != "order-1" else "order-2"})
        if call.op in ("earn", "authorize"):
            out.append({"member_id": next(m for m in self.members if m != kw["member_id"])})
        if call.op == "earn":
            out.append({"hold_days": kw["hold_days"] + 1})
            out.append({"validity_months": kw["validity_months"] + 1})
        if call.op == "authorize":
            out.append({"ttl": kw.get("ttl", DEFAULT_TTL) + timedelta(minutes=1)})
        if call.op == "void":
            out.extend(
                {"hold_id": h.id}
                for h in self.model.holds
                if self.partners[h.partner] == kw["partner_id"] and h.id != kw["hold_id"]
            )
        return out

    @rule(data=st.data(), m=st.integers(0, N_MEMBERS - 1), p=st.integers(0, N_PARTNERS - 1))
    def invalid_request(self, data: st.DataObject, m: int, p: int) -> None:
        """Requests refused before anything is written."""
        member, partner, nobody = self.members[m], self.partners[p], uuid.uuid4()
        bad = data.draw(st.sampled_from([0, -1, ledger.MAX_POINTS + 1, True, 1.5]), label="bad")
        key = f"invalid-{uuid.uuid4()}"
        earn = {"member_id": member, "partner_id": partner, "points": 1}
        cases: list[tuple[type[DomainError], Callable[..., Awaitable[Any]], dict[str, Any]]] = [
            (LedgerValidation, ledger.earn, {**earn, "points": bad}),
            (LedgerValidation, ledger.earn, {**earn, "idempotency_key": " "}),
            (LedgerValidation, ledger.earn, {**earn, "hold_days": 366}),
            (LedgerValidation, ledger.authorize, {**earn, "points": bad}),
            (MemberNotFound, ledger.earn, {**earn, "member_id": nobody}),
            (PartnerNotFound, ledger.earn, {**earn, "partner_id": nobody}),
            (PartnerNotFound, ledger.authorize, {**earn, "partner_id": nobody}),
            (HoldNotFound, ledger.capture, {"partner_id": partner, "hold_id": nobody, "points": 1}),
            (HoldNotFound, ledger.void, {"partner_id": partner, "hold_id": nobody}),
            (
                HoldNotFound,
                ledger.return_points,
                {"partner_id": partner, "hold_id": nobody, "points": 1},
            ),
            (
                TransactionNotFound,
                ledger.reverse_earn,
                {"partner_id": partner, "earn_transaction_id": nobody, "points": 1},
            ),
        ]
        error, fn, kwargs = data.draw(st.sampled_from(cases), label="invalid request")
        with pytest.raises(error):
            self.run(self._call(fn, {"actor": self.actor(p), "idempotency_key": key, **kwargs}))

    # -- invariants

    @invariant()
    def database_agrees(self) -> None:
        self.run(self._check())

    async def _read_checks(self) -> Any:
        async with self.engine.connect() as conn:
            params = {"members": self.members, "at": self.model.now}
            return (await conn.execute(CHECKS, params)).one()

    async def _balance(self, member_id: uuid.UUID) -> MBalance:
        async with self.engine.connect() as conn:
            b = await ledger.balance(conn, member_id=member_id, at=self.model.now)
        return MBalance(b.wallet, b.available, b.pending, b.on_hold, b.expiring, b.debt)

    async def _check(self) -> None:
        model, now = self.model, self.model.now
        # Nothing writes meanwhile: the reads run side by side, each on its own connection.
        reads = await asyncio.gather(
            self._read_checks(),
            *(self._balance(member_id) for member_id in self.members),
            return_exceptions=True,  # let every read finish before failing
        )
        for read in reads:
            if isinstance(read, BaseException):
                raise read
        row, *balances = reads
        assert row.unbalanced is None, f"transactions not summing to zero: {row.unbalanced}"
        assert row.grand_total == 0, f"all entries sum to {row.grand_total}"
        assert row.stored_differs is None, f"stored balance != entries: {row.stored_differs}"
        assert row.wrong_sign is None, f"negative wallet / positive debt: {row.wrong_sign}"
        assert row.wallet_vs_lots is None, f"wallet != lots + active holds: {row.wallet_vs_lots}"
        assert row.untraced_lots is None, f"lot != earn + postings: {row.untraced_lots}"
        assert row.holds_vs_allocations is None, f"hold != allocs: {row.holds_vs_allocations}"

        for m, got in enumerate(balances):
            assert got == model.balance(m), f"member {m} at {now}: {got} != {model.balance(m)}"

        member = {str(mid): i for i, mid in enumerate(self.members)}
        partner = {str(pid): i for i, pid in enumerate(self.partners)}
        ts = datetime.fromisoformat
        db_lots = {
            uuid.UUID(tx): (member[m], partner[p], pts, rem, rev, ts(e), ts(a), ts(x))
            for tx, m, p, pts, rem, rev, e, a, x in row.lots or []
        }
        model_lots = {
            lot.tx: (
                lot.member,
                lot.issuer,
                lot.points,
                lot.remaining,
                lot.reversed,
                lot.earned_at,
                lot.available_at,
                lot.expires_at,
            )
            for lot in model.lots
        }
        assert db_lots == model_lots, f"lots at {now}"
        db_holds = {
            uuid.UUID(h): (
                member[m],
                partner[p],
                pts,
                status,
                cap,
                ret,
                ts(x),
                [(uuid.UUID(tx), *amounts) for tx, *amounts in allocs],
            )
            for h, m, p, pts, status, cap, ret, x, allocs in row.holds or []
        }
        model_holds = {
            h.id: (
                h.member,
                h.partner,
                h.points,
                h.status,
                h.captured,
                h.returned,
                h.expires_at,
                [(a.lot.tx, a.points, a.captured, a.returned) for a in h.allocs],
            )
            for h in model.holds
        }
        assert db_holds == model_holds, f"holds at {now}"


@pytest.fixture(scope="module")
def stateful_db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_stateful")
    yield uri
    drop_database(admin, uri)


def test_ledger_matches_model(stateful_db_uri: str) -> None:
    LedgerMachine.uri = stateful_db_uri
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(max_examples=40, stateful_step_count=30, deadline=None),
    )
