"""The ledger: every movement of the coalition currency goes through these functions.

Rules (DOMAIN.md "Ledger"):
- Double entry. A transaction's entries are written by ONE statement and the database refuses
  any statement whose entries do not sum to zero per transaction (trigger in migration 0001).
  Entries are insert-only. Member wallet/debt rows keep a stored balance (the trigger adds the
  entries to it); partner and operator accounts have none, so no partner row is ever locked.
- Lots: an earn creates a lot; spending consumes lots earliest-expiry first, ties by earning
  order; every consumption or return of a lot is a `lot_postings` row.
- Holds: authorize reserves points from lots (lots.remaining drops, wallet balance does not);
  capture posts up to the hold and releases the rest; void/expiry releases everything.
  So: wallet balance = sum(lots.remaining) + points reserved by active holds.
- Idempotency: (key space, operation, key) is unique in the database. A key space is whose keys
  they are: a partner's (all of its OAuth clients share it), a member's, the operator's
  (`partner_key_space` etc.); it defaults to the actor. The actor (the client) is recorded
  beside the key. The key is claimed first in the transaction; a concurrent request with the same key waits on the unique index until the
  first one commits (then replays its stored result) or rolls back (then runs itself).
  Failures store nothing: the key stays free and a retry runs again.

Lock order, everywhere, so that two transactions can never deadlock: the idempotency key, then
the member's wallet and debt rows (by account id), then the hold, then the member's lots. The
expiry job locks many wallets, always in ascending id order.

Every function takes the caller's connection and never commits: the caller's unit of work does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from calendar import monthrange
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.clock import ensure_aware, utcnow
from core.ids import uuid7
from core.text import UNSTORABLE_TEXT, storable
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
from ledger.models import AccountKind, HoldStatus

MAX_POINTS = 1_000_000_000  # per movement; beyond this a request is refused as absurd
MAX_KEY_LENGTH = 200
DEFAULT_VALIDITY_MONTHS = 36
DEFAULT_HOLD_TTL = timedelta(minutes=30)


# ---------------------------------------------------------------------------------------------
# Results (also what idempotent replays return: stored as JSON, rebuilt unchanged)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # uuid, datetime (isoformat with a space, as before), Decimal


@dataclass(frozen=True)
class _Result:
    replayed: bool = field(default=False, kw_only=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The stored form: JSON-ready values (uuids and datetimes as strings)."""
        return {name: _jsonable(value) for name, value in self.stored_values().items()}

    def stored_values(self) -> dict[str, Any]:
        """The stored fields with their own values (for an encoder that writes uuids and
        datetimes itself, as orjson in ledger.batch)."""
        # The fields are flat values: read them directly (asdict deep-copies each one, and this
        # runs on every earn).
        return {name: getattr(self, name) for name in self._stored_fields()}

    @classmethod
    @functools.cache
    def _stored_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "replayed")

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool):  # type: ignore[no-untyped-def]
        kwargs = dict(data)
        for name, f in cls.__dataclass_fields__.items():
            if name in kwargs and kwargs[name] is not None:
                if f.type in ("uuid.UUID", "uuid.UUID | None"):
                    kwargs[name] = uuid.UUID(kwargs[name])
                elif f.type in ("datetime", "datetime | None"):
                    kwargs[name] = datetime.fromisoformat(kwargs[name])
        return cls(**kwargs, replayed=replayed)


@dataclass(frozen=True)
class EarnResult(_Result):
    transaction_id: uuid.UUID
    points: int
    status: Literal["pending", "available"]
    available_at: datetime
    expires_at: datetime
    debt_repaid: int = 0


@dataclass(frozen=True)
class HoldResult(_Result):
    hold_id: uuid.UUID
    points: int
    expires_at: datetime
    status: str = HoldStatus.ACTIVE


@dataclass(frozen=True)
class CaptureResult(_Result):
    transaction_id: uuid.UUID
    hold_id: uuid.UUID
    points: int
    released: int


@dataclass(frozen=True)
class VoidResult(_Result):
    hold_id: uuid.UUID
    released: int


@dataclass(frozen=True)
class ReversalResult(_Result):
    transaction_id: uuid.UUID
    points: int
    from_wallet: int
    to_debt: int


@dataclass(frozen=True)
class ReturnResult(_Result):
    transaction_id: uuid.UUID
    hold_id: uuid.UUID
    points: int


@dataclass(frozen=True)
class Balance:
    """A member's points at an instant."""

    wallet: int  # stored balance: remaining lots (incl. not yet swept expired) + active holds
    available: int  # spendable now
    pending: int  # earned, still in the partner's return window
    on_hold: int  # reserved by live authorizations
    expiring: int  # available or pending, expiring within the horizon
    debt: int  # points owed (>= 0), repaid by later earnings

    @property
    def total(self) -> int:
        """The member's points now: available + pending + on hold."""
        # Not `wallet`: that still holds lots that expired since the last expiry run, which
        # are gone (DOMAIN.md) and which the points liability no longer counts.
        return self.available + self.pending + self.on_hold


@dataclass(frozen=True)
class ExpiryReport:
    members: int
    lots: int
    points: int
    batches: int


# ---------------------------------------------------------------------------------------------
# Helpers


def request_hash(operation: str, payload: dict[str, Any]) -> str:
    """A stable digest of a request, to tell a replay from a different request."""
    raw = json.dumps(
        {"op": operation, **payload}, sort_keys=True, default=str, separators=(",", ":")
    )
    return hashlib.sha256(raw.encode()).hexdigest()


def client_digest(operation: str, *values: str | None) -> str:
    """The digest of what a client sent (never what the server derived from it): each value
    length-prefixed, so that no two requests run together; cheaper than JSON on the earn path.
    Migration 0007 computes the same digest in SQL: keep the two in step."""
    raw = ",".join([operation, *("-" if v is None else f"{len(v)}:{v}" for v in values)])
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def earn_request_digest(
    *, card_number: str, amount: Decimal, currency: str, category: str | None, ref: str
) -> str:
    """An earn request as the partner sent it (the amount at the ledger's scale, 4 places)."""
    return client_digest("earn", card_number, f"{amount:.4f}", currency, category, ref)


def partner_key_space(partner_id: uuid.UUID) -> str:
    """The idempotency key space of a partner: every one of its OAuth clients uses it."""
    return f"partner:{partner_id}"


def member_key_space(member_id: uuid.UUID) -> str:
    """The idempotency key space of a member (whichever app they call through)."""
    return f"member:{member_id}"


OPERATOR_KEY_SPACE = "operator"


def _check_points(points: Any, what: str = "points") -> int:
    if isinstance(points, bool) or not isinstance(points, int):
        raise LedgerValidation(f"{what} must be a whole number")
    if points <= 0:
        raise LedgerValidation(f"{what} must be positive")
    if points > MAX_POINTS:
        raise LedgerValidation(f"{what} must not exceed {MAX_POINTS}")
    return points


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise LedgerValidation(f"idempotency key must be 1..{MAX_KEY_LENGTH} characters")
    _check_text(key, "idempotency key")
    return key


def _check_text(value: str | None, what: str) -> None:
    # Refused here, before any statement: mid-transaction the database would refuse it, and in
    # a group-commit batch it would fail every other earn of the batch (ledger.batch).
    if value is not None and not storable(value):
        raise LedgerValidation(f"{what} {UNSTORABLE_TEXT}")


def _at(at: datetime | None) -> datetime:
    if at is None:
        return utcnow()
    try:
        return ensure_aware(at)
    except ValueError as exc:
        raise LedgerValidation(str(exc)) from None


_REPLAY = text(
    "SELECT request_hash, result FROM idempotency_keys "
    "WHERE key_space = :space AND operation = :op AND key = :key"
)


async def _replay(
    conn: AsyncConnection, space: str, op: str, key: str, digest: str
) -> dict[str, Any]:
    row = (await conn.execute(_REPLAY, {"space": space, "op": op, "key": key})).one()
    return _replayed(row, op, key, digest)


def _replayed(row: Any, op: str, key: str, digest: str) -> dict[str, Any]:
    if row.request_hash != digest:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used for a different {op} request"
        )
    return row.result  # type: ignore[no-any-return]


async def stored_result(
    conn: AsyncConnection, *, key_space: str, operation: str, key: str, digest: str
) -> dict[str, Any] | None:
    """The stored result of an earlier request under this key (None: the key is unused).

    For a request the current rules would refuse: its replay still gets the original result.
    A different request under the key is a conflict."""
    row = (
        await conn.execute(_REPLAY, {"space": key_space, "op": operation, "key": key})
    ).one_or_none()
    if row is None or row.result is None:
        return None
    return _replayed(row, operation, key, digest)


# Claim the key, then (only if claimed: LATERAL makes the lock wait for the claim) lock the
# member's wallet and debt rows in id order. Zero rows: the key exists already -> replay.
_CLAIM_AND_LOCK = text(
    """
    WITH claim AS (
        INSERT INTO idempotency_keys (key_space, actor, operation, key, request_hash)
        VALUES (:space, :actor, :op, :key, :hash)
        ON CONFLICT (key_space, operation, key) DO NOTHING
        RETURNING id
    )
    SELECT claim.id AS claim_id,
           max(a.id) FILTER (WHERE a.kind = 'wallet') AS wallet_id,
           max(a.id) FILTER (WHERE a.kind = 'debt') AS debt_id,
           max(a.balance) FILTER (WHERE a.kind = 'debt') AS debt_balance,
           (SELECT id FROM accounts WHERE kind = :partner_kind AND owner_id = :partner)
               AS partner_account_id
    FROM claim
    LEFT JOIN LATERAL (
        SELECT id, kind, balance FROM accounts
        WHERE owner_id = :member AND kind IN ('wallet', 'debt')
        ORDER BY id
        FOR UPDATE
    ) a ON true
    GROUP BY claim.id
    """
)


@dataclass(frozen=True)
class _Claim:
    claim_id: int
    wallet_id: int
    debt_id: int
    debt: int  # <= 0
    partner_account_id: int | None


async def _claim_and_lock(
    conn: AsyncConnection,
    *,
    actor: str,
    space: str | None,
    op: str,
    key: str,
    digest: str,
    member_id: uuid.UUID,
    partner_id: uuid.UUID | None = None,
    partner_kind: str = AccountKind.ISSUANCE,
) -> _Claim | dict[str, Any]:
    """Claim the idempotency key and lock the member; a dict means: replay this result."""
    space = space or actor
    row = (
        await conn.execute(
            _CLAIM_AND_LOCK,
            {
                "space": space,
                "actor": actor,
                "op": op,
                "key": key,
                "hash": digest,
                "member": member_id,
                "partner": partner_id,
                "partner_kind": partner_kind,
            },
        )
    ).one_or_none()
    if row is None:
        return await _replay(conn, space, op, key, digest)
    if row.wallet_id is None:
        raise MemberNotFound(f"member {member_id} not found")
    if partner_id is not None and row.partner_account_id is None:
        raise PartnerNotFound(f"partner {partner_id} not found")
    return _Claim(
        row.claim_id, row.wallet_id, row.debt_id, row.debt_balance, row.partner_account_id
    )


_STORE_RESULT = "UPDATE idempotency_keys SET result = CAST(:result AS jsonb) WHERE id = :claim"

_CLAIM = text(
    "INSERT INTO idempotency_keys (key_space, actor, operation, key, request_hash) "
    "VALUES (:space, :actor, :op, :key, :hash) "
    "ON CONFLICT (key_space, operation, key) DO NOTHING RETURNING id"
)


async def claim_key(
    conn: AsyncConnection,
    *,
    actor: str,
    operation: str,
    key: str,
    payload: dict[str, Any],
    key_space: str | None = None,
) -> int | dict[str, Any]:
    """Claim an idempotency key for a composite use case (before any other lock).

    Returns the claim id to pass to `store_key_result`, or the stored result of the original
    request (a dict) when this is a replay; a different request under the key is a conflict.
    `payload` is what the client sent, nothing derived from it."""
    _check_key(key)
    digest = request_hash(operation, payload)
    space = key_space or actor
    params = {"space": space, "actor": actor, "op": operation, "key": key, "hash": digest}
    claim_id = (await conn.execute(_CLAIM, params)).scalar_one_or_none()
    if claim_id is None:
        return await _replay(conn, space, operation, key, digest)
    return int(claim_id)


async def store_key_result(conn: AsyncConnection, *, claim_id: int, result: dict[str, Any]) -> None:
    """Record the result that replays of a claimed key will get."""
    await conn.execute(
        text(_STORE_RESULT), {"claim": claim_id, "result": json.dumps(result, default=str)}
    )


# Release this member's holds whose time ran out: their reserved points go back to their lots.
_RELEASE_STALE_HOLDS = text(
    """
    WITH h AS (
        UPDATE holds SET status = 'expired', resolved_at = expires_at
        WHERE wallet_id = ANY(:wallets) AND status = 'active' AND expires_at <= :at
        RETURNING id
    ), back AS (
        SELECT a.lot_id, sum(a.points) AS pts
        FROM hold_allocations a JOIN h ON h.id = a.hold_id
        GROUP BY a.lot_id
    )
    UPDATE lots l SET remaining = l.remaining + back.pts FROM back WHERE l.id = back.lot_id
    """
)


async def _release_stale_holds(conn: AsyncConnection, wallet_ids: list[int], at: datetime) -> None:
    await conn.execute(_RELEASE_STALE_HOLDS, {"wallets": wallet_ids, "at": at})


# ---------------------------------------------------------------------------------------------
# Accounts


async def open_member_accounts(conn: AsyncConnection, *, member_id: uuid.UUID) -> None:
    """Create a member's wallet and debt accounts (wallet first: lower id, locked first)."""
    await conn.execute(
        text(
            "INSERT INTO accounts (kind, owner_id, balance) "
            "VALUES ('wallet', :m, 0), ('debt', :m, 0)"
        ),
        {"m": member_id},
    )


async def open_partner_accounts(conn: AsyncConnection, *, partner_id: uuid.UUID) -> None:
    """Create a partner's issuance and redemption accounts (balances derived from entries)."""
    await conn.execute(
        text("INSERT INTO accounts (kind, owner_id) VALUES ('issuance', :p), ('redemption', :p)"),
        {"p": partner_id},
    )


async def account_balance(conn: AsyncConnection, *, kind: str, owner_id: uuid.UUID | None) -> int:
    """The balance of any account, summed from its entries."""
    value = (
        await conn.execute(
            text(
                "SELECT coalesce(sum(e.amount), 0) FROM entries e JOIN accounts a ON a.id = e.account_id "
                "WHERE a.kind = :kind AND a.owner_id IS NOT DISTINCT FROM :owner"
            ),
            {"kind": kind, "owner": owner_id},
        )
    ).scalar_one()
    return int(value)


# ---------------------------------------------------------------------------------------------
# Earn


def _earn_statement(with_wallet: bool, with_debt: bool) -> Any:
    legs = ["(:tx, :issuance, -CAST(:points AS bigint), :at, :actor)"]
    if with_wallet:
        legs.append("(:tx, :wallet, CAST(:net AS bigint), :at, :actor)")
    if with_debt:
        legs.append("(:tx, :debt, CAST(:repaid AS bigint), :at, :actor)")
    return text(
        f"""
        WITH t AS (
            INSERT INTO transactions (id, kind, points, partner_id, member_id, ref, amount,
                                      currency, category, effective_at, actor)
            VALUES (:tx, 'earn', :points, :partner, :member, :ref, :amount, :currency,
                    :category, :at, :actor)
        ), e AS (
            INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
            VALUES {", ".join(legs)}
        ), l AS (
            INSERT INTO lots (member_id, wallet_id, issuer_id, earn_tx_id, points, remaining,
                              earned_at, available_at, expires_at, actor)
            VALUES (:member, :wallet, :partner, :tx, :points, :net, :at, :available_at,
                    :expires_at, :actor)
        )
        {_STORE_RESULT}
        """
    )


_EARN = {(w, d): _earn_statement(w, d) for w in (True, False) for d in (True, False)}


def check_earn(
    *,
    idempotency_key: str,
    member_id: uuid.UUID,
    partner_id: uuid.UUID,
    points: Any,
    hold_days: int,
    validity_months: int,
    ref: str | None,
    amount: Decimal | None,
    currency: str | None,
    category: str | None,
    at: datetime | None,
    digest: str | None = None,
) -> tuple[datetime, str]:
    """Refuse a malformed earn before anything is written; returns its effective time and the
    digest that tells a replay from a different earn under the same key: `digest` when the
    caller gives one (the client's request: see `earn_request_digest`), else one of the
    arguments."""
    _check_points(points)
    _check_key(idempotency_key)
    _check_text(ref, "ref")
    _check_text(currency, "currency")
    _check_text(category, "category")
    if not 0 <= hold_days <= 365:
        raise LedgerValidation("hold_days must be between 0 and 365")
    if digest is not None:
        return _at(at), digest
    digest = earn_digest(
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
    return _at(at), digest


def earn_digest(
    *,
    member_id: uuid.UUID,
    partner_id: uuid.UUID,
    points: int,
    ref: str | None,
    amount: Decimal | None,
    currency: str | None,
    category: str | None,
    hold_days: int,
    validity_months: int,
) -> str:
    """What tells a replay of an earn from a different earn under the same key."""
    # The values as request_hash would render them (str), so the encoder never calls back.
    return request_hash(
        "earn",
        {
            "member": str(member_id),
            "partner": str(partner_id),
            "points": points,
            "ref": ref,
            "amount": None if amount is None else str(amount),
            "currency": currency,
            "category": category,
            "hold_days": hold_days,
            "validity_months": validity_months,
        },
    )


def add_months(at: datetime, months: int) -> datetime:
    """`at` plus whole months, the day clamped to the month's last (as dateutil's relativedelta,
    without its generality: this runs on every earn)."""
    years, month0 = divmod(at.month - 1 + months, 12)
    year, month = at.year + years, month0 + 1
    return at.replace(year=year, month=month, day=min(at.day, monthrange(year, month)[1]))


async def earn(
    conn: AsyncConnection,
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
    key_space: str | None = None,
    digest: str | None = None,
) -> EarnResult:
    """Credit `points` issued by `partner_id` to a member as a new lot (two statements).

    `amount`/`currency`/`category` describe the purchase; one earn per (partner, `ref`).
    The key is `key_space`'s (default: the actor's); `digest` is the client's request (default:
    the arguments), so that a replay gets the original result whatever was derived since."""
    at, digest = check_earn(
        idempotency_key=idempotency_key,
        member_id=member_id,
        partner_id=partner_id,
        points=points,
        hold_days=hold_days,
        validity_months=validity_months,
        ref=ref,
        amount=amount,
        currency=currency,
        category=category,
        at=at,
        digest=digest,
    )
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="earn",
        key=idempotency_key,
        digest=digest,
        member_id=member_id,
        partner_id=partner_id,
    )
    if isinstance(claim, dict):
        return EarnResult.from_json(claim, replayed=True)

    repaid = min(points, -claim.debt)  # a member's debt is repaid first from new earnings
    net = points - repaid
    tx_id = uuid7()
    available_at = at + timedelta(days=hold_days)
    expires_at = add_months(at, validity_months)
    result = EarnResult(
        transaction_id=tx_id,
        points=points,
        status="pending" if available_at > at else "available",
        available_at=available_at,
        expires_at=expires_at,
        debt_repaid=repaid,
    )
    params = {
        "tx": tx_id,
        "points": points,
        "net": net,
        "repaid": repaid,
        "partner": partner_id,
        "member": member_id,
        "ref": ref,
        "amount": amount,
        "currency": currency,
        "category": category,
        "at": at,
        "actor": actor,
        "issuance": claim.partner_account_id,
        "wallet": claim.wallet_id,
        "debt": claim.debt_id,
        "available_at": available_at,
        "expires_at": expires_at,
        "result": result.to_json(),
        "claim": claim.claim_id,
    }
    try:
        await conn.execute(_EARN[(net > 0, repaid > 0)], params)
    except (IntegrityError, psycopg.errors.UniqueViolation) as exc:
        # Through SQLAlchemy or straight on the driver (core.db.DriverConnection).
        if "uq_transactions_earn_order" in str(getattr(exc, "orig", exc)):
            raise DuplicateOrder(f"order {ref!r} already earned points") from None
        raise
    return result


# ---------------------------------------------------------------------------------------------
# Authorize / capture / void


# FIFO over spendable lots: earliest expiry first, ties by earning order. Reserves only if the
# whole amount is there (ok = false writes nothing).
_AUTHORIZE = text(
    f"""
    WITH c AS (
        SELECT id, remaining,
               sum(remaining) OVER (ORDER BY expires_at, earned_at, id) AS cum
        FROM lots
        WHERE member_id = :member AND remaining > 0 AND available_at <= :at AND expires_at > :at
    ), ok AS (
        SELECT coalesce(max(cum), 0) AS available, coalesce(max(cum), 0) >= :points AS ok FROM c
    ), take AS (
        SELECT c.id, LEAST(c.remaining, :points - (c.cum - c.remaining)) AS take,
               row_number() OVER (ORDER BY c.cum) AS seq
        FROM c, ok WHERE ok.ok AND c.cum - c.remaining < :points
    ), h AS (
        INSERT INTO holds (id, member_id, wallet_id, partner_id, points, status, order_ref,
                           purchase_amount, currency, created_at, expires_at, actor)
        SELECT :hold, :member, :wallet, :partner, :points, 'active', :ref, :amount, :currency,
               :at, :expires_at, :actor
        FROM ok WHERE ok.ok
        RETURNING id
    ), u AS (
        UPDATE lots l SET remaining = l.remaining - take.take FROM take WHERE l.id = take.id
    ), a AS (
        INSERT INTO hold_allocations (hold_id, seq, lot_id, points)
        SELECT h.id, take.seq, take.id, take.take FROM take, h
    ), r AS (
        {_STORE_RESULT} AND (SELECT ok FROM ok)
    )
    SELECT available, ok FROM ok
    """
)


async def authorize(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    member_id: uuid.UUID,
    partner_id: uuid.UUID,
    points: int,
    ref: str | None = None,
    purchase_amount: Decimal | None = None,
    currency: str | None = None,
    ttl: timedelta = DEFAULT_HOLD_TTL,
    hold_id: uuid.UUID | None = None,
    at: datetime | None = None,
    key_space: str | None = None,
) -> HoldResult:
    """Reserve `points` of a member's available points for `partner_id` until `at + ttl`."""
    _check_points(points)
    _check_key(idempotency_key)
    at = _at(at)
    digest = request_hash(
        "authorize",
        {
            "member": member_id,
            "partner": partner_id,
            "points": points,
            "ref": ref,
            "amount": purchase_amount,
            "currency": currency,
            "ttl": ttl,
        },
    )
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="authorize",
        key=idempotency_key,
        digest=digest,
        member_id=member_id,
        partner_id=partner_id,
        partner_kind=AccountKind.REDEMPTION,
    )
    if isinstance(claim, dict):
        return HoldResult.from_json(claim, replayed=True)
    await _release_stale_holds(conn, [claim.wallet_id], at)
    hold_id = hold_id or uuid7()
    result = HoldResult(hold_id=hold_id, points=points, expires_at=at + ttl)
    row = (
        await conn.execute(
            _AUTHORIZE,
            {
                "member": member_id,
                "partner": partner_id,
                "wallet": claim.wallet_id,
                "points": points,
                "ref": ref,
                "at": at,
                "expires_at": at + ttl,
                "actor": actor,
                "amount": purchase_amount,
                "currency": currency,
                "hold": hold_id,
                "result": result.to_json(),
                "claim": claim.claim_id,
            },
        )
    ).one()
    if not row.ok:
        raise InsufficientPoints(
            f"{points} points requested, {int(row.available)} available",
            available=int(row.available),
        )
    return result


_HOLD_OWNER = text("SELECT member_id, partner_id FROM holds WHERE id = :hold")
_LOCK_HOLD = text(
    "SELECT status, points, captured, returned, expires_at, capture_tx_id, order_ref "
    "FROM holds WHERE id = :hold FOR UPDATE"
)


async def _hold_member(
    conn: AsyncConnection, hold_id: uuid.UUID, partner_id: uuid.UUID
) -> uuid.UUID:
    row = (await conn.execute(_HOLD_OWNER, {"hold": hold_id})).one_or_none()
    # Another partner's hold is indistinguishable from a missing one.
    if row is None or row.partner_id != partner_id:
        raise HoldNotFound(f"hold {hold_id} not found")
    return row.member_id  # type: ignore[no-any-return]


_CAPTURE = text(
    f"""
    WITH al AS (
        SELECT seq, lot_id, points, sum(points) OVER (ORDER BY seq) AS cum
        FROM hold_allocations WHERE hold_id = :hold
    ), cap AS (
        SELECT seq, lot_id, points, GREATEST(0, LEAST(points, :points - (cum - points))) AS cap
        FROM al
    ), ua AS (
        UPDATE hold_allocations a SET captured = cap.cap
        FROM cap WHERE a.hold_id = :hold AND a.seq = cap.seq AND cap.cap > 0
    ), ul AS (
        UPDATE lots l SET remaining = l.remaining + cap.points - cap.cap
        FROM cap WHERE l.id = cap.lot_id AND cap.points > cap.cap
    ), t AS (
        INSERT INTO transactions (id, kind, points, partner_id, member_id, hold_id, ref,
                                  effective_at, actor)
        VALUES (:tx, 'capture', :points, :partner, :member, :hold, :ref, :at, :actor)
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        VALUES (:tx, :wallet, -CAST(:points AS bigint), :at, :actor),
               (:tx, :redemption, CAST(:points AS bigint), :at, :actor)
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT lot_id, :tx, 'capture', -cap, :at, :actor FROM cap WHERE cap > 0
    ), uh AS (
        UPDATE holds SET status = 'captured', captured = :points, capture_tx_id = :tx,
                         resolved_at = :at
        WHERE id = :hold
    )
    {_STORE_RESULT}
    """
)


def capture_digest(hold_id: uuid.UUID, points: int) -> str:
    """A capture request as the partner sent it."""
    return request_hash("capture", {"hold": hold_id, "points": points})


async def capture(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    partner_id: uuid.UUID,
    hold_id: uuid.UUID,
    points: int,
    at: datetime | None = None,
    key_space: str | None = None,
) -> CaptureResult:
    """Post up to the held points to the partner's redemption account; release the rest."""
    _check_points(points)
    _check_key(idempotency_key)
    at = _at(at)
    member_id = await _hold_member(conn, hold_id, partner_id)
    digest = capture_digest(hold_id, points)
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="capture",
        key=idempotency_key,
        digest=digest,
        member_id=member_id,
        partner_id=partner_id,
        partner_kind=AccountKind.REDEMPTION,
    )
    if isinstance(claim, dict):
        return CaptureResult.from_json(claim, replayed=True)
    hold = (await conn.execute(_LOCK_HOLD, {"hold": hold_id})).one()
    if hold.status != HoldStatus.ACTIVE or hold.expires_at <= at:
        raise HoldNotActive(f"hold {hold_id} is {_hold_state(hold, at)}")
    if points > hold.points:
        raise LedgerValidation(f"cannot capture {points} points: the hold is for {hold.points}")
    tx_id = uuid7()
    result = CaptureResult(
        transaction_id=tx_id, hold_id=hold_id, points=points, released=hold.points - points
    )
    await conn.execute(
        _CAPTURE,
        {
            "hold": hold_id,
            "points": points,
            "tx": tx_id,
            "partner": partner_id,
            "member": member_id,
            "ref": hold.order_ref,
            "at": at,
            "actor": actor,
            "wallet": claim.wallet_id,
            "redemption": claim.partner_account_id,
            "result": result.to_json(),
            "claim": claim.claim_id,
        },
    )
    return result


def _hold_state(hold: Any, at: datetime) -> str:
    if hold.status == HoldStatus.ACTIVE and hold.expires_at <= at:
        return HoldStatus.EXPIRED
    return str(hold.status)


_VOID = text(
    f"""
    WITH back AS (
        SELECT lot_id, sum(points) AS pts FROM hold_allocations WHERE hold_id = :hold GROUP BY lot_id
    ), ul AS (
        UPDATE lots l SET remaining = l.remaining + back.pts FROM back WHERE l.id = back.lot_id
    ), uh AS (
        UPDATE holds SET status = 'voided', resolved_at = :at WHERE id = :hold
    )
    {_STORE_RESULT}
    """
)


async def void(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    partner_id: uuid.UUID,
    hold_id: uuid.UUID,
    at: datetime | None = None,
    key_space: str | None = None,
) -> VoidResult:
    """Release a live hold: its points are spendable again, in their original lots."""
    _check_key(idempotency_key)
    at = _at(at)
    member_id = await _hold_member(conn, hold_id, partner_id)
    digest = request_hash("void", {"hold": hold_id})
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="void",
        key=idempotency_key,
        digest=digest,
        member_id=member_id,
    )
    if isinstance(claim, dict):
        return VoidResult.from_json(claim, replayed=True)
    hold = (await conn.execute(_LOCK_HOLD, {"hold": hold_id})).one()
    if hold.status != HoldStatus.ACTIVE or hold.expires_at <= at:
        raise HoldNotActive(f"hold {hold_id} is {_hold_state(hold, at)}")
    result = VoidResult(hold_id=hold_id, released=hold.points)
    await conn.execute(
        _VOID, {"hold": hold_id, "at": at, "result": result.to_json(), "claim": claim.claim_id}
    )
    return result


# ---------------------------------------------------------------------------------------------
# Refunds: reversal of an earn, return of captured points


_LOT_OF_EARN = text(
    "SELECT id, member_id, issuer_id, points, reversed FROM lots WHERE earn_tx_id = :tx"
)

# Take the reversed points from the earn's own lot first, then the member's other pending
# lots, then available ones (FIFO); what is missing becomes the member's debt.
_REVERSE = text(
    """
    WITH c AS (
        SELECT id, remaining,
               sum(remaining) OVER (ORDER BY (id = :lot) DESC, (available_at > :at) DESC,
                                             expires_at, earned_at, id) AS cum
        FROM lots
        WHERE member_id = :member AND remaining > 0 AND expires_at > :at
    ), take AS (
        SELECT id, LEAST(remaining, :points - (cum - remaining)) AS take
        FROM c WHERE cum - remaining < :points
    ), chg AS (
        SELECT coalesce(take.id, o.id) AS id, coalesce(take.take, 0) AS take,
               CASE WHEN coalesce(take.id, o.id) = :lot THEN :points ELSE 0 END AS rev
        FROM take FULL JOIN (SELECT CAST(:lot AS bigint) AS id) o ON o.id = take.id
    ), ul AS (
        UPDATE lots l SET remaining = l.remaining - chg.take, reversed = l.reversed + chg.rev
        FROM chg WHERE l.id = chg.id
    ), tot AS (
        SELECT coalesce(sum(take), 0) AS y FROM take
    ), t AS (
        INSERT INTO transactions (id, kind, points, partner_id, member_id, reverses_id, ref,
                                  effective_at, actor)
        VALUES (:tx, 'reversal', :points, :partner, :member, :earn_tx, :ref, :at, :actor)
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        SELECT :tx, v.account_id, v.amount, :at, :actor
        FROM tot, LATERAL (VALUES (CAST(:issuance AS bigint), CAST(:points AS bigint)),
                                  (:wallet, -tot.y),
                                  (:debt, tot.y - :points)) v(account_id, amount)
        WHERE v.amount <> 0
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT id, :tx, 'reversal', -take, :at, :actor FROM take WHERE take > 0
    ), r AS (
        UPDATE idempotency_keys SET result = jsonb_build_object(
            'transaction_id', CAST(:tx AS text), 'points', CAST(:points AS bigint),
            'from_wallet', tot.y, 'to_debt', :points - tot.y)
        FROM tot WHERE id = :claim
    )
    SELECT y FROM tot
    """
)


async def reverse_earn(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    partner_id: uuid.UUID,
    earn_transaction_id: uuid.UUID,
    points: int,
    ref: str | None = None,
    at: datetime | None = None,
    key_space: str | None = None,
) -> ReversalResult:
    """Take back `points` of an earn (a refund): the wallet never goes negative; the
    shortfall becomes the member's debt, repaid by later earnings."""
    _check_points(points)
    _check_key(idempotency_key)
    at = _at(at)
    lot = (await conn.execute(_LOT_OF_EARN, {"tx": earn_transaction_id})).one_or_none()
    if lot is None or lot.issuer_id != partner_id:
        raise TransactionNotFound(f"earn {earn_transaction_id} not found")
    digest = request_hash("reverse", {"earn": earn_transaction_id, "points": points, "ref": ref})
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="reverse",
        key=idempotency_key,
        digest=digest,
        member_id=lot.member_id,
        partner_id=partner_id,
    )
    if isinstance(claim, dict):
        return ReversalResult.from_json(claim, replayed=True)
    # Read again under the member's lock: a concurrent reversal may have moved it.
    lot = (await conn.execute(_LOT_OF_EARN, {"tx": earn_transaction_id})).one()
    if lot.reversed + points > lot.points:
        raise LedgerValidation(
            f"cannot reverse {points} points: {lot.points - lot.reversed} of this earn remain"
        )
    await _release_stale_holds(conn, [claim.wallet_id], at)
    tx_id = uuid7()
    y = (
        await conn.execute(
            _REVERSE,
            {
                "lot": lot.id,
                "member": lot.member_id,
                "points": points,
                "at": at,
                "tx": tx_id,
                "partner": partner_id,
                "earn_tx": earn_transaction_id,
                "ref": ref,
                "actor": actor,
                "issuance": claim.partner_account_id,
                "wallet": claim.wallet_id,
                "debt": claim.debt_id,
                "claim": claim.claim_id,
            },
        )
    ).scalar_one()
    return ReversalResult(
        transaction_id=tx_id, points=points, from_wallet=int(y), to_debt=points - int(y)
    )


# Return captured points into the lots they came from, last captured first.
_RETURN = text(
    f"""
    WITH al AS (
        SELECT seq, lot_id, captured - returned AS open,
               sum(captured - returned) OVER (ORDER BY seq DESC) AS cum
        FROM hold_allocations WHERE hold_id = :hold AND captured > returned
    ), back AS (
        SELECT seq, lot_id, LEAST(open, :points - (cum - open)) AS back
        FROM al WHERE cum - open < :points
    ), ua AS (
        UPDATE hold_allocations a SET returned = a.returned + back.back
        FROM back WHERE a.hold_id = :hold AND a.seq = back.seq
    ), ul AS (
        UPDATE lots l SET remaining = l.remaining + back.back FROM back WHERE l.id = back.lot_id
    ), t AS (
        INSERT INTO transactions (id, kind, points, partner_id, member_id, hold_id, reverses_id,
                                  ref, effective_at, actor)
        VALUES (:tx, 'return', :points, :partner, :member, :hold, :capture_tx, :ref, :at, :actor)
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        VALUES (:tx, :redemption, -CAST(:points AS bigint), :at, :actor),
               (:tx, :wallet, CAST(:points AS bigint), :at, :actor)
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT lot_id, :tx, 'return', back, :at, :actor FROM back
    ), uh AS (
        UPDATE holds SET returned = returned + :points WHERE id = :hold
    )
    {_STORE_RESULT}
    """
)


async def return_points(
    conn: AsyncConnection,
    *,
    actor: str,
    idempotency_key: str,
    partner_id: uuid.UUID,
    hold_id: uuid.UUID,
    points: int,
    ref: str | None = None,
    at: datetime | None = None,
    key_space: str | None = None,
) -> ReturnResult:
    """Give captured points back to the member (a refund of a purchase paid with points),
    into the lots they came from, with their original expiry."""
    _check_points(points)
    _check_key(idempotency_key)
    at = _at(at)
    member_id = await _hold_member(conn, hold_id, partner_id)
    digest = request_hash("return", {"hold": hold_id, "points": points, "ref": ref})
    claim = await _claim_and_lock(
        conn,
        actor=actor,
        space=key_space,
        op="return",
        key=idempotency_key,
        digest=digest,
        member_id=member_id,
        partner_id=partner_id,
        partner_kind=AccountKind.REDEMPTION,
    )
    if isinstance(claim, dict):
        return ReturnResult.from_json(claim, replayed=True)
    hold = (await conn.execute(_LOCK_HOLD, {"hold": hold_id})).one()
    if hold.status != HoldStatus.CAPTURED:
        raise HoldNotActive(f"hold {hold_id} was not captured (it is {_hold_state(hold, at)})")
    if hold.returned + points > hold.captured:
        raise LedgerValidation(
            f"cannot return {points} points: {hold.captured - hold.returned} captured remain"
        )
    tx_id = uuid7()
    result = ReturnResult(transaction_id=tx_id, hold_id=hold_id, points=points)
    await conn.execute(
        _RETURN,
        {
            "hold": hold_id,
            "points": points,
            "tx": tx_id,
            "partner": partner_id,
            "member": member_id,
            "capture_tx": hold.capture_tx_id,
            "ref": ref,
            "at": at,
            "actor": actor,
            "redemption": claim.partner_account_id,
            "wallet": claim.wallet_id,
            "result": result.to_json(),
            "claim": claim.claim_id,
        },
    )
    return result


# ---------------------------------------------------------------------------------------------
# Jobs: hold expiry, points expiry


def _not_in_future(at: datetime | None, now: datetime | None) -> datetime:
    """`at` (default: now), refused when later than `now` (default: the clock)."""
    # A job dated in the future would write postings effective after the present: balances
    # would drop at once while every "as of now" read (the points liability) puts them back.
    now = _at(now)
    at = now if at is None else _at(at)
    if at > now:
        raise LedgerValidation(
            f"cannot expire as of {at.isoformat()}: it is in the future (now is "
            f"{now.isoformat()}); points and holds expire only up to the present"
        )
    return at


async def release_expired_holds(
    engine: AsyncEngine,
    *,
    at: datetime | None = None,
    now: datetime | None = None,
    batch_size: int = 500,
) -> int:
    """Expire every hold whose time ran out by `at` (not after `now`, default the clock);
    re-runnable; returns how many were released."""
    at = _not_in_future(at, now)
    released = 0
    while True:
        async with engine.begin() as conn:
            wallets = (
                (
                    await conn.execute(
                        text(
                            "SELECT DISTINCT wallet_id FROM holds "
                            "WHERE status = 'active' AND expires_at <= :at ORDER BY wallet_id LIMIT :n"
                        ),
                        {"at": at, "n": batch_size},
                    )
                )
                .scalars()
                .all()
            )
            if not wallets:
                return released
            await _lock_wallets(conn, list(wallets))
            n = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM holds WHERE wallet_id = ANY(:w) "
                        "AND status = 'active' AND expires_at <= :at"
                    ),
                    {"w": list(wallets), "at": at},
                )
            ).scalar_one()
            await _release_stale_holds(conn, list(wallets), at)
            released += int(n)


async def _lock_wallets(conn: AsyncConnection, wallet_ids: list[int]) -> None:
    # Ascending id order: the same order every single-member operation uses.
    await conn.execute(
        text("SELECT id FROM accounts WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"),
        {"ids": wallet_ids},
    )


_EXPIRE = text(
    """
    WITH x AS (
        UPDATE lots l SET remaining = 0
        FROM (SELECT id, remaining FROM lots
              WHERE wallet_id = ANY(:wallets) AND expires_at <= :at AND remaining > 0) o
        WHERE l.id = o.id
        RETURNING l.id, l.wallet_id, o.remaining
    ), tot AS (
        SELECT count(*) AS lots, coalesce(sum(remaining), 0) AS points FROM x
    ), t AS (
        INSERT INTO transactions (id, kind, points, effective_at, actor)
        SELECT :tx, 'expiry', tot.points, :at, :actor FROM tot WHERE tot.lots > 0
    ), e AS (
        INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
        SELECT :tx, wallet_id, -sum(remaining), :at, :actor FROM x GROUP BY wallet_id
        UNION ALL
        SELECT :tx, :breakage, tot.points, :at, :actor FROM tot WHERE tot.lots > 0
    ), lp AS (
        INSERT INTO lot_postings (lot_id, transaction_id, kind, points, effective_at, actor)
        SELECT id, :tx, 'expiry', -remaining, :at, :actor FROM x
    )
    SELECT lots, points FROM tot
    """
)


# Wallets with something to expire: what is left in expired lots, and what holds that ran out
# still reserve from expired lots (released first, so that it expires too).
_EXPIRING_WALLETS = """
    SELECT wallet_id FROM lots WHERE expires_at <= :at AND remaining > 0
    UNION
    SELECT h.wallet_id FROM holds h
    JOIN hold_allocations a ON a.hold_id = h.id
    JOIN lots l ON l.id = a.lot_id
    WHERE h.status = 'active' AND h.expires_at <= :at AND l.expires_at <= :at
"""


async def expire_points(
    engine: AsyncEngine,
    *,
    at: datetime | None = None,
    now: datetime | None = None,
    actor: str = "system:expiry",
    batch_size: int = 500,
    progress: Any = None,
) -> ExpiryReport:
    """Move what is left of every lot expired by `at` to breakage, a batch of members per
    transaction. Safe to re-run: an expired lot is left at zero and is not taken twice.
    `at` later than `now` (default: the clock) is refused: expiry is never dated in the future.
    `progress(done_members, total_members)` is called after each batch."""
    at = _not_in_future(at, now)
    async with engine.connect() as conn:
        total = (
            await conn.execute(
                text(f"SELECT count(*) FROM ({_EXPIRING_WALLETS}) w"),
                {"at": at},
            )
        ).scalar_one()
    members = lots = points = batches = 0
    while True:
        async with engine.begin() as conn:
            wallets = list(
                (
                    await conn.execute(
                        text(
                            f"SELECT wallet_id FROM ({_EXPIRING_WALLETS}) w "
                            "ORDER BY wallet_id LIMIT :n"
                        ),
                        {"at": at, "n": batch_size},
                    )
                ).scalars()
            )
            if not wallets:
                break
            await _lock_wallets(conn, wallets)
            # Holds that ran out give their points back first, so those expire too.
            await _release_stale_holds(conn, wallets, at)
            breakage = (
                await conn.execute(text("SELECT id FROM accounts WHERE kind = 'breakage'"))
            ).scalar_one()
            row = (
                await conn.execute(
                    _EXPIRE,
                    {
                        "wallets": wallets,
                        "at": at,
                        "tx": uuid7(),
                        "actor": actor,
                        "breakage": breakage,
                    },
                )
            ).one()
        members += len(wallets)
        lots += int(row.lots)
        points += int(row.points)
        batches += 1
        if progress is not None:
            progress(members, max(int(total), members))
    return ExpiryReport(members=members, lots=lots, points=points, batches=batches)


# ---------------------------------------------------------------------------------------------
# Reads


_BALANCE = text(
    """
    WITH stale AS (
        SELECT a.lot_id, sum(a.points) AS pts
        FROM holds h JOIN hold_allocations a ON a.hold_id = h.id
        WHERE h.member_id = :member AND h.status = 'active' AND h.expires_at <= :at
        GROUP BY a.lot_id
    ), eff AS (
        SELECT l.available_at, l.expires_at, l.remaining + coalesce(stale.pts, 0) AS pts
        FROM lots l LEFT JOIN stale ON stale.lot_id = l.id
        WHERE l.member_id = :member AND (l.remaining > 0 OR stale.pts > 0) AND l.expires_at > :at
    )
    SELECT
        (SELECT balance FROM accounts WHERE kind = 'wallet' AND owner_id = :member) AS wallet,
        (SELECT balance FROM accounts WHERE kind = 'debt' AND owner_id = :member) AS debt,
        coalesce((SELECT sum(pts) FROM eff WHERE available_at <= :at), 0) AS available,
        coalesce((SELECT sum(pts) FROM eff WHERE available_at > :at), 0) AS pending,
        coalesce((SELECT sum(pts) FROM eff WHERE expires_at <= :horizon), 0) AS expiring,
        coalesce((SELECT sum(points) FROM holds
                  WHERE member_id = :member AND status = 'active' AND expires_at > :at), 0)
            AS on_hold
    """
)


async def balance(
    conn: AsyncConnection,
    *,
    member_id: uuid.UUID,
    at: datetime | None = None,
    expiring_within: timedelta = timedelta(days=30),
) -> Balance:
    """A member's available, pending, on-hold and soon-expiring points (one statement)."""
    at = _at(at)
    row = (
        await conn.execute(
            _BALANCE, {"member": member_id, "at": at, "horizon": at + expiring_within}
        )
    ).one()
    if row.wallet is None:
        raise MemberNotFound(f"member {member_id} not found")
    return Balance(
        wallet=int(row.wallet),
        available=int(row.available),
        pending=int(row.pending),
        on_hold=int(row.on_hold),
        expiring=int(row.expiring),
        debt=-int(row.debt),
    )


@dataclass(frozen=True)
class HistoryItem:
    """One movement on a member's wallet or debt."""

    entry_id: int
    transaction_id: uuid.UUID
    kind: str
    account: str
    amount: int
    partner_id: uuid.UUID | None
    ref: str | None
    effective_at: datetime


async def history(
    conn: AsyncConnection, *, member_id: uuid.UUID, limit: int = 20, before: int | None = None
) -> list[HistoryItem]:
    """A member's movements, newest first, keyset-paginated by entry id."""
    rows = await conn.execute(
        text(
            """
            SELECT e.id AS entry_id, t.id AS transaction_id, t.kind, a.kind AS account, e.amount,
                   t.partner_id, t.ref, e.effective_at
            FROM accounts a
            JOIN entries e ON e.account_id = a.id
            JOIN transactions t ON t.id = e.transaction_id
            WHERE a.owner_id = :member AND a.kind IN ('wallet', 'debt')
              AND (CAST(:before AS bigint) IS NULL OR e.id < :before)
            ORDER BY e.id DESC
            LIMIT :limit
            """
        ),
        {"member": member_id, "before": before, "limit": max(1, min(limit, 500))},
    )
    return [HistoryItem(**r._mapping) for r in rows]


@dataclass(frozen=True)
class HoldRecord:
    """A hold as stored."""

    id: uuid.UUID
    member_id: uuid.UUID
    partner_id: uuid.UUID
    points: int
    captured: int
    returned: int
    status: str
    order_ref: str | None
    expires_at: datetime


async def get_hold(conn: AsyncConnection, *, hold_id: uuid.UUID) -> HoldRecord:
    """One hold; an active hold whose time ran out reads as expired."""
    row = (
        await conn.execute(
            text(
                "SELECT id, member_id, partner_id, points, captured, returned, status, order_ref, "
                "expires_at FROM holds WHERE id = :h"
            ),
            {"h": hold_id},
        )
    ).one_or_none()
    if row is None:
        raise HoldNotFound(f"hold {hold_id} not found")
    record = HoldRecord(*row)
    if record.status == HoldStatus.ACTIVE and record.expires_at <= utcnow():
        record = HoldRecord(**{**asdict(record), "status": HoldStatus.EXPIRED})
    return record
