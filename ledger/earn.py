"""The earn: points credited to a member as a new lot."""

from __future__ import annotations

import functools
import json
import uuid
from calendar import monthrange
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.frozen import fast_init
from core.ids import uuid7
from core.text import storable
from ledger import outbox
from ledger.claims import (
    _STORE_RESULT,
    MAX_KEY_LENGTH,
    _at,
    _check_key,
    _check_points,
    _check_text,
    _claim_and_lock,
    request_hash,
)
from ledger.errors import (
    DuplicateOrder,
    LedgerValidation,
)
from ledger.results import BreakdownLine, EarnResult

DEFAULT_VALIDITY_MONTHS = 36


# An earn's breakdown (`:lines`, a JSON array of `lines_json`'s), in the earn's statement
# (`ledger.batch` has its own for a batch).
_LINES = """
        , bl AS (
            INSERT INTO earn_breakdowns (transaction_id, lines)
            VALUES (:tx, CAST(:lines AS jsonb))
        )"""


def lines_json(lines: tuple[BreakdownLine, ...]) -> list[list[Any]] | None:
    """The breakdown to store for an earn (`earn_breakdowns`), JSON-ready: one array per line,
    `[source, points, offer id or null, funded by]`, in order; none for an earn of its BASE line
    alone (it reads back as one BASE line of its points: `ledger.reads.earn_lines`)."""
    if len(lines) <= 1:
        return None
    return [
        [
            line.source,
            line.points,
            None if line.offer_id is None else str(line.offer_id),
            line.funded_by,
        ]
        for line in lines
    ]


# The operator's account that funds the points it issues (coalition-wide offer lines, its
# bonuses): one per ledger, found in the statement that needs it.
PROMOTIONS_ACCOUNT = "(SELECT id FROM accounts WHERE kind = 'promotions' AND owner_id IS NULL)"


# The event an earn's (a bonus's) statement writes for the partner's webhooks.
_EVENT_CTES = {"earn": outbox.EARN_EVENT_CTE, "bonus": outbox.BONUS_EVENT_CTE}


@functools.cache
def _earn_statement(
    with_wallet: bool,
    with_debt: bool,
    kind: str = "earn",
    with_lines: bool = False,
    issuer_share: bool = True,
    operator_share: bool = False,
) -> Any:
    """The earn (or the bonus, `ledger.bonuses`) in one statement: its transaction, its
    entries (the issuing account -issued, `promotions` -operator's, wallet +net, debt +repaid:
    zero legs left out), its lots (the issuer's, then the operator's: empty ones left out) and
    (`with_lines`) its breakdown's lines.

    `:issued` of the points come from `:issuance` into a lot of `:partner` (a bonus of the
    operator's: its `promotions` account, no partner), `:operator_points` of them (coalition-wide
    offer lines) from `promotions` into a lot with no issuer; `:issued_left` and
    `:operator_left` are what each lot keeps after the member's debt was repaid. An earn's
    `earn.recorded` event (a partner's bonus's `bonus.awarded`: `ledger.outbox`) is written by
    the same statement."""
    legs = []
    lots = []
    lot = "(:member, :wallet, {issuer}, :tx, {points}, {left}, :at, :available_at, :expires_at, :actor)"
    if issuer_share:
        legs.append("(:tx, :issuance, -CAST(:issued AS bigint), :at, :actor)")
        lots.append(lot.format(issuer=":partner", points=":issued", left=":issued_left"))
    if operator_share:
        legs.append(f"(:tx, {PROMOTIONS_ACCOUNT}, -CAST(:operator_points AS bigint), :at, :actor)")
        lots.append(
            lot.format(
                issuer="CAST(NULL AS uuid)", points=":operator_points", left=":operator_left"
            )
        )
    if with_wallet:
        legs.append("(:tx, :wallet, CAST(:net AS bigint), :at, :actor)")
    if with_debt:
        legs.append("(:tx, :debt, CAST(:repaid AS bigint), :at, :actor)")
    return text(
        f"""
        WITH t AS (
            INSERT INTO transactions (id, kind, points, operator_points, partner_id, member_id,
                                      ref, amount, currency, category, effective_at, actor)
            VALUES (:tx, '{kind}', :points, :operator_points, :partner, :member, :ref, :amount,
                    :currency, :category, :at, :actor)
        ), e AS (
            INSERT INTO entries (transaction_id, account_id, amount, effective_at, actor)
            VALUES {", ".join(legs)}
        ), l AS (
            INSERT INTO lots (member_id, wallet_id, issuer_id, earn_tx_id, points, remaining,
                              earned_at, available_at, expires_at, actor)
            VALUES {", ".join(lots)}
        ){_LINES if with_lines else ""}{_EVENT_CTES.get(kind, "")}
        {_STORE_RESULT}
        """
    )


def operator_points(lines: tuple[BreakdownLine, ...]) -> int:
    """Of an earn's points, those the operator issues: its coalition-wide offer lines."""
    points = 0
    for line in lines:  # a loop, not sum() over a generator: it runs on every earn
        if line.funded_by == "OPERATOR":
            points += line.points
    return points


def split_debt(issued: int, operator: int, repaid: int) -> tuple[int, int]:
    """What the issuer's lot and the operator's keep of `issued` and `operator` points once
    `repaid` of them repaid the member's debt: the issuer's points repay it first."""
    from_issued = min(repaid, issued)
    return issued - from_issued, operator - (repaid - from_issued)


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Work of a layer above the ledger that commits with an earn (a tier upgrade:
    `members.tiers.upgrade_follow_up`), so that it costs no transaction of its own.

    - In the group commit's statement (`ledger.batch`): `sql`, CTEs appended to the statement
      that read `w` (the batch's written earns; `w.after` is `params` as JSON, NULL for an earn
      without a follow-up) and define `follow_up(i int, value text)`. A batch holds earns of one
      `sql` at most.
    - On the single path (`earn`): `single(conn, request, result)`, in the earn's unit of work
      after it is written (not on a replay).

    What either gives for the earn comes back as `EarnResult.follow_up`."""

    sql: str
    params: Mapping[str, Any]
    single: Callable[[Any, EarnRequest, EarnResult], Awaitable[str | None]]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EarnRequest:
    """One earn, as every earn path takes it (`earn`, `EarnBatcher.earn`, the use case).

    `amount`/`currency`/`category` describe the purchase; one earn per (partner, `ref`). The
    key is `key_space`'s (default: the actor's); `digest` is the client's request (default: the
    fields, see `earn_digest`), so that a replay gets the original result whatever was derived
    since. Built on every earn: no validation here (`check_earn` does it)."""

    actor: str
    idempotency_key: str
    member_id: uuid.UUID
    partner_id: uuid.UUID
    points: int
    hold_days: int = 0
    validity_months: int = DEFAULT_VALIDITY_MONTHS
    ref: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    category: str | None = None
    at: datetime | None = None
    key_space: str | None = None
    digest: str | None = None
    # The breakdown (`catalog.breakdown`), summing to `points`; stored when it has more than
    # its BASE line. Empty: one BASE line of `points`. Its OPERATOR-funded lines (coalition-wide
    # offers) are issued by the operator: a lot of their own, from `promotions`.
    lines: tuple[BreakdownLine, ...] = ()
    follow_up: FollowUp | None = None


_LINE_KINDS = frozenset(
    {("BASE", False), ("TIER", False), ("OFFER", True)}  # (source, names an offer)
)


def _check_lines(lines: tuple[BreakdownLine, ...], points: int) -> None:
    """A breakdown the ledger stores (`earn_breakdowns`, one JSON array: no per-line column
    constraint checks it there): known sources and funders, an offer named by OFFER lines
    alone, no line below zero, summing to the earn's points."""
    total = 0
    for line in lines:
        if (
            (line.source, line.offer_id is not None) not in _LINE_KINDS
            or line.funded_by not in ("PARTNER", "OPERATOR")
            or type(line.points) is not int
            or line.points < 0
        ):
            raise LedgerValidation(f"malformed breakdown line {line!r}")
        total += line.points
    if total != points:
        raise LedgerValidation("the breakdown's lines must sum to the earn's points")


def check_earn(request: EarnRequest) -> tuple[datetime, str]:
    """Refuse a malformed earn before anything is written; returns its effective time and the
    digest that tells a replay from a different earn under the same key: the request's
    `digest` when it has one (the client's request: see `earn_request_digest`), else one of its
    fields."""
    _check_points(request.points)
    key, ref, currency, category = (
        request.idempotency_key,
        request.ref,
        request.currency,
        request.category,
    )
    # The texts checked in one pass when all of them can be stored (the usual case: no NUL, no
    # surrogate in any of them is none in their concatenation), one by one otherwise, for the
    # error naming the first that cannot.
    if (
        type(key) is not str
        or not storable(f"{key}{ref or ''}{currency or ''}{category or ''}")
        or not key.strip()
        or len(key) > MAX_KEY_LENGTH
    ):
        _check_key(key)
        _check_text(ref, "ref")
        _check_text(currency, "currency")
        _check_text(category, "category")
    if not 0 <= request.hold_days <= 365:
        raise LedgerValidation("hold_days must be between 0 and 365")
    if request.lines:
        _check_lines(request.lines, request.points)
    if request.digest is not None:
        return _at(request.at), request.digest
    digest = earn_digest(
        member_id=request.member_id,
        partner_id=request.partner_id,
        points=request.points,
        ref=request.ref,
        amount=request.amount,
        currency=request.currency,
        category=request.category,
        hold_days=request.hold_days,
        validity_months=request.validity_months,
        operator_points=operator_points(request.lines),
    )
    return _at(request.at), digest


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
    operator_points: int = 0,
) -> str:
    """What tells a replay of an earn from a different earn under the same key."""
    # The values as request_hash would render them (str), so the encoder never calls back.
    payload: dict[str, Any] = {
        "member": str(member_id),
        "partner": str(partner_id),
        "points": points,
        "ref": ref,
        "amount": None if amount is None else str(amount),
        "currency": currency,
        "category": category,
        "hold_days": hold_days,
        "validity_months": validity_months,
    }
    if operator_points:  # absent otherwise: the digests of earns recorded before 0019 hold
        payload["operator_points"] = operator_points
    return request_hash("earn", payload)


def add_months(at: datetime, months: int) -> datetime:
    """`at` plus whole months, the day clamped to the month's last (as dateutil's relativedelta,
    without its generality: this runs on every earn)."""
    years, month0 = divmod(at.month - 1 + months, 12)
    year, month = at.year + years, month0 + 1
    return at.replace(year=year, month=month, day=min(at.day, monthrange(year, month)[1]))


async def earn(
    conn: AsyncConnection, request: EarnRequest | None = None, /, **fields: Any
) -> EarnResult:
    """Credit the request's points to a member as new lots (two statements): those of its
    partner's lines issued by the partner, those of coalition-wide offer lines by the operator
    (`_earn_statement`). Takes an `EarnRequest`, or its fields as keywords."""
    if request is None:
        request = EarnRequest(**fields)
    at, digest = check_earn(request)
    points, ref = request.points, request.ref
    claim = await _claim_and_lock(
        conn,
        actor=request.actor,
        space=request.key_space,
        op="earn",
        key=request.idempotency_key,
        digest=digest,
        member_id=request.member_id,
        partner_id=request.partner_id,
    )
    if isinstance(claim, dict):
        return EarnResult.from_json(claim, replayed=True)

    repaid = min(points, -claim.debt)  # a member's debt is repaid first from new earnings
    net = points - repaid
    operator = operator_points(request.lines)
    issued = points - operator
    issued_left, operator_left = split_debt(issued, operator, repaid)
    tx_id = uuid7()
    available_at = at + timedelta(days=request.hold_days)
    expires_at = add_months(at, request.validity_months)
    result = EarnResult(
        transaction_id=tx_id,
        points=points,
        status="pending" if available_at > at else "available",
        available_at=available_at,
        expires_at=expires_at,
        debt_repaid=repaid,
        lines=request.lines,
    )
    stored_lines = lines_json(request.lines)
    params = {
        "tx": tx_id,
        "points": points,
        "issued": issued,
        "issued_left": issued_left,
        "operator_points": operator,
        "operator_left": operator_left,
        "net": net,
        "repaid": repaid,
        "partner": request.partner_id,
        "member": request.member_id,
        "ref": ref,
        "amount": request.amount,
        "currency": request.currency,
        "category": request.category,
        "at": at,
        "actor": request.actor,
        "issuance": claim.partner_account_id,
        "wallet": claim.wallet_id,
        "debt": claim.debt_id,
        "available_at": available_at,
        "expires_at": expires_at,
        "result": result.to_json(),
        "claim": claim.claim_id,
        "lines": None if stored_lines is None else json.dumps(stored_lines),
    }
    try:
        statement = _earn_statement(
            net > 0,
            repaid > 0,
            with_lines=stored_lines is not None,
            issuer_share=issued > 0,
            operator_share=operator > 0,
        )
        await conn.execute(statement, params)
    except (IntegrityError, psycopg.errors.UniqueViolation) as exc:
        # Through SQLAlchemy or straight on the driver (core.db.DriverConnection).
        if "uq_transactions_earn_order" in str(getattr(exc, "orig", exc)):
            raise DuplicateOrder(f"order {ref!r} already earned points") from None
        raise
    if request.follow_up is not None:
        value = await request.follow_up.single(conn, replace(request, at=at), result)
        if value is not None:
            result = replace(result, follow_up=value)
    return result
