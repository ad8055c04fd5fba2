"""A stateful property test of the ledger against a small, independent model (model.py).

Hypothesis drives random sequences of earn, bonus (partner and operator funded), authorize,
capture (full and partial), void, reward spend, transfer (with and without a daily limit),
reverse_earn, return_points, the expiry job, time steps, invalid requests and idempotent replays
against the real service on a real PostgreSQL, and the model predicts every result and every
domain error. After every step the database is checked:

- double entry: each transaction's entries sum to zero (and it has at least two legs), all
  entries together sum to zero;
- each stored member balance (wallet, debt) is the sum of its entries; no wallet below zero, no
  debt above zero;
- each wallet is what is left in its lots plus what its active holds reserved; each lot's
  remaining is explained by its earn (or bonus; a transferred lot by nothing) and its lot
  postings; each hold by its allocations;
- the model and the database agree on every member's balance (wallet, available, pending, on
  hold, expiring, debt), on every lot (issuer, origin, points, remaining, dates) and hold, on
  the points outstanding per issuer, and on every partner's issuance and redemption account
  and the operator's promotions account.

Each machine run has its own members and partners and its own stretch of time (see
`run_start`): the (global) expiry job finds only the current run's lots, while the global
invariants see every run's entries.
"""

from __future__ import annotations

import asyncio
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
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_driver_pool, create_engine
from core.errors import DomainError
from ledger import service as ledger
from ledger.batch import EarnBatcher
from ledger.errors import (
    HoldNotFound,
    IdempotencyConflict,
    LedgerValidation,
    MemberNotFound,
    PartnerNotFound,
    TransactionNotFound,
)
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.model import N_MEMBERS, N_PARTNERS, MHold, Model
from tests.ledger.stateful_checks import check_database, promotions_balance

T = TypeVar("T")

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
BONUS_REQUESTS = st.tuples(
    st.integers(0, N_MEMBERS - 1),  # member
    st.none() | st.integers(0, N_PARTNERS - 1),  # issuer (None: the operator)
    st.integers(1, 300),  # points
    st.sampled_from([1, 1, 2]),  # validity_months
    st.sampled_from(["signup", "referral", "review"]),
)
DAILY_LIMITS = [None, None, 100, 400]


# The bonus, reward and transfer functions take a request; the machine calls every operation
# with keywords (as the others take them), the digest being that of what was sent.
def _digest(op: str, fields: dict[str, Any]) -> str:
    return ledger.request_hash(op, fields)


async def award_bonus(
    conn: Any, *, actor: str, idempotency_key: str, at: datetime, **kw: Any
) -> Any:
    request = ledger.BonusRequest(
        actor=actor,
        key_space=actor,
        idempotency_key=idempotency_key,
        digest=_digest("bonus", kw),
        at=at,
        **kw,
    )
    return await ledger.award_bonus(conn, request)


async def redeem_reward(
    conn: Any, *, actor: str, idempotency_key: str, at: datetime, **kw: Any
) -> Any:
    request = ledger.RewardSpendRequest(
        actor=actor,
        key_space=actor,
        idempotency_key=idempotency_key,
        digest=_digest("reward", kw),
        at=at,
        **kw,
    )
    return await ledger.redeem_reward_points(conn, request)


async def transfer(conn: Any, *, actor: str, idempotency_key: str, at: datetime, **kw: Any) -> Any:
    request = ledger.TransferRequest(
        actor=actor,
        key_space=actor,
        idempotency_key=idempotency_key,
        digest=_digest("transfer", kw),
        at=at,
        **kw,
    )
    return await ledger.transfer_points(conn, request)


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
        self.promotions_before = self.run(promotions_balance(self.engine))
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

    @property
    def operator(self) -> str:
        """The operator's key space, one per run (as partners and members are)."""
        return f"{ledger.OPERATOR_KEY_SPACE}:{self.partners[0]}"

    def member_actor(self, m: int) -> str:
        return ledger.member_key_space(self.members[m])

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
        actor: str,
        data: st.DataObject | None,
        kwargs: dict[str, Any],
        predict: Callable[[], Any],
    ) -> Any:
        """Ask the model, then the service; they must agree on the result or on the error.
        `predict` returns the expected result fields, or (fields, apply): apply(result id)
        commits the model once the service has succeeded. Returns the service's result."""
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
            apply(result.hold_id if op == "authorize" else result.transaction_id)
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
            self.actor(p),
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
        m, points = self.spend_points(data, m)
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
            self.actor(p),
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

    @rule(data=st.data(), request=BONUS_REQUESTS)
    def bonus(self, data: st.DataObject, request: tuple[Any, ...]) -> None:
        m, p, points, months, reason = request
        kwargs = {
            "member_id": self.members[m],
            "issuer_id": None if p is None else self.partners[p],
            "points": points,
            "reason": reason,
            "validity_months": months,
        }

        def predict() -> Any:
            expected, apply = self.model.bonus(m, p, points, months)
            return {
                **expected,
                "issuer_id": kwargs["issuer_id"],
                "member_id": self.members[m],
            }, apply

        actor = self.operator if p is None else self.actor(p)
        result = self.attempt("bonus", award_bonus, actor, data, kwargs, predict)
        if result is not None:
            event(f"bonus: {'operator' if p is None else 'partner'}")
            if result.debt_repaid:
                event("bonus: repays debt")

    def spend_points(self, data: st.DataObject, m: int) -> tuple[int, int]:
        """Mostly a member with points; all, some or too many of their available points."""
        with_points = [i for i in range(N_MEMBERS) if self.model.available(i) > 0]
        if with_points and m not in with_points:
            if data.draw(st.integers(0, 4), label="a member without points") < 4:
                m = data.draw(st.sampled_from(with_points), label="member with points")
        available = self.model.available(m)
        how = data.draw(st.sampled_from(["all", "some", "too many", "all"]), label="how")
        if how == "all":
            return m, max(1, available)
        if how == "some":
            return m, data.draw(st.integers(1, max(1, available)), label="points")
        return m, data.draw(st.integers(available + 1, available + 50), label="points")

    @rule(data=st.data(), m=st.integers(0, N_MEMBERS - 1), p=st.integers(0, N_PARTNERS - 1))
    def reward(self, data: st.DataObject, m: int, p: int) -> None:
        m, points = self.spend_points(data, m)
        kwargs = {
            "member_id": self.members[m],
            "partner_id": self.partners[p],
            "points": points,
            "ref": f"reward:{p}",
        }

        def predict() -> dict[str, Any]:
            expected = self.model.reward(m, p, points)
            return {**expected, "member_id": self.members[m], "partner_id": self.partners[p]}

        self.attempt("reward", redeem_reward, self.member_actor(m), data, kwargs, predict)

    @rule(
        data=st.data(),
        a=st.integers(0, N_MEMBERS - 1),
        to=st.sampled_from([1, 2, 1, 2, 0]),  # 0: to oneself
        limit=st.sampled_from(DAILY_LIMITS),
    )
    def transfer(self, data: st.DataObject, a: int, to: int, limit: int | None) -> None:
        a, points = self.spend_points(data, a)
        b = (a + to) % N_MEMBERS
        kwargs = {
            "from_member_id": self.members[a],
            "to_member_id": self.members[b],
            "points": points,
            "daily_limit": limit,
        }
        travelled = any(lot.origin for lot in self.model.spendable(a))

        def predict() -> Any:
            expected, apply = self.model.transfer(a, b, points, limit)
            ids = {"from_member_id": self.members[a], "to_member_id": self.members[b]}
            return {**expected, **ids}, apply

        result = self.attempt("transfer", transfer, self.member_actor(a), data, kwargs, predict)
        if result is not None:
            event(f"transfer: {'with' if limit else 'without'} a limit")
            if result.debt_repaid:
                event("transfer: repays the receiver's debt")
            if travelled:
                event("transfer: of points transferred before")

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
            self.actor(p),
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
            self.actor(p),
            data,
            {"partner_id": self.partners[p], "hold_id": hold.id},
            predict,
        )

    @precondition(lambda self: self.model.lots)
    @rule(data=st.data(), ref=st.sampled_from(REFS))
    def reverse_earn(self, data: st.DataObject, ref: str | None) -> None:
        issued = [lot for lot in self.model.lots if lot.origin is None]
        lot = data.draw(st.sampled_from(issued), label="earn")
        if lot.issuer is None:  # an operator's bonus: no partner's earn
            p = data.draw(st.integers(0, N_PARTNERS - 1), label="partner")
        else:
            p = self.asking_partner(data, lot.issuer)
        left = lot.points - lot.reversed
        points = data.draw(
            st.just(max(1, left)) | st.integers(1, max(1, left)) | st.just(left + 1),
            label="points",
        )

        def predict() -> dict[str, Any]:
            if p != lot.issuer or lot.bonus:
                raise TransactionNotFound("another partner's earn, or a bonus")
            return self.model.reverse(lot, points)

        result = self.attempt(
            "reverse",
            ledger.reverse_earn,
            self.actor(p),
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
            self.actor(p),
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
        if call.op in ("earn", "authorize", "bonus", "reward"):
            out.append({"member_id": next(m for m in self.members if m != kw["member_id"])})
        if call.op == "bonus":
            out.append({"reason": kw["reason"] + "!"})
        if call.op == "transfer":
            out.append(
                {
                    "to_member_id": next(
                        m
                        for m in self.members
                        if m not in (kw["to_member_id"], kw["from_member_id"])
                    )
                }
            )
            out.append({"daily_limit": 1 + (kw["daily_limit"] or 0)})
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
        bonus = {"member_id": member, "issuer_id": partner, "points": 1, "reason": "review"}
        spend = {"member_id": member, "partner_id": partner, "points": 1, "ref": "reward:x"}
        other = self.members[(m + 1) % N_MEMBERS]
        give = {"from_member_id": member, "to_member_id": other, "points": 1, "daily_limit": None}
        cases += [
            (LedgerValidation, award_bonus, {**bonus, "points": bad}),
            (LedgerValidation, award_bonus, {**bonus, "reason": ""}),
            (MemberNotFound, award_bonus, {**bonus, "member_id": nobody}),
            (PartnerNotFound, award_bonus, {**bonus, "issuer_id": nobody}),
            (LedgerValidation, redeem_reward, {**spend, "points": bad}),
            (MemberNotFound, redeem_reward, {**spend, "member_id": nobody}),
            (PartnerNotFound, redeem_reward, {**spend, "partner_id": nobody}),
            (LedgerValidation, transfer, {**give, "points": bad}),
            (LedgerValidation, transfer, {**give, "to_member_id": member}),
            (LedgerValidation, transfer, {**give, "daily_limit": -1}),
            (MemberNotFound, transfer, {**give, "to_member_id": nobody}),
            (MemberNotFound, transfer, {**give, "from_member_id": nobody}),
        ]
        error, fn, kwargs = data.draw(st.sampled_from(cases), label="invalid request")
        with pytest.raises(error):
            self.run(self._call(fn, {"actor": self.actor(p), "idempotency_key": key, **kwargs}))

    # -- invariants

    @invariant()
    def database_agrees(self) -> None:
        self.run(
            check_database(
                self.engine, self.model, self.members, self.partners, self.promotions_before
            )
        )


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
