"""Bad requests are refused with a typed domain error and a stable code, and write nothing;
the database itself refuses what the code must never do (negative wallets, edits of the
journal, unbalanced transactions); the hot path costs the round trips it promises.

A refused call runs in a savepoint, the stand-in for the caller's unit of work, which rolls
back on any error. Inside it, before the rollback, we check that the refusal left the
transaction usable and wrote nothing but (at most) the claim of its idempotency key; after
it, that every table is exactly as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.errors import DomainError, ErrorCode
from ledger import service as ledger
from ledger.errors import (
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
from members.cards import luhn_check_digit
from members.errors import EmailTaken, InvalidCardNumber
from members.errors import MemberNotFound as CardNotFound
from partners import service as partners
from partners.errors import PartnerNotFound as UnknownPartner
from tests.conftest import StatementCounter
from tests.ledger.invariants import TABLES, row_counts, table_digest, violations

OPERATIONS = ("earn", "authorize", "capture", "void", "reverse_earn", "return_points")
WITH_POINTS = ("earn", "authorize", "capture", "reverse_earn", "return_points")


@dataclass
class World:
    """Partner `p` issues, partner `q` accepts points; member `m` has 100 points from `earn`."""

    conn: AsyncConnection
    t0: datetime
    p: partners.PartnerRecord
    q: partners.PartnerRecord
    m: members.MemberRecord
    earn: uuid.UUID  # 100 points, issued by p to m
    active: uuid.UUID  # q's live hold of 30 on m
    captured: uuid.UUID  # q's hold of 20 on m, 15 captured
    voided: uuid.UUID  # q's voided hold of 10 on m
    stale: uuid.UUID  # q's hold on another member, past its expiry, not yet released
    expired: uuid.UUID  # q's hold on a third member, expired and released

    def call(self, name: str, **overrides: Any) -> Callable[[], Awaitable[Any]]:
        """A valid call of ledger operation `name`, with some arguments replaced."""
        fn, args = {
            "earn": (
                ledger.earn,
                {"actor": "p", "member_id": self.m.id, "partner_id": self.p.id, "points": 10},
            ),
            "authorize": (
                ledger.authorize,
                {"actor": "q", "member_id": self.m.id, "partner_id": self.q.id, "points": 10},
            ),
            "capture": (
                ledger.capture,
                {"actor": "q", "partner_id": self.q.id, "hold_id": self.active, "points": 10},
            ),
            "void": (ledger.void, {"actor": "q", "partner_id": self.q.id, "hold_id": self.active}),
            "reverse_earn": (
                ledger.reverse_earn,
                {
                    "actor": "p",
                    "partner_id": self.p.id,
                    "earn_transaction_id": self.earn,
                    "points": 10,
                },
            ),
            "return_points": (
                ledger.return_points,
                {"actor": "q", "partner_id": self.q.id, "hold_id": self.captured, "points": 5},
            ),
        }[name]
        kwargs = {"idempotency_key": f"k-{uuid.uuid4()}", "at": self.t0, **args, **overrides}
        return lambda: fn(self.conn, **kwargs)  # type: ignore[operator]


def key_of(name: str) -> str:
    return f"{name}-{uuid.uuid4()}"


@pytest.fixture
async def world(conn: AsyncConnection) -> World:
    t0 = utcnow()
    earlier = t0 - timedelta(hours=3)
    p = await partners.create(conn, name="Issuer", category="fuel", currency="RUB")
    q = await partners.create(conn, name="Shop", category="shop", currency="RUB")
    m, m2, m3 = [await members.create(conn, name=n) for n in ("m", "m2", "m3")]

    async def earn(member: members.MemberRecord, points: int) -> ledger.EarnResult:
        return await ledger.earn(
            conn,
            actor="p",
            idempotency_key=key_of("e"),
            member_id=member.id,
            partner_id=p.id,
            points=points,
            at=earlier,
        )

    async def hold(member: members.MemberRecord, points: int, **kw: Any) -> uuid.UUID:
        kw.setdefault("at", t0)
        h = await ledger.authorize(
            conn,
            actor="q",
            idempotency_key=key_of("a"),
            member_id=member.id,
            partner_id=q.id,
            points=points,
            **kw,
        )
        return h.hold_id

    e = await earn(m, 100)
    await earn(m2, 50)
    await earn(m3, 50)
    active = await hold(m, 30, ttl=timedelta(days=1))
    captured = await hold(m, 20)
    await ledger.capture(
        conn,
        actor="q",
        idempotency_key=key_of("c"),
        partner_id=q.id,
        hold_id=captured,
        points=15,
        at=t0,
    )
    voided = await hold(m, 10)
    await ledger.void(
        conn, actor="q", idempotency_key=key_of("v"), partner_id=q.id, hold_id=voided, at=t0
    )
    stale = await hold(m2, 5, at=earlier, ttl=timedelta(minutes=30))
    expired = await hold(m3, 5, at=earlier, ttl=timedelta(minutes=30))
    await hold(m3, 1)  # releases m3's expired hold on the way
    status = await conn.execute(text("SELECT status FROM holds WHERE id = :h"), {"h": expired})
    assert status.scalar_one() == "expired"
    return World(conn, t0, p, q, m, e.transaction_id, active, captured, voided, stale, expired)


Snapshot = dict[str, tuple[int, str]]


async def snapshot(conn: AsyncConnection) -> Snapshot:
    counts, digests = await row_counts(conn), await table_digest(conn)
    return {t: (counts[t], digests[t]) for t in TABLES}


async def unclaimed_keys(conn: AsyncConnection) -> int:
    sql = "SELECT count(*) FROM idempotency_keys WHERE result IS NULL"
    return int((await conn.execute(text(sql))).scalar_one())


async def refused(
    conn: AsyncConnection,
    counter: StatementCounter,
    error: type[DomainError],
    code: ErrorCode,
    call: Callable[[], Awaitable[Any]],
    *,
    sql: bool = True,
) -> DomainError:
    """Assert `call` is refused with `error`/`code` and writes nothing. `sql=False`: it is
    refused before a single statement is sent."""
    before, claims = await snapshot(conn), await unclaimed_keys(conn)
    unit_of_work = await conn.begin_nested()
    try:
        counter.statements.clear()
        with pytest.raises(error) as info:
            await call()
        sent = list(counter.statements)
        assert info.value.code == code and str(info.value.code) == code.value
        assert info.value.message
        if not sql:
            assert sent == []
        # The refusal left the transaction usable (these queries run) and wrote nothing but,
        # perhaps, the claim of its key (which the rollback frees: a retry runs again).
        during = await snapshot(conn)
        changed = {t for t in TABLES if during[t] != before[t]}
        assert changed <= {"idempotency_keys"}, changed
        new_keys = during["idempotency_keys"][0] - before["idempotency_keys"][0]
        assert new_keys in (0, 1) and await unclaimed_keys(conn) == claims + new_keys
    finally:
        await unit_of_work.rollback()
    assert await snapshot(conn) == before
    return info.value


# ---------------------------------------------------------------------------------------------
# Baseline: every call below differs from one of these in exactly one argument


@pytest.mark.parametrize("name", OPERATIONS)
async def test_the_baseline_calls_succeed(world: World, name: str) -> None:
    sp = await world.conn.begin_nested()
    result = await world.call(name)()
    assert not result.replayed
    assert not await violations(world.conn)
    await sp.rollback()
    # the boundaries are accepted too
    sp = await world.conn.begin_nested()
    key = "k" * ledger.MAX_KEY_LENGTH
    await world.call(name, idempotency_key=key)()
    await sp.rollback()


async def test_the_largest_movement_is_accepted(world: World) -> None:
    r = await world.call("earn", points=ledger.MAX_POINTS)()
    assert r.points == ledger.MAX_POINTS
    assert (await ledger.balance(world.conn, member_id=world.m.id)).wallet == 85 + ledger.MAX_POINTS


# ---------------------------------------------------------------------------------------------
# Input: refused before any statement


BAD_POINTS = [
    0,
    -1,
    -ledger.MAX_POINTS,
    1.5,
    10.0,
    Decimal(10),
    "10",
    None,
    True,
    False,
    ledger.MAX_POINTS + 1,
    10**30,
]


@pytest.mark.parametrize("points", BAD_POINTS, ids=repr)
@pytest.mark.parametrize("name", WITH_POINTS)
async def test_bad_points_are_refused(
    world: World, count_statements: StatementCounter, name: str, points: Any
) -> None:
    err = await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        world.call(name, points=points),
        sql=False,
    )
    assert "points" in err.message


BAD_KEYS = ["", " ", "\t\n", "k" * (ledger.MAX_KEY_LENGTH + 1), None, 42]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: repr(k)[:20])
@pytest.mark.parametrize("name", OPERATIONS)
async def test_bad_idempotency_keys_are_refused(
    world: World, count_statements: StatementCounter, name: str, key: Any
) -> None:
    err = await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        world.call(name, idempotency_key=key),
        sql=False,
    )
    assert "idempotency key" in err.message


@pytest.mark.parametrize("name", OPERATIONS)
async def test_naive_datetimes_are_refused(
    world: World, count_statements: StatementCounter, name: str
) -> None:
    naive = datetime(2026, 11, 22, 12, 0)
    await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        world.call(name, at=naive),
        sql=False,
    )


async def test_naive_datetime_in_a_balance_is_refused(
    world: World, count_statements: StatementCounter
) -> None:
    await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        lambda: ledger.balance(world.conn, member_id=world.m.id, at=datetime(2026, 1, 1)),
        sql=False,
    )


@pytest.mark.parametrize("hold_days", [-1, 366, 10**6])
async def test_hold_days_out_of_range_are_refused(
    world: World, count_statements: StatementCounter, hold_days: int
) -> None:
    await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        world.call("earn", hold_days=hold_days),
        sql=False,
    )


# ---------------------------------------------------------------------------------------------
# Unknown things


@pytest.mark.parametrize("name", ["earn", "authorize"])
async def test_unknown_member(world: World, count_statements: StatementCounter, name: str) -> None:
    err = await refused(
        world.conn,
        count_statements,
        MemberNotFound,
        ErrorCode.MEMBER_NOT_FOUND,
        world.call(name, member_id=uuid.uuid4()),
    )
    assert err.code == "MEMBER_NOT_FOUND"


async def test_unknown_member_balance(world: World, count_statements: StatementCounter) -> None:
    await refused(
        world.conn,
        count_statements,
        MemberNotFound,
        ErrorCode.MEMBER_NOT_FOUND,
        lambda: ledger.balance(world.conn, member_id=uuid.uuid4()),
    )


@pytest.mark.parametrize("name", ["earn", "authorize"])
async def test_unknown_partner(world: World, count_statements: StatementCounter, name: str) -> None:
    await refused(
        world.conn,
        count_statements,
        PartnerNotFound,
        ErrorCode.PARTNER_NOT_FOUND,
        world.call(name, partner_id=uuid.uuid4()),
    )


@pytest.mark.parametrize("name", ["capture", "void", "return_points"])
@pytest.mark.parametrize("whose", ["unknown", "another partner's"])
async def test_unknown_or_foreign_hold(
    world: World, count_statements: StatementCounter, name: str, whose: str
) -> None:
    # Another partner's hold is indistinguishable from one that does not exist.
    over = {"hold_id": uuid.uuid4()} if whose == "unknown" else {"partner_id": world.p.id}
    await refused(
        world.conn,
        count_statements,
        HoldNotFound,
        ErrorCode.HOLD_NOT_FOUND,
        world.call(name, **over),
    )


@pytest.mark.parametrize("what", ["unknown", "another partner's", "not an earn"])
async def test_reversal_of_an_unknown_or_foreign_earn(
    world: World, count_statements: StatementCounter, what: str
) -> None:
    capture_tx = (
        await world.conn.execute(
            text("SELECT capture_tx_id FROM holds WHERE id = :h"), {"h": world.captured}
        )
    ).scalar_one()
    over = {
        "unknown": {"earn_transaction_id": uuid.uuid4()},
        "another partner's": {"partner_id": world.q.id, "actor": "q"},
        "not an earn": {"earn_transaction_id": capture_tx, "partner_id": world.q.id},
    }[what]
    await refused(
        world.conn,
        count_statements,
        TransactionNotFound,
        ErrorCode.TRANSACTION_NOT_FOUND,
        world.call("reverse_earn", **over),
    )


# ---------------------------------------------------------------------------------------------
# Holds that are not active any more


@pytest.mark.parametrize("name", ["capture", "void"])
@pytest.mark.parametrize("state", ["captured", "voided", "stale", "expired"])
async def test_resolved_or_expired_hold_is_not_active(
    world: World, count_statements: StatementCounter, name: str, state: str
) -> None:
    hold = getattr(world, state)
    err = await refused(
        world.conn,
        count_statements,
        HoldNotActive,
        ErrorCode.HOLD_NOT_ACTIVE,
        world.call(name, hold_id=hold, points=1)
        if name == "capture"
        else world.call(name, hold_id=hold),
    )
    assert err.code == "HOLD_NOT_ACTIVE"
    assert ("expired" if state == "stale" else state) in err.message


async def test_a_hold_expires_at_its_expiry_instant(
    world: World, count_statements: StatementCounter
) -> None:
    expires_at = (
        await world.conn.execute(
            text("SELECT expires_at FROM holds WHERE id = :h"), {"h": world.active}
        )
    ).scalar_one()
    await refused(
        world.conn,
        count_statements,
        HoldNotActive,
        ErrorCode.HOLD_NOT_ACTIVE,
        world.call("capture", at=expires_at),
    )
    sp = await world.conn.begin_nested()
    await world.call("capture", at=expires_at - timedelta(microseconds=1))()
    await sp.rollback()


@pytest.mark.parametrize("points", [31, 1000])
async def test_capture_above_the_hold(
    world: World, count_statements: StatementCounter, points: int
) -> None:
    err = await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        world.call("capture", points=points),
    )
    assert err.code == "VALIDATION"
    r = await world.call("capture", points=30)()  # the whole hold is fine
    assert (r.points, r.released) == (30, 0)


@pytest.mark.parametrize("state", ["active", "voided", "stale"])
async def test_return_of_a_hold_that_was_not_captured(
    world: World, count_statements: StatementCounter, state: str
) -> None:
    await refused(
        world.conn,
        count_statements,
        HoldNotActive,
        ErrorCode.HOLD_NOT_ACTIVE,
        world.call("return_points", hold_id=getattr(world, state), points=1),
    )


async def test_return_above_what_was_captured(
    world: World, count_statements: StatementCounter
) -> None:
    await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        world.call("return_points", points=16),
    )
    await world.call("return_points", points=10)()
    await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        world.call("return_points", points=6),
    )
    r = await world.call("return_points", points=5)()
    assert r.points == 5


async def test_reversal_above_what_was_earned(
    world: World, count_statements: StatementCounter
) -> None:
    await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        world.call("reverse_earn", points=101),
    )
    await world.call("reverse_earn", points=60)()
    await refused(
        world.conn,
        count_statements,
        LedgerValidation,
        ErrorCode.VALIDATION,
        world.call("reverse_earn", points=41),
    )
    r = await world.call("reverse_earn", points=40)()
    assert r.points == 40


# ---------------------------------------------------------------------------------------------
# Spending and idempotency refusals


async def test_spending_more_than_available(
    world: World, count_statements: StatementCounter
) -> None:
    # 100 earned, 30 + 15 held or captured: 55 spendable; pending points do not count.
    await ledger.earn(
        world.conn,
        actor="p",
        idempotency_key=key_of("e"),
        member_id=world.m.id,
        partner_id=world.p.id,
        points=500,
        hold_days=14,
        at=world.t0,
    )
    b = await ledger.balance(world.conn, member_id=world.m.id, at=world.t0)
    assert (b.available, b.pending) == (55, 500)
    err = await refused(
        world.conn,
        count_statements,
        InsufficientPoints,
        ErrorCode.INSUFFICIENT_POINTS,
        world.call("authorize", points=56),
    )
    assert err.details == {"available": 55}
    assert (await world.call("authorize", points=55)()).points == 55


async def test_same_key_for_a_different_request(
    world: World, count_statements: StatementCounter
) -> None:
    key = key_of("same")
    first = await world.call("earn", idempotency_key=key, points=10)()
    await refused(
        world.conn,
        count_statements,
        IdempotencyConflict,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        world.call("earn", idempotency_key=key, points=11),
    )
    other = await partners.create(world.conn, name="Other", category="x", currency="RUB")
    await refused(
        world.conn,
        count_statements,
        IdempotencyConflict,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        world.call("earn", idempotency_key=key, partner_id=other.id),
    )
    again = await world.call("earn", idempotency_key=key, points=10)()
    assert again.replayed and again.transaction_id == first.transaction_id


# ---------------------------------------------------------------------------------------------
# Members and partners


async def test_member_and_partner_refusals(
    world: World, count_statements: StatementCounter
) -> None:
    c = world.conn
    await members.create(c, email="Taken@Example.com")
    bad_card = world.m.card_number[:-1] + str((int(world.m.card_number[-1]) + 1) % 10)
    await refused(
        c,
        count_statements,
        InvalidCardNumber,
        ErrorCode.VALIDATION,
        lambda: members.create(c, card_number=bad_card),
        sql=False,
    )
    await refused(
        c,
        count_statements,
        InvalidCardNumber,
        ErrorCode.VALIDATION,
        lambda: members.create(c, card_number=world.m.card_number),
    )
    await refused(
        c,
        count_statements,
        EmailTaken,
        ErrorCode.VALIDATION,
        lambda: members.create(c, email="taken@example.COM"),
    )
    await refused(
        c,
        count_statements,
        InvalidCardNumber,
        ErrorCode.VALIDATION,
        lambda: members.get_by_card(c, card_number=bad_card),
        sql=False,
    )
    unknown = "7" + "0" * 14
    unknown += luhn_check_digit(unknown)
    await refused(
        c,
        count_statements,
        CardNotFound,
        ErrorCode.MEMBER_NOT_FOUND,
        lambda: members.get_by_card(c, card_number=unknown),
    )
    assert (await members.get_by_card(c, card_number=world.m.card_number)).id == world.m.id
    for kw in (
        {"name": " "},
        {"currency": "RUBL"},
        {"currency": "R1B"},
        {"hold_days": -1},
        {"hold_days": 366},
        {"category": ""},
    ):
        args = {"name": "N", "category": "shop", "currency": "RUB", **kw}
        await refused(
            c,
            count_statements,
            DomainError,
            ErrorCode.VALIDATION,
            lambda args=args: partners.create(c, **args),
            sql=False,
        )
    await refused(
        c,
        count_statements,
        UnknownPartner,
        ErrorCode.PARTNER_NOT_FOUND,
        lambda: partners.get(c, partner_id=uuid.uuid4()),
    )


# ---------------------------------------------------------------------------------------------
# What the database refuses, whatever the code does


async def db_refuses(conn: AsyncConnection, sqlstate: str, sql: str, **params: Any) -> str:
    """Run raw `sql` in a savepoint; it must fail with `sqlstate`; returns the message."""
    before = await snapshot(conn)
    sp = await conn.begin_nested()
    try:
        with pytest.raises(IntegrityError) as info:
            await conn.execute(text(sql), params)
    finally:
        await sp.rollback()
    assert info.value.orig.sqlstate == sqlstate, info.value  # type: ignore[union-attr]
    assert await snapshot(conn) == before
    return str(info.value.orig)


CHECK_VIOLATION, RESTRICT_VIOLATION, FOREIGN_KEY_VIOLATION = "23514", "23001", "23503"


async def wallet_of(conn: AsyncConnection, member_id: uuid.UUID, kind: str = "wallet") -> int:
    sql = "SELECT id FROM accounts WHERE kind = :k AND owner_id = :m"
    return int((await conn.execute(text(sql), {"k": kind, "m": member_id})).scalar_one())


async def test_a_wallet_never_goes_negative_even_in_raw_sql(world: World) -> None:
    c, wallet = world.conn, await wallet_of(world.conn, world.m.id)
    msg = await db_refuses(
        c, CHECK_VIOLATION, "UPDATE accounts SET balance = -1 WHERE id = :w", w=wallet
    )
    assert "ck_accounts_wallet_nonnegative" in msg
    debt = await wallet_of(c, world.m.id, "debt")
    await db_refuses(c, CHECK_VIOLATION, "UPDATE accounts SET balance = 1 WHERE id = :d", d=debt)
    # A balanced transaction that takes more than the wallet holds: the trigger's balance
    # update hits the CHECK.
    issuance = (
        await c.execute(
            text("SELECT id FROM accounts WHERE kind = 'issuance' AND owner_id = :p"),
            {"p": world.p.id},
        )
    ).scalar_one()
    balance = (await ledger.balance(c, member_id=world.m.id, at=world.t0)).wallet
    tx = uuid.uuid4()
    msg = await db_refuses(
        c,
        CHECK_VIOLATION,
        """
        WITH t AS (INSERT INTO transactions (id, kind, points, effective_at, actor)
                   VALUES (:tx, 'adjustment', :n, now(), 'raw'))
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        VALUES (:tx, :w, -CAST(:n AS bigint), now(), 'raw'), (:tx, :i, :n, now(), 'raw')
        """,
        tx=tx,
        w=wallet,
        i=issuance,
        n=balance + 1,
    )
    assert "ck_accounts_wallet_nonnegative" in msg


@pytest.mark.parametrize("table", ["entries", "transactions", "lot_postings"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {t} SET actor = 'forger'",
        "UPDATE {t} SET actor = 'forger' WHERE false",
        "DELETE FROM {t}",
        "DELETE FROM {t} WHERE false",
        "TRUNCATE {t} CASCADE",
    ],
)
async def test_the_journal_is_insert_only(world: World, table: str, statement: str) -> None:
    msg = await db_refuses(world.conn, RESTRICT_VIOLATION, statement.format(t=table))
    assert "insert-only" in msg


async def test_unbalanced_entries_are_refused(world: World) -> None:
    c, wallet = world.conn, await wallet_of(world.conn, world.m.id)
    tx = uuid.uuid4()
    await c.execute(
        text(
            "INSERT INTO transactions (id, kind, points, effective_at, actor) "
            "VALUES (:tx, 'adjustment', 5, now(), 'raw')"
        ),
        {"tx": tx},
    )
    adjustments = (
        await c.execute(text("SELECT id FROM accounts WHERE kind = 'adjustments'"))
    ).scalar_one()
    insert = (
        "INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor) VALUES {}"
    )
    msg = await db_refuses(
        c, CHECK_VIOLATION, insert.format("(:tx, :w, 5, now(), 'raw')"), tx=tx, w=wallet
    )
    assert "does not sum to zero" in msg
    await db_refuses(
        c,
        CHECK_VIOLATION,
        insert.format("(:tx, :w, 5, now(), 'raw'), (:tx, :a, -4, now(), 'raw')"),
        tx=tx,
        w=wallet,
        a=adjustments,
    )
    # Balanced overall, but not within each transaction of the statement.
    tx2 = uuid.uuid4()
    await c.execute(
        text(
            "INSERT INTO transactions (id, kind, points, effective_at, actor) "
            "VALUES (:tx, 'adjustment', 5, now(), 'raw')"
        ),
        {"tx": tx2},
    )
    await db_refuses(
        c,
        CHECK_VIOLATION,
        insert.format("(:tx, :w, 5, now(), 'raw'), (:tx2, :a, -5, now(), 'raw')"),
        tx=tx,
        tx2=tx2,
        w=wallet,
        a=adjustments,
    )
    # The same legs in one statement and one transaction are accepted (the trigger is not
    # simply refusing everything), and the stored balance follows.
    before = (await ledger.balance(c, member_id=world.m.id, at=world.t0)).wallet
    await c.execute(
        text(insert.format("(:tx, :w, -5, now(), 'raw'), (:tx, :a, 5, now(), 'raw')")),
        {"tx": tx, "w": wallet, "a": adjustments},
    )
    assert (await ledger.balance(c, member_id=world.m.id, at=world.t0)).wallet == before - 5


async def test_entries_must_name_an_existing_transaction_and_account(world: World) -> None:
    """The per-statement check that replaced the entries' foreign keys (migration 0006) refuses
    what the keys refused, also when good entries come in the same statement."""
    c, wallet = world.conn, await wallet_of(world.conn, world.m.id)
    adjustments = (
        await c.execute(text("SELECT id FROM accounts WHERE kind = 'adjustments'"))
    ).scalar_one()
    tx, tx2 = uuid.uuid4(), uuid.uuid4()
    for t in (tx, tx2):
        await c.execute(
            text(
                "INSERT INTO transactions (id, kind, points, effective_at, actor) "
                "VALUES (:tx, 'adjustment', 5, now(), 'raw')"
            ),
            {"tx": t},
        )
    entries = (
        "INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor) VALUES "
        "(:tx2, :w, 5, now(), 'raw'), (:tx2, :a, -5, now(), 'raw'), "
    )
    ghost = uuid.uuid4()
    msg = await db_refuses(
        c,
        CHECK_VIOLATION,
        entries + "(:g, :w, 5, now(), 'raw'), (:g, :a, -5, now(), 'raw')",
        tx2=tx2,
        g=ghost,
        w=wallet,
        a=adjustments,
    )
    assert f"{ghost} does not exist" in msg
    msg = await db_refuses(
        c,
        CHECK_VIOLATION,
        entries + "(:tx, :w, 5, now(), 'raw'), (:tx, 987654321, -5, now(), 'raw')",
        tx=tx,
        tx2=tx2,
        w=wallet,
        a=adjustments,
    )
    assert "unknown account 987654321" in msg
    # The well-formed entries alone pass the same check, and the stored balance follows.
    before = (await ledger.balance(c, member_id=world.m.id, at=world.t0)).wallet
    await c.execute(text(entries.rstrip(", ")), {"tx2": tx2, "w": wallet, "a": adjustments})
    assert (await ledger.balance(c, member_id=world.m.id, at=world.t0)).wallet == before + 5


async def test_lots_must_name_existing_transactions_wallet_and_origin(world: World) -> None:
    """The per-statement check that replaced the lots' foreign keys (migration 0026) refuses
    what the keys refused, also when a good lot comes in the same statement."""
    c, wallet = world.conn, await wallet_of(world.conn, world.m.id)
    origin = (
        await c.execute(text("SELECT id FROM lots WHERE earn_tx_id = :e"), {"e": world.earn})
    ).scalar_one()
    transfer = uuid.uuid4()
    await c.execute(
        text(
            "INSERT INTO transactions (id, kind, points, effective_at, actor) "
            "VALUES (:tx, 'adjustment', 1, now(), 'raw')"
        ),
        {"tx": transfer},
    )
    row = (
        "(:m{s}, :w{s}, :e{s}, 1, 1, now(), now(), now() + interval '1 year', 'raw', :o{s}, :t{s})"
    )
    insert = (
        "INSERT INTO lots (member_id, wallet_id, earn_tx_id, points, remaining, earned_at, "
        "available_at, expires_at, actor, origin_lot_id, transfer_tx_id) VALUES "
    ) + row.format(s="")
    good = {"m": world.m.id, "w": wallet, "e": world.earn, "o": origin, "t": transfer}
    ghost = uuid.uuid4()
    for column, value, named in (
        ("e", ghost, f"earn transaction {ghost}"),
        ("t", ghost, f"transfer transaction {ghost}"),
        ("w", 987654321, "wallet 987654321"),
        ("o", 987654321, "origin lot 987654321"),
    ):
        bad = {f"{k}2": v for k, v in {**good, column: value}.items()}
        sql = f"{insert}, {row.format(s='2')}"
        msg = await db_refuses(c, FOREIGN_KEY_VIOLATION, sql, **good, **bad)
        assert f"lot names unknown {named}" in msg
    # The good lot alone passes the same check.
    await c.execute(text(insert), good)
    assert (
        await c.execute(text("SELECT count(*) FROM lots WHERE origin_lot_id = :o"), {"o": origin})
    ).scalar_one() == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE lots SET wallet_id = wallet_id WHERE false",
        "UPDATE lots SET earn_tx_id = earn_tx_id WHERE false",
        "UPDATE lots SET origin_lot_id = origin_lot_id, remaining = remaining WHERE false",
        "UPDATE lots SET transfer_tx_id = NULL WHERE false",
        "DELETE FROM lots WHERE false",
        "TRUNCATE lots CASCADE",
    ],
)
async def test_lots_references_never_change(world: World, statement: str) -> None:
    """What the lots' foreign keys also prevented: a reference changed or a referenced lot gone."""
    msg = await db_refuses(world.conn, RESTRICT_VIOLATION, statement)
    assert "lots are permanent" in msg or "never change" in msg
    # What the ledger does update (remaining, reversed) still works.
    await world.conn.execute(text("UPDATE lots SET remaining = remaining, reversed = reversed"))


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM accounts WHERE id = :w",
        "DELETE FROM accounts WHERE false",
        "TRUNCATE accounts CASCADE",
    ],
)
async def test_accounts_are_permanent(world: World, statement: str) -> None:
    wallet = await wallet_of(world.conn, world.m.id)
    msg = await db_refuses(world.conn, RESTRICT_VIOLATION, statement, w=wallet)
    assert "accounts are permanent" in msg


# ---------------------------------------------------------------------------------------------
# Round trips


async def test_earn_costs_two_statements_and_so_does_its_replay(
    world: World, count_statements: StatementCounter
) -> None:
    c, key = world.conn, key_of("e")
    for replay in (False, True, True):
        count_statements.statements.clear()
        r = await world.call("earn", idempotency_key=key, points=7)()
        assert r.replayed is replay
        assert count_statements.count == 2, count_statements.statements

    # Also a pending earn, and one that repays a debt first.
    await ledger.reverse_earn(
        c,
        actor="p",
        idempotency_key=key_of("r"),
        partner_id=world.p.id,
        earn_transaction_id=world.earn,
        points=100,
        at=world.t0,
    )
    assert (await ledger.balance(c, member_id=world.m.id, at=world.t0)).debt > 0
    for kw in ({"points": 500}, {"points": 5, "hold_days": 14}):
        count_statements.statements.clear()
        r = await world.call("earn", **kw)()
        assert count_statements.count == 2, count_statements.statements
    assert r.status == "pending"
    b = await ledger.balance(c, member_id=world.m.id, at=world.t0)
    assert b.debt == 0


@pytest.mark.parametrize(
    "line",
    [
        ledger.BreakdownLine("BONUS", 10),
        ledger.BreakdownLine("OFFER", 10),  # an OFFER line names its offer
        ledger.BreakdownLine("TIER", 10, uuid.UUID(int=1)),  # only an OFFER line does
        ledger.BreakdownLine("OFFER", 10, uuid.UUID(int=1), "SOMEONE"),
        ledger.BreakdownLine("TIER", -5),
    ],
)
def test_a_malformed_breakdown_line_is_refused(line: ledger.BreakdownLine) -> None:
    """The breakdown is stored as one JSON array (`earn_breakdowns`): the ledger checks each
    line before writing, in place of per-line column constraints."""
    base = ledger.BreakdownLine("BASE", 20)
    request = ledger.EarnRequest(
        actor="t",
        idempotency_key="k",
        member_id=uuid.UUID(int=2),
        partner_id=uuid.UUID(int=3),
        points=20 + line.points,
        lines=(base, line),
    )
    with pytest.raises(LedgerValidation):
        ledger.check_earn(request)
    ledger.check_earn(  # the same earn with a well-formed line passes
        replace(
            request,
            lines=(base, ledger.BreakdownLine("TIER", line.points % 7)),
            points=20 + line.points % 7,
        )
    )
